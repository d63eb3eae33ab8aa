"""A tiny chat model that always answers the same words and then ends its turn, for the chat, serve and export tests.

Training one takes too long for a test, so its weights are set by hand: a bigram model. One-hot token embeddings,
no positions, no attention output; the block's MLP maps the one-hot state of token i to a large value at the token
that follows it in `REPLY` (the head is tied to the embeddings, so that value is the next token's logit). After a
prompt (which ends `<|im_start|>assistant\n`) greedy decoding writes `REPLY` and then `<|im_end|>`; decoding that does
not stop there (a base model's) goes on writing `\nhi.<|im_end|>` again.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hellogpt.checkpoints.format import Checkpoint, save_checkpoint
from hellogpt.config.schema import RunConfig
from hellogpt.data.chat_template import CHATML_TEMPLATE, TURN_END, chat_tokenizer
from hellogpt.data.tokenizer import CharTokenizer, Tokenizer
from hellogpt.model.gpt import GPT, GPTConfig

CHARS = "\n !',.?abcdefghijklmnopqrstuvwxyz<>|_"
REPLY = "hi."
# How strongly the MLP writes the next token, and the final norm's gain: the chain's logit leads by tens.
NEXT_TOKEN_WEIGHT = 10.0
FINAL_NORM_GAIN = 10.0


def chat_char_tokenizer() -> Tokenizer:
    return chat_tokenizer(CharTokenizer(CHARS))


def bigram_chat_model(tokenizer: Tokenizer, reply: str = REPLY, block_size: int = 64) -> GPT:
    """A GPT whose greedy answer to any chat prompt is `reply` (no character twice) followed by `<|im_end|>`."""
    vocab_size = tokenizer.vocab_size
    config = GPTConfig(
        n_layer=1, n_head=1, n_embd=vocab_size, block_size=block_size, vocab_size=vocab_size, bias=True, dropout=0.0,
        arch="gpt2",
    )
    model = GPT(config)
    end = tokenizer.special_tokens[TURN_END]
    newline = tokenizer.encode("\n")[0]
    chain = [newline, *tokenizer.encode(reply), end, newline]
    block = model.transformer.h[0]
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.transformer.wte.weight.copy_(torch.eye(vocab_size))  # also the head (tied)
        for norm in (block.ln_1, block.ln_2, model.transformer.ln_f):
            norm.weight.fill_(1.0)
        model.transformer.ln_f.weight.fill_(FINAL_NORM_GAIN)
        block.mlp.c_fc.weight[:vocab_size].copy_(torch.eye(vocab_size))  # hidden unit i: "the token is i"
        for current, following in zip(chain, chain[1:]):
            block.mlp.c_proj.weight[following, current] = NEXT_TOKEN_WEIGHT
    return model.eval()


def write_chat_checkpoint(path: Path, **sample: object) -> Path:
    """A chat model's checkpoint (the bigram model, char tokenizer with the markers, `chat_template` set)."""
    tokenizer = chat_char_tokenizer()
    return save_chat_checkpoint(path, bigram_chat_model(tokenizer), tokenizer, **sample)


def save_chat_checkpoint(path: Path, model: GPT, tokenizer: Tokenizer, **sample: object) -> Path:
    """`model` saved as a chat model: its tokenizer's description and the ChatML template, greedy sampling."""
    config = RunConfig().model_dump(mode="json")
    config["sample"].update({"temperature": 0.0, "max_new_tokens": 20, **sample})
    save_checkpoint(path, Checkpoint(
        model_args=model.config, model=model.state_dict(), step=10, config=config,
        tokenizer=tokenizer.description(), origin={"kind": "scratch"}, run_name="tiny_chat",
        chat_template=CHATML_TEMPLATE,
    ))
    return path
