"""EleutherAI's lm-evaluation-harness scores a model over `hellogpt serve`'s API as it scores the exported model.

The harness's `local-completions` backend (multiple choice through `echo` + `logprobs`, generation through batched
prompts of token ids) runs against a live server; its `hf` backend runs on the same checkpoint exported for
transformers. Tasks: tests/fixtures/lm_eval (local jsonl data, no downloads).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from hellogpt.data.tokenizer import gpt2_tokenizer
from hellogpt.export import export_checkpoint
from hellogpt.model.gpt import GPT, GPTConfig
from tests.model.test_hf import tiny_payload
from tests.serve.conftest import MODEL_ID, StartServer

TASKS_DIR = Path(__file__).parents[1] / "fixtures" / "lm_eval"
TASKS = ["hellogpt_tiny_choice", "hellogpt_tiny_continue"]
GPT2_VOCAB = 50257


def evaluate(model: str, model_args: dict[str, Any]) -> dict[str, Any]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    return simple_evaluate(
        model=model, model_args=model_args, tasks=TASKS, task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False),
        log_samples=True, random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0,
    )


def answers(results: dict[str, Any], task: str) -> list[Any]:
    """Each request's answer in document order: (log-likelihood, is greedy) pairs or generated texts."""
    samples = sorted(results["samples"][task], key=lambda sample: sample["doc_id"])
    return [response for sample in samples for response in sample["filtered_resps"]]


@pytest.mark.slow
def test_the_harness_scores_the_served_model_as_the_exported_one(
    start_server: StartServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    monkeypatch.chdir(TASKS_DIR)  # the task files name their jsonl files relative to here
    payload = tiny_payload(vocab_size=GPT2_VOCAB)
    exported = export_checkpoint(payload, tmp_path / "exported")
    model = GPT(GPTConfig(**payload["model_args"]))
    model.load_state_dict(payload["model"])
    server = start_server(model.eval(), gpt2_tokenizer(), max_batch=4)

    served = evaluate("local-completions", {
        "model": MODEL_ID, "base_url": server.api + "/completions", "tokenizer": str(exported),
        "tokenizer_backend": "huggingface", "tokenized_requests": True, "batch_size": 4, "max_retries": 1,
        "max_length": model.config.block_size,
    })
    with torch.no_grad():
        reference = evaluate("hf", {"pretrained": str(exported), "dtype": "float32", "device": "cpu", "batch_size": 4})

    for task in TASKS:
        ours, theirs = answers(served, task), answers(reference, task)
        if task == "hellogpt_tiny_choice":
            assert [greedy for _, greedy in ours] == [greedy for _, greedy in theirs]
            assert [score for score, _ in ours] == pytest.approx([score for score, _ in theirs], abs=1e-4)
        else:
            assert ours == theirs
        assert served["results"][task] == reference["results"][task]
