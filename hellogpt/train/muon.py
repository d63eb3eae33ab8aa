"""Muon for the hidden matrices and AdamW for everything else, as one optimizer with one state (one checkpoint entry).

Muon (Keller Jordan, 2024; used by modded-nanogpt and nanochat) is SGD with Nesterov momentum whose update matrix is
replaced by the nearest semi-orthogonal one, found by a few Newton-Schulz iterations. The matrices of one shape are
stacked and orthogonalised in one batched chain of matmuls, and the momentum of all of them is updated by one
`_foreach` call: a transformer has 4-6 matrix shapes however deep it is, so the per-step cost on a CPU is a handful
of large kernel calls instead of a Python loop of small ones (benchmarks/optimizer_step.py).

The class is an AdamW (the fused kernel, its state layout, GradScaler support) whose parameter groups carry a `kind`:
AdamW steps the "adamw" groups, then each "muon" group gets the Muon update.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch

# Jordan's quintic Newton-Schulz coefficients: the steepest slope at zero that still maps singular values into
# about [0.7, 1.2] after five steps; exact orthogonality is not needed, speed is.
NEWTON_SCHULZ_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NEWTON_SCHULZ_STEPS = 5
_NORM_EPSILON = 1e-7


def orthogonalize(stacked: torch.Tensor, steps: int = NEWTON_SCHULZ_STEPS) -> torch.Tensor:
    """Muon's Newton-Schulz orthogonalisation (about U V^T for each U S V^T) of each matrix in `stacked`
    (batch, rows, columns), run on the short side, where the Gram matrix X X^T is the smaller one.

    On a CPU: the iteration's polynomial applied to the singular values through an eigendecomposition of the Gram
    matrix, in float32: equal to the iteration up to rounding (tested) and 2-3x faster (one eigh of a d x d matrix
    against 15 matmuls). Elsewhere the iteration itself, in bfloat16 on CUDA as the speedruns do."""
    work = stacked.bfloat16() if stacked.is_cuda else stacked.float()
    tall = work.size(-2) > work.size(-1)
    if tall:
        work = work.mT
    # Scaled so that the spectral norm is at most 1 (the Frobenius norm bounds it), where the iteration converges.
    work = work / (torch.linalg.matrix_norm(work, keepdim=True) + _NORM_EPSILON)
    if work.device.type == "cpu":
        work = newton_schulz_spectral(work, steps)
    else:
        work = newton_schulz(work, steps)
    if tall:
        work = work.mT
    return work.to(stacked.dtype)


def newton_schulz(work: torch.Tensor, steps: int) -> torch.Tensor:
    """`steps` quintic iterations X <- a X + (b A + c A^2) X with A = X X^T, on wide matrices of norm <= 1."""
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    for _ in range(steps):
        gram = work @ work.mT
        polynomial = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        work = torch.baddbmm(work, polynomial, work, beta=a)
    return work


def newton_schulz_spectral(work: torch.Tensor, steps: int) -> torch.Tensor:
    """What `newton_schulz` returns, computed once on the eigenvalues of A = X X^T = V diag(s^2) V^T.

    Each iteration multiplies X by a polynomial in A, so the result is g(A) X, and g acts on each eigenvalue alone:
    iterating the scalar map on s^2 gives g, and the result is V diag(g) V^T X (a non-finite gradient takes the
    iteration, which passes it through as AdamW does, since eigh would fail on it)."""
    gram = work @ work.mT
    if not bool(torch.isfinite(gram).all()):
        return newton_schulz(work, steps)
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    squared, vectors = torch.linalg.eigh(gram)
    squared = squared.clamp_min(0.0)  # rounding can leave a zero eigenvalue slightly negative
    gain = torch.ones_like(squared)
    for _ in range(steps):
        factor = a + squared * (b + c * squared)
        gain = gain * factor
        squared = squared * factor * factor
    return ((vectors * gain.unsqueeze(-2)) @ vectors.mT) @ work


def muon_shape_scale(shape: torch.Size) -> float:
    """Muon's step multiplier for a (rows, columns) matrix: sqrt(max(1, rows / columns)), so that a tall matrix's
    update has the per-entry size of a square one (Jordan; nanochat)."""
    rows, columns = shape[-2], shape[-1]
    return max(1.0, rows / columns) ** 0.5


class MuonWithAdamW(torch.optim.AdamW):
    """AdamW over `adamw_groups` (each a param-group dict) and Muon over `muon_parameters` (2-D, one group per shape).

    Every group has a `kind` ("adamw" or "muon"); it goes into the state dict, so a checkpoint says which optimizer
    wrote it. Muon state per matrix: `momentum_buffer`, and `step` as AdamW keeps it (its loader expects one)."""

    def __init__(
        self,
        adamw_groups: Sequence[dict[str, Any]],
        muon_parameters: Sequence[torch.nn.Parameter],
        *,
        learning_rate: float,
        muon_learning_rate: float,
        muon_momentum: float,
        betas: tuple[float, float],
        fused: Optional[bool] = None,
    ) -> None:
        shapes = sorted({tuple(parameter.shape) for parameter in muon_parameters})
        muon_groups = [
            {
                "params": [parameter for parameter in muon_parameters if tuple(parameter.shape) == shape],
                "kind": "muon",
                "lr": muon_learning_rate,
                "momentum": muon_momentum,
                "weight_decay": 0.0,  # none on Muon's matrices (nanochat, modded-nanogpt's early records)
            }
            for shape in shapes
        ]
        groups = [{**group, "kind": "adamw"} for group in adamw_groups] + muon_groups
        super().__init__(groups, lr=learning_rate, betas=betas, fused=fused)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:  # type: ignore[override]
        """AdamW's step on its groups, then Muon's; a set `found_inf` (the device-side skip) skips both."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        every_group = self.param_groups
        # AdamW's step walks self.param_groups: show it only its own for the length of its call.
        self.param_groups = [group for group in every_group if group["kind"] != "muon"]
        try:
            super().step()
        finally:
            self.param_groups = every_group
        found_inf = getattr(self, "found_inf", None)
        if found_inf is not None and bool(found_inf):
            return loss
        grad_scale = getattr(self, "grad_scale", None)
        for group in every_group:
            if group["kind"] == "muon":
                self._muon_step(group, grad_scale)
        return loss

    def _muon_step(self, group: dict[str, Any], grad_scale: Optional[torch.Tensor]) -> None:
        parameters = [parameter for parameter in group["params"] if parameter.grad is not None]
        if not parameters:
            return
        gradients = [parameter.grad for parameter in parameters]
        if grad_scale is not None:
            gradients = torch._foreach_div(gradients, grad_scale)
        buffers, steps = [], []
        for parameter in parameters:
            state = self.state[parameter]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["momentum_buffer"] = torch.zeros_like(parameter)
            buffers.append(state["momentum_buffer"])
            steps.append(state["step"])
        momentum = group["momentum"]
        torch._foreach_add_(steps, 1.0)
        torch._foreach_lerp_(buffers, gradients, 1.0 - momentum)
        # Nesterov: the step looks ahead along the updated momentum.
        nesterov = torch._foreach_lerp(gradients, buffers, momentum)
        updates = orthogonalize(torch.stack(nesterov))
        step_size = group["lr"] * muon_shape_scale(parameters[0].shape)
        torch._foreach_add_(parameters, list(updates.unbind(0)), alpha=-step_size)
