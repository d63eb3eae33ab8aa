"""Chat tuning of the quick-start model on builtin:pydoc-chat: does it learn to answer in turns, and how fast?

On the built-in set's validation conversations, before tuning (the quick-start model, its marker rows grown as
`tune` grows them) and after (`hellogpt tune --from quickstart --profile chat-tune`):
  - the assistant-token loss (mean cross-entropy over the reply tokens and their <|im_end|>, nats);
  - the share of greedy replies to each conversation's first question that end with <|im_end|> within --max-tokens;
  - the share of replies that write a user turn themselves (a turn marker, or a `user` line as a transcript has);
and the tuning's tokens/s. Then padded rows (what training does) against packed rows with a document mask (the
alternative), in real, non-padding tokens per second of forward and backward.

    python benchmarks/chat_tuning.py [--base checkpoints/quickstart.pt] [--base-steps 800] [--tune-steps 400]
                                     [--max-tokens 96] [--work DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from hellogpt.checkpoints.format import gpt_config_from_args, load_checkpoint  # noqa: E402
from hellogpt.checkpoints.loading import model_from_checkpoint  # noqa: E402
from hellogpt.checkpoints.weights import gpt_from_state_dict  # noqa: E402
from hellogpt.config.layers import resolve_config  # noqa: E402
from hellogpt.data.chat_prepare import _validation_indices  # noqa: E402
from hellogpt.data.chat_template import TURN_START, render_prompt, turn_end_id  # noqa: E402
from hellogpt.data.chats import read_conversations  # noqa: E402
from hellogpt.data.loader import TokenDataset, open_dataset  # noqa: E402
from hellogpt.data.prepare import prepare_dataset  # noqa: E402
from hellogpt.data.sources import collect_documents  # noqa: E402
from hellogpt.decode.stream import stream_tokens  # noqa: E402
from hellogpt.model import base as attention_module  # noqa: E402
from hellogpt.train.events import StepEvent  # noqa: E402
from hellogpt.train.loop import train  # noqa: E402
from hellogpt.train.tune import load_tuning_source, tune_defaults  # noqa: E402
from hellogpt.train.vocabulary import with_vocabulary_rows  # noqa: E402

CHAT_SET = "builtin:pydoc-chat"
BLOCK_SIZE = 128
# A user turn written by the model: a turn marker of its own, or a transcript's `user` line.
USER_TURN = re.compile(r"(^|\n)\s*user\s*[:\n]")
THROUGHPUT_BATCH = 32
THROUGHPUT_STEPS = 10


def hellogpt(work: Path, *arguments: str) -> str:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "NO_COLOR": "1"}
    command = [sys.executable, "-m", "hellogpt", *arguments]
    result = subprocess.run(command, cwd=work, env=environment, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(arguments[:3])} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout


def assistant_loss(model: torch.nn.Module, dataset: TokenDataset) -> float:
    """Mean cross-entropy over every trained target of the val split's rows (each row once)."""
    starts, ends = dataset._row_bounds("val")
    tokens, mask = dataset.tokens("val"), dataset._mask("val")
    total, count = 0.0, 0
    with torch.no_grad():
        for start, end in zip(starts, ends):
            ids = torch.from_numpy(tokens[start:end].astype(np.int64))[None]
            trained = torch.from_numpy(mask[start + 1 : end].astype(bool))[None]
            targets = torch.where(trained, ids[:, 1:], torch.full_like(ids[:, 1:], -1))
            _, loss = model(ids[:, :-1], targets)
            total += float(loss) * int(trained.sum())
            count += int(trained.sum())
    return total / count


def first_questions(val_fraction: float) -> list[list[dict[str, Any]]]:
    """The messages up to the first reply of each validation conversation (the split `prepare` made)."""
    conversations = [c for d in collect_documents([CHAT_SET]) for c in read_conversations(d)]
    val = sorted(_validation_indices(len(conversations), val_fraction))
    prompts = []
    for index in val:
        messages = list(conversations[index].messages)
        first_reply = next(position for position, m in enumerate(messages) if m["role"] == "assistant")
        prompts.append(messages[:first_reply])
    return prompts


def replies(model: torch.nn.Module, dataset: TokenDataset, prompts: list, max_tokens: int) -> dict[str, float]:
    """Greedy replies: the share ending with <|im_end|> within max_tokens, and the share writing a user turn."""
    tokenizer = dataset.tokenizer
    end_id = turn_end_id(tokenizer)
    ended = wrote_user = 0
    for messages in prompts:
        produced = list(stream_tokens(model, render_prompt(messages, tokenizer), max_new_tokens=max_tokens,
                                      temperature=0.0, vocab_size=tokenizer.vocab_size, eot_id=end_id))
        text = tokenizer.decode(produced)
        ended += len(produced) < max_tokens
        wrote_user += TURN_START in text or bool(USER_TURN.search(text))
    return {"ended": ended / len(prompts), "user_turns": wrote_user / len(prompts)}


def throughput(model: torch.nn.Module, dataset: TokenDataset, packed: bool) -> float:
    """Real (non-padding) tokens per second of forward + backward on batches of train rows: padded one row per line,
    or packed whole rows per line with a block-diagonal causal mask (so no row attends into another)."""
    rng = np.random.default_rng(0)
    starts, ends = dataset._row_bounds("train")
    tokens = dataset.tokens("train")
    model.train()
    seconds, real = 0.0, 0
    original = attention_module.F.scaled_dot_product_attention
    for step in range(THROUGHPUT_STEPS + 1):
        chosen = rng.integers(0, len(starts), size=THROUGHPUT_BATCH * (2 if packed else 1))
        rows = [tokens[starts[i] : ends[i]].astype(np.int64) for i in chosen]
        lines, documents = _lines(rows, packed)
        inputs = torch.from_numpy(lines[:, :-1])
        targets = torch.from_numpy(np.where(documents[:, 1:] >= 0, lines[:, 1:], -1))
        mask = None
        if packed:
            doc = torch.from_numpy(documents[:, :-1])
            same = doc[:, :, None] == doc[:, None, :]
            mask = (same & torch.ones_like(same).tril())[:, None]
            attention_module.F.scaled_dot_product_attention = _with_mask(original, mask)
        started = time.perf_counter()
        _, loss = model(inputs, targets)
        loss.backward()
        elapsed = time.perf_counter() - started
        attention_module.F.scaled_dot_product_attention = original
        model.zero_grad(set_to_none=True)
        if step:  # the first step warms up
            seconds += elapsed
            real += int((torch.from_numpy(documents[:, :-1]) >= 0).sum())
    return real / seconds


def _lines(rows: list[np.ndarray], packed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Batch lines of BLOCK_SIZE + 1 ids and, per id, which row it belongs to (-1: padding)."""
    width = BLOCK_SIZE + 1
    if not packed:
        lines = np.zeros((len(rows), width), dtype=np.int64)
        documents = np.full((len(rows), width), -1, dtype=np.int64)
        for line, row in enumerate(rows):
            row = row[:width]
            lines[line, : len(row)], documents[line, : len(row)] = row, line
        return lines, documents
    packed_lines: list[list[np.ndarray]] = [[]]
    for row in rows:
        if sum(len(r) for r in packed_lines[-1]) + len(row) > width:
            packed_lines.append([])
        packed_lines[-1].append(row[:width])
    packed_lines = packed_lines[:THROUGHPUT_BATCH]
    lines = np.zeros((len(packed_lines), width), dtype=np.int64)
    documents = np.full((len(packed_lines), width), -1, dtype=np.int64)
    for line, members in enumerate(packed_lines):
        position = 0
        for number, row in enumerate(members):
            lines[line, position : position + len(row)] = row
            documents[line, position : position + len(row)] = number
            position += len(row)
    return lines, documents


def _with_mask(original: Any, mask: torch.Tensor) -> Any:
    def attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False):
        return original(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=False)

    return attention


def grown_base(base: Path, vocab_size: int) -> torch.nn.Module:
    """The base as `tune` starts from it: marker rows added as the mean of the others."""
    config = resolve_config(None, [], [], defaults=tune_defaults(False)).config
    init = with_vocabulary_rows(load_tuning_source(str(base), base.parent, config)[0], vocab_size)
    return gpt_from_state_dict(gpt_config_from_args(init["model_args"]), init["model"]).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=None, help="A quick-start checkpoint; default: train one")
    parser.add_argument("--base-steps", type=int, default=800)
    parser.add_argument("--tune-steps", type=int, default=400)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="a short check: 30 base and 20 tuning steps")
    options = parser.parse_args()
    if options.quick:
        options.base_steps, options.tune_steps, options.max_tokens = 30, 20, 48
    torch.manual_seed(0)
    work = (options.work or Path(tempfile.mkdtemp(prefix="hellogpt-chat-tuning-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    base = options.base.resolve() if options.base is not None else None
    os.chdir(work)  # the run records (runs/) go to the work folder
    if base is None:
        hellogpt(work, "train", "--profile", "quickstart", "--plain", "--set", f"train.max_iters={options.base_steps}",
                 "--set", f"optim.lr_decay_iters={options.base_steps}")
        base = work / "checkpoints" / "quickstart.pt"
    base = base.resolve()
    data_dir = work / "data" / "pydoc-chat"
    prepare_dataset([CHAT_SET], data_dir, tokenizer="char", block_size=BLOCK_SIZE)
    dataset = open_dataset(data_dir)
    prompts = first_questions(dataset.meta["val_fraction"])

    before = grown_base(base, dataset.tokenizer.vocab_size)
    results: dict[str, dict[str, Optional[float]]] = {
        "before": {"loss": assistant_loss(before, dataset), **replies(before, dataset, prompts, options.max_tokens)}
    }
    steps = options.tune_steps
    resolved = resolve_config("chat-tune", [], [f"train.max_iters={steps}", f"optim.lr_decay_iters={steps}",
                                                f"train.eval_interval={steps}", "system.device=cpu"],
                              defaults=tune_defaults(False))
    tuned_path = work / "checkpoints" / "quickstart-chat.pt"
    init = load_tuning_source(str(base), base.parent, resolved.config)[0]
    started = time.perf_counter()
    events = list(train(resolved, data_dir=data_dir, checkpoint_path=tuned_path, init=init))
    tune_seconds = time.perf_counter() - started
    step_events = [event for event in events if isinstance(event, StepEvent)]
    tokens_per_second = float(np.median([event.tokens_per_second for event in step_events[1:]]))
    tuned = model_from_checkpoint(load_checkpoint(tuned_path)).eval()
    results["after"] = {"loss": assistant_loss(tuned, dataset), **replies(tuned, dataset, prompts, options.max_tokens)}
    padded, packed = throughput(tuned, dataset, packed=False), throughput(tuned, dataset, packed=True)

    cpu = platform.processor() or platform.machine()
    print(json.dumps({"results": results, "tune_tokens_per_second": tokens_per_second, "tune_seconds": tune_seconds,
                      "padded_real_tokens_per_second": padded, "packed_real_tokens_per_second": packed,
                      "threads": torch.get_num_threads(), "cpu": cpu, "val_conversations": len(prompts)}, indent=2))
    print(f"\n| {len(prompts)} val conversations | assistant-token loss | ends with <\\|im_end\\|> "
          f"within {options.max_tokens} | writes a user turn |")
    print("|---|---|---|---|")
    for name, row in results.items():
        print(f"| {name} | {row['loss']:.2f} | {row['ended']:.0%} | {row['user_turns']:.0%} |")
    print(f"\ntuning: {steps} steps in {tune_seconds:.0f} s, {tokens_per_second:,.0f} tokens/s (padded lines, "
          f"as the loop counts them); real tokens/s of forward+backward: padded {padded:,.0f}, packed with a "
          f"document mask {packed:,.0f} ({packed / padded:.2f}x)")
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
