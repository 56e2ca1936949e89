"""What a sandbox rollout does: its outcome and timings, set per service by tests and the
`reconciler sandbox` command."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Outcome = Literal["complete", "fail", "alarm", "rollback_fail", "stick"]


@dataclass(frozen=True)
class Scenario:
    """What the next rollout of a service does, timed from its UpdateService.

    `after`: seconds until its tasks are up (complete, alarm: then BAKE_TIME begins) or the
    circuit breaker trips (fail, rollback_fail). `bake`: seconds in BAKE_TIME, whatever the
    service's bakeTimeInMinutes (an alarm goes off halfway through). `rollback`: seconds a
    rollback, or a stop someone asked for, takes before its final status. A complete rollout
    settles `after + bake` seconds after its UpdateService; a failed one rolls back at
    `after` and the rollback completes `rollback` seconds later.

    `revert`, when set, is the outcome instead for an UpdateService back to the revision the
    service last completed (a client's own rollback, say after a stuck or stopped rollout);
    unset, such a rollout does what every other one does.
    """

    outcome: Outcome = "complete"
    after: float = 0.0
    bake: float = 0.0
    rollback: float = 0.0
    revert: Outcome | None = None

    def __post_init__(self) -> None:
        for outcome in (self.outcome, self.revert or self.outcome):
            if outcome not in get_args(Outcome):
                raise ValueError(f"unknown rollout outcome {outcome!r}")
        if self.after < 0:
            raise ValueError("a rollout cannot settle before it starts")
        if self.bake < 0 or self.rollback < 0:
            raise ValueError("a bake or a rollback cannot take negative time")
