"""The one place that records what a pass did: status, metrics, history and their log lines.

Stages decide and act; they tell the reporter what happened (a phase change, an outcome, a
service update, an error) and it writes the AppStatus operators see, the Prometheus series
and the history kept in the app's state. Nothing else writes those.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import structlog

from reconciler.app.events import EventBus, Finished, PhaseChanged
from reconciler.app.state import HISTORY_LIMIT, StateStore
from reconciler.app.status import AppStatus, DriftView, RolloutView
from reconciler.decisions.definition_diff import Change
from reconciler.decisions.model import HistoryEntry, Observation, Phase, Result, utcnow
from reconciler.logs import redact
from reconciler.metrics import Metrics

log = structlog.get_logger("reconciler.pass")
# What the app's page shows of a drift: the first lines, each cut short.
DRIFT_LINES, DRIFT_LINE = 50, 300
BUSY = frozenset({Phase.BUILDING, Phase.TESTING, Phase.PUSHING, Phase.MIGRATING, Phase.DEPLOYING})


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
        self._metrics = metrics
        self._store = store
        self._bus = bus or EventBus()
        if not status.history:
            status.history.extend(store.load(app).history[:HISTORY_LIMIT])

    # What the pass found --------------------------------------------------------------

    def desired(self, *, revision: str, image: str) -> None:
        """The revision the app should run, known as soon as git answered."""
        self.status.desired_revision = revision
        self.status.desired_image = image

    def observed(self, observation: Observation) -> None:
        live = observation.live
        self.desired(revision=observation.desired.revision, image=str(observation.desired.image))
        self.status.live_image = live.image
        self.status.live_task_definition = live.task_definition
        self.status.observed = True

    def pinned(self, *, revision: str | None, by: str | None) -> None:
        self.status.pinned_revision = revision
        self.status.pinned_by = by if revision else None

    def live(self, *, task_definition: str, image: str | None) -> None:
        self.status.live_task_definition = task_definition
        if image is not None:
            self.status.live_image = image

    # Where the app stands --------------------------------------------------------------

    def phase(self, phase: Phase) -> None:
        if self.status.phase != phase:
            previous = self.status.phase
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

    def in_sync(self) -> None:
        self.status.last_error = None
        self.phase(Phase.IN_SYNC)
        self.count("in_sync")

    def deployed(self) -> None:
        self.status.last_error = None
        self.phase(Phase.IN_SYNC)
        self.count("deployed")

    def suspended(self) -> None:
        self.phase(Phase.SUSPENDED)
        self.count("suspended")

    def held(self, reason: str) -> None:
        self.status.last_error = redact(reason)
        self.phase(Phase.FAILED)
        self.count("held")

    def failed(self, reason: str) -> None:
        """The app is Failed for `reason` (no pass result counted: the outcome says it)."""
        self.status.last_error = redact(reason)
        self.phase(Phase.FAILED)

    # What the pass did -----------------------------------------------------------------

    def count(self, result: str) -> None:
        self._metrics.reconcile_total.labels(app=self.app, result=result).inc()

    async def outcome(
        self, *, revision: str, result: Result, started_at: datetime, error: str | None
    ) -> None:
        """One history entry, newest first, in the status and in the app's state."""
        entry = HistoryEntry(
            revision=revision,
            result=result,
            started_at=started_at,
            finished_at=utcnow(),
            error=None if error is None else redact(error),
            by=self.asked_by,
        )
        memory = self._store.load(self.app)
        memory.history.insert(0, entry)
        del memory.history[HISTORY_LIMIT:]
        await self._store.save(self.app)
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

    def rollout(self, view: RolloutView) -> None:
        """Where the watched rollout stands now; kept after it ends."""
        self.status.rollout = view

    def rolled_back(self, *, outcome: str) -> None:
        """A rollback ended: `rolled_back` or `rollback_failed`."""
        self._metrics.rollbacks_total.labels(app=self.app, outcome=outcome).inc()

    def service_updated(self, *, kind: str) -> None:
        """An UpdateService call went out: `deploy` or `rollback`."""
        self._metrics.deploys_total.labels(app=self.app, kind=kind).inc()

    def build_took(self, seconds: float) -> None:
        self._metrics.build_seconds.observe(seconds)

    def test_took(self, seconds: float) -> None:
        self._metrics.test_seconds.observe(seconds)

    def pre_deploy_took(self, seconds: float) -> None:
        self._metrics.pre_deploy_seconds.observe(seconds)

    def push_took(self, seconds: float) -> None:
        self._metrics.push_seconds.observe(seconds)

    def rollout_took(self, seconds: float) -> None:
        self._metrics.rollout_seconds.observe(seconds)

    def pass_failed(
        self, exc: BaseException, *, result: str, level: str, detail: list[str] | None = None
    ) -> None:
        """A pass ended with an error; the app is no longer busy, and not in sync if the
        revision it should run is not the one live."""
        message = redact(str(exc) or type(exc).__name__)
        if detail:
            message = message + "\n" + "\n".join(redact(line) for line in detail[-10:])
        self.status.last_error = message
        getattr(log, level)("pass_failed", error=message, kind=type(exc).__name__)
        self.count(result)
        busy = self.status.phase in BUSY
        if busy or (self.status.phase is Phase.IN_SYNC and self._behind()):
            self.phase(Phase.PENDING)

    def state_unwritable(self, reason: str | None) -> None:
        """Whether the app's state file can be written now, as a metric."""
        self._metrics.state_write_failing.labels(app=self.app).set(0 if reason is None else 1)

    def _behind(self) -> bool:
        desired, live = self.status.desired_image, self.status.live_image
        return desired is not None and live is not None and desired != live
