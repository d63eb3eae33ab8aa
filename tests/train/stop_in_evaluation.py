"""A torchrun worker for tests: `python -m hellogpt` whose rank 1 alone presses Ctrl-C (SIGINT to itself) in the
middle of the evaluation at step $STOP_AT_EVAL_STEP, after its first round of evaluation batches."""

from __future__ import annotations

import os
import signal
from typing import Callable, Generator, Optional

from hellogpt.train import evaluation

STOPPING_RANK = 1


def press_ctrl_c_in_the_evaluation(stop_step: int) -> None:
    run_evaluation = evaluation.Evaluator.losses

    def losses(
        self: evaluation.Evaluator, batches: int, step: int, stop_requested: Callable[[], bool]
    ) -> Generator[object, None, Optional[dict[str, float]]]:
        asked = 0

        def ctrl_c_before_the_second_round() -> bool:
            nonlocal asked
            asked += 1
            if step == stop_step and asked == 2 and self.context.rank == STOPPING_RANK:
                signal.raise_signal(signal.SIGINT)
            return stop_requested()

        return (yield from run_evaluation(self, batches, step, ctrl_c_before_the_second_round))

    evaluation.Evaluator.losses = losses  # type: ignore[method-assign]


if __name__ == "__main__":
    press_ctrl_c_in_the_evaluation(int(os.environ["STOP_AT_EVAL_STEP"]))
    from hellogpt.__main__ import main

    main()
