"""Defaults the schema declares that code outside the config layer needs too, without importing pydantic
(`prepare` runs them in every worker process and on every start of the command)."""

DEFAULT_TOKENIZER = "gpt2"
DEFAULT_VAL_FRACTION = 0.1
