"""GPT-2's tokenizer facts, in one place for the data layer (the tokenizer) and the model layer (the export).

Constants only and no imports, so that either layer may use it without depending on the other.
"""

GPT2_VOCAB_SIZE = 50257
GPT2_END_OF_TEXT = "<|endoftext|>"
# The end-of-text token is the last id of GPT-2's vocabulary.
GPT2_END_OF_TEXT_ID = GPT2_VOCAB_SIZE - 1
