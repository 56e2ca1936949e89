"""A release's stages in time, and how much of the history is kept. Pure: no I/O.

Each history entry (a release) carries the stages of the pass that made it, each with its
start and end: fetch, verify, build, test, push, register, approval, pre_deploy, one
`rollout` per service (and, below it, each ECS lifecycle stage the rollout observation
reported), rollback, analysis, tags. The app's page draws them to scale; the four keys
(four_keys.py) read the entries' results and times.

One release keeps at most MAX_STAGES stages; how much of the history is kept is kept.py's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

MAX_STAGES = 40  # stages one release keeps


@dataclass(frozen=True)
class StageTime:
    """One stage of a release: `part` names the service of a rollout, `step` the ECS
    lifecycle stage within it (both empty for the pass's own stages). `finished_at` is None
    while the stage runs (and for a stage the pass left without ending it)."""

    name: str
    started_at: datetime
    finished_at: datetime | None = None
    part: str = ""
    step: str = ""

    @property
    def label(self) -> str:
        """`build`, `rollout web`, `rollout web: BAKE_TIME`."""
        text = f"{self.name} {self.part}" if self.part else self.name
        return f"{text}: {self.step}" if self.step else text

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.name, self.part, self.step)

    def seconds(self, now: datetime) -> float:
        """How long it took (so far, while it runs)."""
        end = self.finished_at or now
        return max(0.0, (end - self.started_at).total_seconds())


@dataclass(frozen=True)
class ReleaseStages:
    """The stages of a release under way, kept in the app's state, so a daemon that restarts
    (or takes the app over) mid-release goes on with them rather than from nothing."""

    revision: str
    stages: tuple[StageTime, ...]


def bounded_stages(stages: Sequence[StageTime]) -> tuple[StageTime, ...]:
    """At most MAX_STAGES, in order: the pass's stages and rollouts first, then as many
    lifecycle steps as fit (a release of many services may report many)."""
    if len(stages) <= MAX_STAGES:
        return tuple(stages)
    top = {id(s) for s in [s for s in stages if not s.step][:MAX_STAGES]}
    room = MAX_STAGES - len(top)
    steps = {id(s) for s in [s for s in stages if s.step][:room]}
    return tuple(s for s in stages if id(s) in top or id(s) in steps)


def slowest(stages: Sequence[StageTime], now: datetime) -> StageTime | None:
    """The longest of the stages that are not lifecycle steps (those sit inside a rollout)."""
    top = [s for s in stages if not s.step]
    return max(top, key=lambda s: s.seconds(now), default=None)


def span(stages: Sequence[StageTime], start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The times a timeline covers: the release's, widened to every stage's."""
    first = min([start, *(s.started_at for s in stages)])
    last = max([end, *(s.finished_at for s in stages if s.finished_at is not None)])
    return first, last
