"""A loaded checkpoint as what inference needs: the model (LoRA adapters merged into their base) and its tokenizer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Union

import torch

from hellogpt.checkpoints.format import Checkpoint
from hellogpt.checkpoints.lora_base import merged_model
from hellogpt.checkpoints.weights import gpt_from_state_dict, strip_wrapper_prefixes
from hellogpt.errors import UserError
from hellogpt.model.gpt import GPT

if TYPE_CHECKING:
    from hellogpt.data.tokenizer import Tokenizer

# The tokenizer module (tiktoken) loads only when a checkpoint's tokenizer is rebuilt.


def model_from_checkpoint(checkpoint: Checkpoint, device: Optional[Union[str, torch.device]] = None) -> GPT:
    """Rebuild the GPT of a loaded checkpoint (fp32, eval mode) on `device`; UserError if weights and args disagree.

    A LoRA checkpoint loads its base (checked against the recorded hash) and merges the adapters into it: every
    command that uses a model for inference comes through here, so all of them take LoRA checkpoints as they are.
    """
    if checkpoint.is_lora:
        model = merged_model(checkpoint)
    else:
        model = gpt_from_state_dict(checkpoint.model_args, strip_wrapper_prefixes(checkpoint.model))
    model.eval()
    return model.to(device) if device is not None else model


def tokenizer_from_checkpoint(checkpoint: Checkpoint) -> "Tokenizer":
    """The tokenizer the checkpoint was trained with, rebuilt from its description."""
    from hellogpt.data.tokenizer import tokenizer_from_description

    description = checkpoint.tokenizer
    if description is None:
        raise UserError("this checkpoint has no tokenizer description: it cannot encode text; retrain or re-export it")
    return tokenizer_from_description(description)


def checkpoint_tokenizer(checkpoint: Checkpoint, model_rows: int, where: object = "the checkpoint") -> "Tokenizer":
    """The tokenizer a checkpoint's model reads: the one it was trained with, plus the ChatML markers when it is a
    chat model; UserError (naming `where`) for a template other than ours or a model without rows for the markers."""
    return model_tokenizer(tokenizer_from_checkpoint(checkpoint), checkpoint.chat_template, model_rows, where)


def model_tokenizer(base: "Tokenizer", chat_template: Optional[str], model_rows: int, where: object) -> "Tokenizer":
    """`base` with the markers of `chat_template` (ours or none), checked against the `model_rows` of the model that
    reads it: a checkpoint's, or an exported directory's (`hf.pretrained_tokenizer`)."""
    from hellogpt.data.chat_template import template_tokenizer

    tokenizer = template_tokenizer(base, chat_template, where)
    if tokenizer.vocab_size > model_rows:
        raise UserError(
            f"{where}: its tokenizer has {tokenizer.vocab_size} tokens but the model only {model_rows} rows: "
            "it was not trained with these special tokens; tune it on a chat dataset to make a chat model"
        )
    return tokenizer
