"""The one place that records what a pass did: status, metrics, history and their log lines.

Stages decide and act; they tell the reporter what happened (a phase change, an outcome, a
service update, an error) and it writes the AppStatus operators see, the Prometheus series
and the history kept in the app's state. Nothing else writes those.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from datetime import datetime

import structlog

from reconciler.app.events import EventBus, Finished, PhaseChanged, StagesChanged
from reconciler.app.state import HISTORY_LIMIT, StateStore
from reconciler.app.status import (
    AnalysisView,
    ApprovalView,
    AppStatus,
    DriftView,
    FrozenView,
    PartView,
    RolloutView,
)
from reconciler.app.timeline import StageClock
from reconciler.decisions.analysis import CheckResult
from reconciler.decisions.definition_diff import Change
from reconciler.decisions.four_keys import RELEASED
from reconciler.decisions.kept import trimmed
from reconciler.decisions.model import HistoryEntry, Observation, Phase, Result, utcnow
from reconciler.decisions.timeline import ReleaseStages, StageTime, bounded_stages
from reconciler.logs import redact
from reconciler.metrics import Metrics

log = structlog.get_logger("reconciler.pass")
# What the app's page shows of a drift: the first lines, each cut short.
DRIFT_LINES, DRIFT_LINE = 50, 300
BUSY = frozenset({Phase.BUILDING, Phase.TESTING, Phase.PUSHING, Phase.MIGRATING, Phase.DEPLOYING})
# The stage of a release each phase begins (its end is told by the stage's duration).
PHASE_STAGES = {
    Phase.BUILDING: "build",
    Phase.TESTING: "test",
    Phase.PUSHING: "push",
    Phase.MIGRATING: "pre_deploy",
    Phase.AWAITING_APPROVAL: "approval",
}


class Reporter:
    def __init__(
        self,
        *,
        app: str,
        status: AppStatus,
        metrics: Metrics,
        store: StateStore,
        bus: EventBus | None = None,
    ) -> None:
        self.app = app
        self.status = status
        # Who asked for the pass under way (a sync, rollback or unpin); its outcome says so.
        self.asked_by: str | None = None
        # Why the app's state cannot be written now: said in last_error while it lasts.
        self._unwritable: str | None = None
        self._metrics = metrics
        self._store = store
        self._bus = bus or EventBus()
        # The stages of the release under way; the commit time of the revision last asked.
        self._clock = StageClock()
        self._committed: tuple[str, datetime | None] | None = None
        self._written: HistoryEntry | None = None  # the last entry written, until a new pass
        if not status.history:
            status.history.extend(store.load(app).history[:HISTORY_LIMIT])

    # What the pass found --------------------------------------------------------------

    def pass_began(self) -> None:
        """A pass starts: it asks git first (the `fetch` stage, if it becomes a release)."""
        self._clock.pass_began()
        self._written = None

    def desired(self, *, revision: str, image: str) -> None:
        """The revision the app should run, known as soon as git answered."""
        self.status.desired_revision = revision
        self.status.desired_image = image
        if self._clock.revision is None:
            # A daemon that started (or took the app) mid-release goes on with its stages.
            kept = self._store.load(self.app).timeline
            if kept is not None and kept.revision == revision:
                self._clock.resume(kept.revision, kept.stages)
        self._clock.revision_known(revision)
        self._no_longer_in_sync()
        self._stages_changed()

    def committed(self, *, revision: str, at: datetime | None) -> None:
        """When `revision` was committed (None: git could not say), for its lead time."""
        self._committed = (revision, at)

    def commit_time_known(self, revision: str) -> bool:
        return self._committed is not None and self._committed[0] == revision

    def observed(self, observation: Observation) -> None:
        live = observation.live
        self.status.desired_revision = observation.desired.revision
        self.status.desired_image = str(observation.desired.image)
        self.status.live_image = live.image
        self.status.live_task_definition = live.task_definition
        self.status.observed = True
        self._no_longer_in_sync()

    def pinned(self, *, revision: str | None, by: str | None) -> None:
        self.status.pinned_revision = revision
        self.status.pinned_by = by if revision else None

    def live(self, *, task_definition: str, image: str | None) -> None:
        self.status.live_task_definition = task_definition
        if image is not None:
            self.status.live_image = image

    # Where the app stands --------------------------------------------------------------

    def phase(self, phase: Phase) -> None:
        if phase is not Phase.FROZEN:
            self.status.frozen = None
        if phase is not Phase.AWAITING_APPROVAL:
            self.status.approval = None
        if self.status.phase != phase:
            previous = self.status.phase
            self._timed_phase(phase, previous)
            log.info("phase_changed", phase=phase.value, previous=previous.value)
            self.status.phase = phase
            self.status.last_transition = utcnow()
            self._bus.publish(
                PhaseChanged(
                    app=self.app,
                    phase=phase,
                    previous=previous,
                    revision=self.status.desired_revision,
                    at=self.status.last_transition,
                )
            )
        self._metrics.app_in_sync.labels(app=self.app).set(1 if phase is Phase.IN_SYNC else 0)

    def drift(self, changes: Sequence[Change]) -> None:
        """Live differs from the definition (empty: it does not, or no longer)."""
        self._metrics.drift.labels(app=self.app).set(1 if changes else 0)
        if not changes:
            self.status.drift = None
            return
        fields = tuple(change.path for change in changes)
        before = self.status.drift
        since = before.since if before is not None and before.fields == fields else utcnow()
        shown = tuple(redact(change.describe())[:DRIFT_LINE] for change in changes[:DRIFT_LINES])
        self.status.drift = DriftView(fields=fields, since=since, changes=shown)

    def part(
        self, name: str, *, task_definition: str | None, phase: Phase, kind: str = "service"
    ) -> None:
        """Where one part of the app's release stands (its task definition kept when None)."""
        for index, known in enumerate(self.status.parts):
            if (known.kind, known.name) == (kind, name):
                td = task_definition or known.task_definition
                self.status.parts[index] = PartView(kind, name, td, phase)
                return
        self.status.parts.append(PartView(kind, name, task_definition, phase))

    def in_sync(self) -> None:
        self.status.last_error = self._unwritable
        self.phase(Phase.IN_SYNC)
        self.count("in_sync")

    def deployed(self) -> None:
        self.status.last_error = self._unwritable
        self.phase(Phase.IN_SYNC)
        self.count("deployed")

    def suspended(self) -> None:
        self.phase(Phase.SUSPENDED)
        self.count("suspended")

    def frozen(self, reason: str, *, until: datetime) -> None:
        """A freeze keeps the release of the desired revision from starting until `until`."""
        self.status.frozen = FrozenView(reason=reason, until=until)
        self.status.last_error = self._unwritable
        self.phase(Phase.FROZEN)
        self.count("frozen")

    def awaiting_approval(self, view: ApprovalView) -> None:
        """The release is pushed and registered and waits for people (SPEC 21)."""
        self.status.approval = view
        self.status.last_error = self._unwritable
        self.phase(Phase.AWAITING_APPROVAL)

    def held(self, reason: str) -> None:
        self.status.last_error = self._with_unwritable(redact(reason))
        self.phase(Phase.FAILED)
        self.count("held")

    def failed(self, reason: str) -> None:
        """The app is Failed for `reason` (no pass result counted: the outcome says it)."""
        self.status.last_error = self._with_unwritable(redact(reason))
        self.phase(Phase.FAILED)

    # What the pass did -----------------------------------------------------------------

    # The release's stages --------------------------------------------------------------

    @contextlib.contextmanager
    def stage(self, name: str, *, part: str = "") -> Iterator[None]:
        """A stage with no phase or duration of its own (verify, register, tags), timed from
        entering to leaving the block, however it is left. After the release's entry was
        written (the extra tags move once it is live), the stage is added to that entry."""
        if self._clock.revision is None and self._written is not None:
            began = utcnow()
            try:
                yield
            finally:
                self._amend(StageTime(name, began, utcnow(), part=part))
            return
        self._clock.begin(name, part=part)
        self._stages_changed()
        try:
            yield
        finally:
            self._clock.end(name, part=part)
            self._stages_changed()

    def release_stages(self) -> ReleaseStages | None:
        """The release under way and its stages so far, for the app's state; None when no
        release is under way (or it did no more than look)."""
        revision = self._clock.revision
        if revision is None or not self._clock.worth_showing:
            return None
        return ReleaseStages(revision, self._clock.stages)

    def _amend(self, stage: StageTime) -> None:
        """Add `stage` to the entry the last release wrote, where it is still the newest
        (it is saved with the app's next write)."""
        written = self._written
        memory = self._store.load(self.app)
        if written is None or not memory.history or memory.history[0] is not written:
            return
        amended = dataclasses.replace(written, stages=bounded_stages((*written.stages, stage)))
        memory.history[0] = self._written = amended
        if self.status.history and self.status.history[0] is written:
            self.status.history[0] = amended

    def _timed_phase(self, phase: Phase, previous: Phase) -> None:
        changed = False
        if previous is Phase.AWAITING_APPROVAL:
            changed = self._clock.end("approval")
        name = PHASE_STAGES.get(phase)
        if name is not None:
            changed = self._clock.begin(name) or changed
        if changed:
            self._stages_changed()

    def _took(self, name: str, seconds: float) -> None:
        if self._clock.end(name, seconds=seconds):
            self._stages_changed()

    def _stages_changed(self, *, done: bool = False) -> None:
        """The app's status and the event stream learn the release's stages so far."""
        if not self._clock.worth_showing:
            if self.status.timeline:
                self.status.timeline = []
            return
        stages = self._clock.stages
        self.status.timeline = [] if done else list(stages)
        self._bus.publish(
            StagesChanged(app=self.app, revision=self._clock.revision, stages=stages, done=done)
        )

    def count(self, result: str) -> None:
        self._metrics.reconcile_total.labels(app=self.app, result=result).inc()

    async def outcome(
        self,
        *,
        revision: str,
        result: Result,
        started_at: datetime,
        error: str | None,
        analysis: tuple[CheckResult, ...] | None = None,
    ) -> None:
        """One history entry, newest first, in the status and in the app's state, with the
        stages of the pass (or passes: an approval wait spans several) that made it."""
        finished = utcnow()
        self._clock.end_all(finished)
        known = self._committed
        committed = known[1] if known is not None and known[0] == revision else None
        entry = HistoryEntry(
            revision=revision,
            result=result,
            started_at=started_at,
            finished_at=finished,
            error=None if error is None else redact(error),
            by=self.asked_by,
            analysis=analysis,
            committed_at=committed,
            stages=self._clock.stages if self._clock.worth_showing else (),
        )
        self._released(entry)
        self._stages_changed(done=True)
        self._clock.done()
        self._written = entry
        memory = self._store.load(self.app)
        memory.timeline = None  # the release is an entry now
        memory.history.insert(0, entry)
        memory.history[:] = trimmed(memory.history)
        await self._store.save(self.app)
        self.state_unwritable(self._store.write_error(self.app))
        self.status.history.appendleft(entry)
        self._bus.publish(
            Finished(
                app=self.app,
                revision=revision,
                result=result,
                started_at=entry.started_at,
                finished_at=entry.finished_at,
                error=entry.error,
            )
        )

    def analysis(self, view: AnalysisView) -> None:
        """Where the release's metric analysis stands now; kept after it ends."""
        self.status.analysis = view

    def _released(self, entry: HistoryEntry) -> None:
        """The release counts (reconciler_deployments_total) and, live, its lead time."""
        if entry.result in RELEASED:
            self._metrics.deployments_total.labels(app=self.app, result=entry.result.value).inc()
        if entry.result is Result.DEPLOYED and entry.committed_at is not None:
            lead = (entry.finished_at - entry.committed_at).total_seconds()
            self._metrics.lead_time_seconds.labels(app=self.app).observe(max(0.0, lead))

    def rollout(self, view: RolloutView, *, service: str = "") -> None:
        """Where the watched rollout of `service` (the app's first if empty) stands now;
        kept after it ends. Its stage on the timeline, and below it each ECS lifecycle
        stage as the observation reports it (seen at each look, so to a poll's accuracy)."""
        self.status.rollout = view
        name = "rollback" if view.kind == "rollback" else "rollout"
        changed = self._clock.begin(name, part=service, at=view.started_at)
        steps = self._clock.running(name, part=service, steps=True)
        if view.stage and not any(s.step == view.stage for s in steps):
            for step in steps:
                changed = self._clock.end(name, part=service, step=step.step) or changed
            changed = self._clock.begin(name, part=service, step=view.stage) or changed
        if view.finished_at is not None:
            changed = self._clock.end_all(view.finished_at, part=service, name=name) or changed
        if changed:
            self._stages_changed()

    def rolled_back(self, *, outcome: str) -> None:
        """A rollback ended: `rolled_back` or `rollback_failed`."""
        self._metrics.rollbacks_total.labels(app=self.app, outcome=outcome).inc()

    def service_updated(self, *, kind: str) -> None:
        """An UpdateService call went out: `deploy` or `rollback`."""
        self._metrics.deploys_total.labels(app=self.app, kind=kind).inc()

    def build_took(self, seconds: float) -> None:
        self._metrics.build_seconds.observe(seconds)
        self._took("build", seconds)

    def test_took(self, seconds: float) -> None:
        self._metrics.test_seconds.observe(seconds)
        self._took("test", seconds)

    def pre_deploy_took(self, seconds: float) -> None:
        self._metrics.pre_deploy_seconds.observe(seconds)
        self._took("pre_deploy", seconds)

    def push_took(self, seconds: float) -> None:
        self._metrics.push_seconds.observe(seconds)
        self._took("push", seconds)

    def rollout_took(self, seconds: float) -> None:
        self._metrics.rollout_seconds.observe(seconds)

    def branch_empty(self, reason: str) -> None:
        """The app's repository has no commit yet: a warning when that is first seen (and
        `reason` in `last_error`, so a status says why nothing happens), at debug level while
        it lasts. The app counts as observed: there is nothing more to look at."""
        reason = redact(reason)
        said = self.status.last_error == self._with_unwritable(reason)
        (log.debug if said else log.warning)("branch_empty", reason=reason)
        self.status.last_error = self._with_unwritable(reason)
        self.status.observed = True
        self.count("branch_empty")

    def pass_failed(
        self, exc: BaseException, *, result: str, level: str, detail: list[str] | None = None
    ) -> None:
        """A pass ended with an error; the app is no longer busy, and not in sync if the
        revision it should run is not the one live."""
        message = redact(str(exc) or type(exc).__name__)
        if detail:
            message = message + "\n" + "\n".join(redact(line) for line in detail[-10:])
        self.status.last_error = self._with_unwritable(message)
        getattr(log, level)("pass_failed", error=message, kind=type(exc).__name__)
        self.count(result)
        if self._clock.end_all():  # what ran stops here; a retry goes on with the release
            self._stages_changed()
        busy = self.status.phase in BUSY
        if busy or (self.status.phase is Phase.IN_SYNC and self._behind()):
            self.phase(Phase.PENDING)

    def state_unwritable(self, reason: str | None) -> None:
        """Whether the app's state can be written now (told after every write), as a metric
        and in `last_error`: a failed write is said there at once, not at the next pass, and
        stays there, beside whatever else the pass says, until a write goes again."""
        self._metrics.state_write_failing.labels(app=self.app).set(0 if reason is None else 1)
        reason = None if reason is None else redact(reason)
        before, self._unwritable = self._unwritable, reason
        if reason != before:
            self.status.last_error = self._with_unwritable(_without(self.status.last_error, before))

    def _with_unwritable(self, message: str | None) -> str | None:
        """`message` with the reason the state cannot be written, unless it says it already."""
        unwritable = self._unwritable
        if unwritable is None or (message is not None and unwritable in message):
            return message
        return unwritable if message is None else f"{message}\n{unwritable}"

    def _no_longer_in_sync(self) -> None:
        """InSync never stands beside a desired image that the live one (as last seen) is
        not: the phase leaves it in the same step that sets the new desired revision, with
        no await between, so no reader of the status (/status, the lease table's copy, the
        event stream) sees the old phase with the new revision. The pass then says what the
        app is (back to InSync if ECS turns out to run it already)."""
        if self.status.phase is Phase.IN_SYNC and self.status.desired_image != (
            self.status.live_image
        ):
            self.phase(Phase.PENDING)

    def _behind(self) -> bool:
        desired, live = self.status.desired_image, self.status.live_image
        return desired is not None and live is not None and desired != live


def _without(message: str | None, part: str | None) -> str | None:
    """`message` without the line `part` that _with_unwritable added (None if it was all)."""
    if message is None or part is None:
        return message
    if message == part:
        return None
    return message.removesuffix(f"\n{part}")
