"""Stopping together: under torchrun every rank stops at the same micro-batch boundary, or none does.

A single process can drop the step in flight or abandon an evaluation the moment its stop button is pressed.
Ranks cannot do so on their own: one that leaves a step while the others enter its gradient all-reduce, or one
that skips the evaluation's loss all-reduce, leaves the others waiting in a collective until its timeout. torchrun
forwards Ctrl-C (and SIGTERM, SIGHUP) to every worker and kills them 30 s later, so ranks must agree quickly.

Each rank's own request is combined over the ranks wherever the loop may stop: before each micro-batch, before
each round of evaluation batches, and after each step. Checking only at the end of a step would be exact too,
but a step with many micro-batches, or an evaluation, can outlast torchrun's 30 s. The check is one all_reduce of
one integer on the host (gloo) group: a round trip between the hosts, never a device sync.
"""

from __future__ import annotations

from typing import Callable

from hellogpt.train.distributed import DistributedContext, any_rank


class AgreedStop:
    """The loop's `stop_requested`: this process's stop button, agreed among the ranks at every call.

    Every rank calls it at the same points of the run, so each call is one collective that all ranks answer
    alike. Once they agreed to stop, it stays true without asking again (all ranks learnt it at the same call).
    """

    def __init__(self, requested_here: Callable[[], bool], context: DistributedContext) -> None:
        self._requested_here = requested_here
        self._context = context
        self._agreed = False

    def __call__(self) -> bool:
        if not self._agreed:
            self._agreed = any_rank(self._requested_here(), self._context)
        return self._agreed
