"""The stages of the release under way, as the reporter hears of them.

The reporter already hears every stage begin (a phase change, a rollout view) and end (the
durations it turns into histograms, a rollout's finish): it tells this clock, so no stage
keeps a timer of its own for the timeline. A release is one pass, or several: a release
waiting for approval goes on in a later pass, and so does one retried after a transient
error. So a pass of the same revision goes on with the stages recorded so far, until the
release is a history entry (`done`); a pass of another revision starts afresh.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from reconciler.decisions.model import utcnow
from reconciler.decisions.timeline import MAX_STAGES, StageTime

# Stages that say nothing worth a timeline alone: a pass that did only these (a poll that
# found the app in sync) shows no release under way.
ROUTINE = frozenset({"fetch", "tags"})
# Stages a later pass of the same release does again without news (its look at git, the
# registration it reuses): recorded once.
ONCE = frozenset({"fetch", "verify", "register"})


class StageClock:
    def __init__(self) -> None:
        self._stages: list[StageTime] = []
        self.revision: str | None = None
        self._pass_at: datetime | None = None
        self._again = False  # a later pass of the release recorded so far

    def pass_began(self, at: datetime | None = None) -> None:
        self._pass_at = at or utcnow()

    def revision_known(self, revision: str, at: datetime | None = None) -> None:
        """Git named the pass's revision: the release recorded so far goes on if it is the
        same one (and did more than look); otherwise this pass starts a new one with its
        look at git as its first stage."""
        now = at or utcnow()
        if revision == self.revision and self.worth_showing:
            self._again = True
            return
        self._stages = [StageTime("fetch", min(self._pass_at or now, now), now)]
        self.revision = revision
        self._again = False

    def resume(self, revision: str, stages: tuple[StageTime, ...]) -> None:
        """Go on with the stages an earlier daemon recorded of the release of `revision` (a
        restart, a takeover). A stage it left running stays open: one the pass runs again
        (the rollout it watches again) goes on as the same bar, any other ends with the
        release, its bar covering the time no daemon worked on it."""
        self._stages = list(stages)
        self.revision = revision
        self._again = True

    def done(self) -> None:
        """The release is a history entry: the next pass starts afresh."""
        self._stages = []
        self.revision = None
        self._again = False

    def begin(
        self, name: str, *, part: str = "", step: str = "", at: datetime | None = None
    ) -> bool:
        """`name` runs from `at` (now); False when it runs already, was done once in this
        release and is not worth a second bar, or the bound is reached."""
        key = (name, part, step)
        if self._open(key) is not None or len(self._stages) >= MAX_STAGES:
            return False
        if self._again and name in ONCE and any(s.key == key for s in self._stages):
            return False
        self._stages.append(StageTime(name, at or utcnow(), part=part, step=step))
        return True

    def end(
        self,
        name: str,
        *,
        part: str = "",
        step: str = "",
        seconds: float | None = None,
        at: datetime | None = None,
    ) -> bool:
        """`name` ended at `at` (now). With `seconds`, it began that long before, which
        wins over when it was heard to begin (a phase is said a little after the work
        starts, and two stages may overlap); a stage not heard to begin is added so."""
        end = at or utcnow()
        began = None if seconds is None else end - timedelta(seconds=max(0.0, seconds))
        index = self._open((name, part, step))
        if index is None:
            if began is None or len(self._stages) >= MAX_STAGES:
                return False
            self._stages.append(StageTime(name, began, end, part=part, step=step))
            return True
        stage = self._stages[index]
        self._stages[index] = dataclasses.replace(
            stage, started_at=began or stage.started_at, finished_at=max(end, stage.started_at)
        )
        return True

    def end_all(
        self, at: datetime | None = None, *, part: str | None = None, name: str = ""
    ) -> bool:
        """End every stage still running (only those of the rollout `name` of `part`, its
        lifecycle steps with it, when `part` is given)."""
        end = at or utcnow()
        changed = False
        for index, stage in enumerate(self._stages):
            if stage.finished_at is not None:
                continue
            if part is not None and (stage.part != part or stage.name != name):
                continue
            self._stages[index] = dataclasses.replace(stage, finished_at=max(end, stage.started_at))
            changed = True
        return changed

    def running(self, name: str, *, part: str = "", steps: bool = False) -> list[StageTime]:
        """The stages `name` of `part` still running: its lifecycle steps with `steps`."""
        return [
            s
            for s in self._stages
            if s.name == name and s.part == part and s.finished_at is None and bool(s.step) == steps
        ]

    @property
    def stages(self) -> tuple[StageTime, ...]:
        return tuple(self._stages)

    @property
    def worth_showing(self) -> bool:
        """Whether the release did more than its routine look."""
        return any(s.name not in ROUTINE for s in self._stages)

    def _open(self, key: tuple[str, str, str]) -> int | None:
        for index in range(len(self._stages) - 1, -1, -1):
            stage = self._stages[index]
            if stage.key == key and stage.finished_at is None:
                return index
        return None
