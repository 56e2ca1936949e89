"""What operators see of one app: phase, desired, live, last error, history."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, TypeAdapter, ValidationError

from reconciler.app.state import HISTORY_LIMIT, compact_entry, why_unreadable
from reconciler.decisions.analysis import CheckResult, State
from reconciler.decisions.model import HistoryEntry, Phase, utcnow
from reconciler.decisions.timeline import StageTime


def _utc(moment: datetime) -> datetime:
    # Taken as UTC, as every time here is: a naive one could not be compared with them.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


Time = Annotated[datetime, AfterValidator(_utc)]


@dataclass
class RolloutView:
    """Where the rollout being watched (or the last one) stands."""

    deployment: str
    task_definition: str
    kind: str = "deploy"  # deploy | rollback
    service_deployment: str | None = None
    strategy: str = "ROLLING"
    stage: str | None = None
    status: str | None = None
    running: int | None = None
    desired: int | None = None
    failed_tasks: int = 0
    alarms_triggered: tuple[str, ...] = ()
    started_at: Time | None = None
    finished_at: Time | None = None

    def to_json(self) -> dict[str, Any]:
        return _ROLLOUT.dump_python(self, mode="json")  # type: ignore[no-any-return]

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> RolloutView:
        """The inverse of to_json; a missing key takes its default, an unknown one is left."""
        return _ROLLOUT.validate_python(document)


@dataclass
class DriftView:
    """Live differing from the app's definition without a deploy of ours (SPEC 19)."""

    fields: tuple[str, ...]  # the JSON paths that differ
    since: Time  # when this daemon first saw it
    changes: tuple[str, ...] = ()  # `path: live -> desired`, for the app's page


@dataclass
class FrozenView:
    """The freeze that keeps a new release from starting (SPEC 21), and when it ends."""

    reason: str
    until: Time


@dataclass
class VoteView:
    by: str
    at: Time
    comment: str = ""


@dataclass
class ApprovalView:
    """The release waiting for approval (SPEC 21): what it would put live (revision, image
    digest and, with `definitions`, the definition's changes) and who approved it so far."""

    revision: str
    digest: str
    required: int
    expires_at: Time
    approvals: list[VoteView] = field(default_factory=list)
    changes: tuple[str, ...] = ()  # `path: live -> desired`, with `definitions`


@dataclass
class AnalysisView:
    """The metric analysis of the latest release (SPEC 21): each check's values and
    verdict, and the release's; kept after it ends."""

    revision: str
    state: State
    checks: list[CheckResult] = field(default_factory=list)
    started_at: Time | None = None  # None until the bake (or the rollout) started
    reason: str = ""  # why it failed


@dataclass
class PartView:
    """One part of an app's release (SPEC 20): a service or a schedule, the task definition
    it runs (or names) and where it stands."""

    kind: str  # service | schedule
    name: str
    task_definition: str | None = None
    phase: Phase = Phase.PENDING


@dataclass
class AppStatus:
    name: str
    phase: Phase = Phase.PENDING
    desired_revision: str | None = None
    desired_image: str | None = None
    live_image: str | None = None
    live_task_definition: str | None = None
    last_error: str | None = None
    last_transition: datetime = field(default_factory=utcnow)
    history: deque[HistoryEntry] = field(default_factory=lambda: deque(maxlen=HISTORY_LIMIT))
    observed: bool = False  # set once a pass has looked at git and ECS (for /readyz)
    rollout: RolloutView | None = None  # the rollout watched now, or the last one
    promoted_from: str | None = None  # the app whose proved revisions this one follows
    pinned_by: str | None = None  # "rollback" while an operator's rollback pin holds
    pinned_revision: str | None = None
    drift: DriftView | None = None
    # Apps with several services (or schedules): one entry per part, in release order.
    parts: list[PartView] = field(default_factory=list)
    frozen: FrozenView | None = None  # while a freeze holds a release back
    approval: ApprovalView | None = None  # while a release waits for approval
    analysis: AnalysisView | None = None  # the latest release's metric analysis
    # The stages of the release under way (empty once it is a history entry, or when the
    # pass has nothing to release).
    timeline: list[StageTime] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        document = _StatusDocument.model_construct(
            name=self.name,
            phase=self.phase,
            desired=_Desired.model_construct(
                revision=self.desired_revision, image=self.desired_image
            ),
            live=_Live.model_construct(
                image=self.live_image, task_definition=self.live_task_definition
            ),
            last_error=self.last_error,
            last_transition=self.last_transition,
            rollout=self.rollout,
            promoted_from=None
            if self.promoted_from is None
            else _Promotion.model_construct(app=self.promoted_from, revision=self.desired_revision),
            pinned_by=self.pinned_by,
            pinned_revision=self.pinned_revision,
            drift=self.drift,
            parts=list(self.parts),
            frozen=self.frozen,
            approval=self.approval,
            analysis=self.analysis,
            history=list(self.history),
            timeline=list(self.timeline),
        )
        dumped = document.model_dump(mode="json")
        if dumped.get("drift") is None:
            dumped.pop("drift", None)  # said only while live differs from the definitions
        if dumped.get("frozen") is None:
            dumped.pop("frozen", None)  # said only while a freeze holds a release back
        if dumped.get("approval") is None:
            dumped.pop("approval", None)  # said only while a release waits for approval
        if dumped.get("analysis") is None:
            dumped.pop("analysis", None)  # said only by an app with `analysis` checks
        if not dumped.get("timeline"):
            dumped.pop("timeline", None)  # said only while a release is under way
        for stage in dumped.get("timeline", ()):
            for key in ("part", "step"):
                if not stage.get(key):
                    stage.pop(key, None)
        if not dumped.get("parts"):
            dumped.pop("parts", None)  # said only by an app of several parts
        for entry in dumped["history"]:
            # Who asked, the commit time, stages and analysis only when known.
            compact_entry(entry)
        return dumped

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> AppStatus:
        """The status another daemon published with to_json (what /status serves), back as
        an AppStatus. A key missing (an older writer) takes AppStatus's default and a key
        not known here (a newer one) is left out; `observed` is never published and stays
        False. A value this version cannot read, such as a phase or result it does not
        know, raises ValueError (one line, naming it) rather than being guessed."""
        try:
            read = _StatusDocument.model_validate(document)
        except ValidationError as exc:
            raise ValueError(f"not an app status document: {why_unreadable(exc)}") from exc
        desired, live = read.desired or _Desired(), read.live or _Live()
        return cls(
            name=read.name or "",
            phase=read.phase,
            desired_revision=desired.revision,
            desired_image=desired.image,
            live_image=live.image,
            live_task_definition=live.task_definition,
            last_error=read.last_error,
            last_transition=read.last_transition,
            history=deque(read.history, maxlen=HISTORY_LIMIT),
            rollout=read.rollout,
            promoted_from=None if read.promoted_from is None else read.promoted_from.app,
            pinned_by=read.pinned_by,
            pinned_revision=read.pinned_revision,
            drift=read.drift,
            parts=list(read.parts),
            frozen=read.frozen,
            approval=read.approval,
            analysis=read.analysis,
            timeline=list(read.timeline),
        )


def _named(document: Any) -> Any:
    """A rollout published without its deployment or task definition (or with null) reads
    them as empty, as a view made before either was known has them."""
    if not isinstance(document, Mapping):
        return document
    return {
        **document,
        "deployment": document.get("deployment") or "",
        "task_definition": document.get("task_definition") or "",
    }


_ROLLOUT: TypeAdapter[RolloutView] = TypeAdapter(Annotated[RolloutView, BeforeValidator(_named)])


def _history_entry(entry: HistoryEntry) -> HistoryEntry:
    return replace(entry, started_at=_utc(entry.started_at), finished_at=_utc(entry.finished_at))


class _Desired(BaseModel):
    revision: str | None = None
    image: str | None = None


class _Live(BaseModel):
    image: str | None = None
    task_definition: str | None = None


class _Promotion(BaseModel):
    app: str | None = None
    revision: str | None = None  # the app's desired revision, repeated for readers


class _StatusDocument(BaseModel):
    """An AppStatus as /status serves it and owners publish it, in that order. A key not
    there takes AppStatus's default; one not known here is ignored."""

    name: str | None = None
    phase: Phase = Phase.PENDING
    desired: _Desired | None = None
    live: _Live | None = None
    last_error: str | None = None
    last_transition: Time = Field(default_factory=utcnow)
    rollout: Annotated[RolloutView | None, BeforeValidator(_named)] = None
    promoted_from: _Promotion | None = None
    pinned_by: str | None = None
    pinned_revision: str | None = None
    drift: DriftView | None = None
    parts: list[PartView] = Field(default_factory=list)
    frozen: FrozenView | None = None
    approval: ApprovalView | None = None
    analysis: AnalysisView | None = None
    history: list[Annotated[HistoryEntry, AfterValidator(_history_entry)]] = Field(
        default_factory=list
    )
    timeline: list[StageTime] = Field(default_factory=list)
