"""Loss and gradient norm read once per log line; a bad step is skipped on the device until then."""

from __future__ import annotations

import math

import torch

from hellogpt.train.distributed import DistributedContext
from hellogpt.train.readings import StepReadings

SINGLE_CPU = DistributedContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


def fused_adamw(parameter: torch.nn.Parameter) -> torch.optim.AdamW:
    return torch.optim.AdamW([parameter], lr=0.1, fused=True)


def step(readings: StepReadings, optimizer: torch.optim.Optimizer, parameter: torch.nn.Parameter, index: int, loss: float) -> None:
    parameter.grad = torch.full_like(parameter, loss)
    readings.record(index, torch.tensor(loss), torch.linalg.vector_norm(parameter.grad))
    optimizer.found_inf = readings.skip_flag()
    optimizer.step()
    del optimizer.found_inf


def test_a_fused_single_process_run_reads_only_when_asked() -> None:
    parameter = torch.nn.Parameter(torch.ones(3))
    readings = StepReadings(SINGLE_CPU, fused_adamw(parameter), grad_scaler_enabled=False)
    assert not readings.reads_every_step


def test_a_bad_step_and_every_later_one_are_skipped_and_the_read_names_the_first() -> None:
    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = fused_adamw(parameter)
    readings = StepReadings(SINGLE_CPU, optimizer, grad_scaler_enabled=False)
    step(readings, optimizer, parameter, 1, 0.5)
    after_good_step = parameter.detach().clone()
    step(readings, optimizer, parameter, 2, math.nan)
    step(readings, optimizer, parameter, 3, 0.5)
    assert torch.equal(parameter.detach(), after_good_step)
    reading = readings.read()
    assert reading.diverged and reading.step == 2 and math.isnan(reading.loss)


def test_a_read_of_healthy_steps_gives_the_latest_values_and_the_stop_flags() -> None:
    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = fused_adamw(parameter)
    readings = StepReadings(SINGLE_CPU, optimizer, grad_scaler_enabled=False)
    for index, loss in enumerate((3.0, 2.0), start=1):
        step(readings, optimizer, parameter, index, loss)
    reading = readings.read(stop=True)
    assert (reading.step, reading.loss, reading.diverged, reading.stop, reading.over_time) == (2, 2.0, False, True, False)
    assert math.isclose(reading.grad_norm, 2.0 * math.sqrt(3), rel_tol=1e-6)


def test_without_a_fused_optimizer_or_with_a_grad_scaler_every_step_is_read() -> None:
    parameter = torch.nn.Parameter(torch.ones(3))
    plain = torch.optim.AdamW([parameter], lr=0.1, fused=False, foreach=False)
    assert StepReadings(SINGLE_CPU, plain, grad_scaler_enabled=False).reads_every_step
    assert StepReadings(SINGLE_CPU, fused_adamw(parameter), grad_scaler_enabled=True).reads_every_step
