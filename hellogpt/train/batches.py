"""Training and evaluation batches: windows sampled from the memory-mapped dataset, moved to the device."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hellogpt.data.loader import TokenDataset

Windows = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class BatchSource:
    """`batch_size` windows of `block_size` tokens (and their next-token targets) per draw."""

    dataset: TokenDataset
    batch_size: int
    block_size: int
    device: torch.device

    def windows(self, split: str, rng: np.random.Generator) -> Windows:
        return self.dataset.sample_batch(split, self.batch_size, self.block_size, rng)

    def to_device(self, windows: Windows) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = torch.from_numpy(windows[0]), torch.from_numpy(windows[1])
        if self.device.type == "cuda":
            # Pinned host memory lets the copy overlap with the kernels already queued.
            return inputs.pin_memory().to(self.device, non_blocking=True), targets.pin_memory().to(self.device, non_blocking=True)
        return inputs.to(self.device), targets.to(self.device)

    def batch(self, split: str, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.to_device(self.windows(split, rng))
