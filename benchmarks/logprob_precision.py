"""How far a bf16 or int8 server's log-probabilities (the API's `logprobs`, `echo`) are from fp32 ones.

A small char GPT is trained briefly on Tiny Shakespeare (fp32), then held-out prompts are scored by
`hellogpt.decode.logprobs.score_prompt`, as the server scores them, with the model in fp32, bf16 and int8
(`--quantize int8`). docs/serving.md#the-api holds the table.

    python benchmarks/logprob_precision.py [--steps 150] [--prompts 20] [--text tests/fixtures/tinyshakespeare.txt]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from hellogpt.data.tokenizer import CharTokenizer
from hellogpt.decode.logprobs import score_prompt
from hellogpt.model.gpt import GPT, GPTConfig
from hellogpt.model.quantize import quantize_int8

BLOCK_SIZE = 128
BATCH_SIZE = 8
LEARNING_RATE = 2e-3


def train(text: str, tokenizer: CharTokenizer, steps: int) -> GPT:
    """A 4-layer, 128-wide model after `steps` AdamW steps on the text's first 90%."""
    torch.manual_seed(0)
    data = torch.tensor(tokenizer.encode(text[: int(len(text) * 0.9)]))
    config = GPTConfig(
        n_layer=4, n_head=4, n_embd=128, block_size=BLOCK_SIZE, vocab_size=tokenizer.vocab_size, dropout=0.0,
        bias=True, arch="gpt2",
    )
    model = GPT(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    for _ in range(steps):
        starts = torch.randint(0, len(data) - BLOCK_SIZE - 1, (BATCH_SIZE,))
        windows = torch.stack([data[start : start + BLOCK_SIZE + 1] for start in starts])
        _, loss = model(windows[:, :-1], windows[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def scores(model: GPT, prompts: list[list[int]], vocab_size: int) -> torch.Tensor:
    return torch.tensor([[entry.logprob for entry in score_prompt(model, prompt, 0, vocab_size)[1:]] for prompt in prompts])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--text", type=Path, default=Path(__file__).resolve().parents[1] / "tests/fixtures/tinyshakespeare.txt")
    arguments = parser.parse_args()
    text = arguments.text.read_text(encoding="utf-8")
    tokenizer = CharTokenizer.from_texts([text])
    model = train(text, tokenizer, arguments.steps)
    held_out = tokenizer.encode(text[int(len(text) * 0.9) :])
    prompts = [held_out[start : start + BLOCK_SIZE] for start in range(0, BLOCK_SIZE * arguments.prompts, BLOCK_SIZE)]
    reference = scores(model, prompts, tokenizer.vocab_size)
    print(f"fp32 mean log-probability {reference.mean():.3f} over {reference.numel()} tokens")
    for name, variant in (("bf16", copy.deepcopy(model).to(torch.bfloat16)), ("int8", quantize_int8(copy.deepcopy(model)))):
        difference = scores(variant, prompts, tokenizer.vocab_size) - reference
        per_token, per_prompt = difference.abs(), difference.sum(dim=1).abs()
        print(
            f"{name}: per token mean {per_token.mean():.2e} max {per_token.max():.2e}; "
            f"per prompt mean {per_prompt.mean():.2e} max {per_prompt.max():.2e} (nats)"
        )


if __name__ == "__main__":
    main()
