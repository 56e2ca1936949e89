"""What operators see of one app: phase, desired, live, last error, history."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from reconciler.app.state import HISTORY_LIMIT
from reconciler.decisions.model import HistoryEntry, Phase, Result, utcnow


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _moment(text: Any) -> datetime | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not an ISO 8601 time")
    moment = datetime.fromisoformat(text)
    # Taken as UTC, as every time here is: a naive one could not be compared with them.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _required_moment(text: Any) -> datetime:
    moment = _moment(text)
    if moment is None:
        raise ValueError("a time is missing")
    return moment


Reader = Callable[[Any], Any] | None  # None: the value as it is


def _present(document: Mapping[str, Any], **fields: Reader) -> dict[str, Any]:
    """The fields (named as their keys) that the document has, each read by its reader, so a
    key an older writer did not know yet takes the dataclass default rather than None."""
    return {
        key: document[key] if read is None else read(document[key])
        for key, read in fields.items()
        if key in document
    }


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
    started_at: datetime | None = None
    finished_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment,
            "task_definition": self.task_definition,
            "kind": self.kind,
            "service_deployment": self.service_deployment,
            "strategy": self.strategy,
            "stage": self.stage,
            "status": self.status,
            "running": self.running,
            "desired": self.desired,
            "failed_tasks": self.failed_tasks,
            "alarms_triggered": list(self.alarms_triggered),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> RolloutView:
        """The inverse of to_json; a missing key takes its default, an unknown one is left."""
        return cls(
            deployment=str(document.get("deployment") or ""),
            task_definition=str(document.get("task_definition") or ""),
            **_present(
                document,
                kind=str,
                service_deployment=None,
                strategy=str,
                stage=None,
                status=None,
                running=None,
                desired=None,
                failed_tasks=int,
                alarms_triggered=tuple,
                started_at=_moment,
                finished_at=_moment,
            ),
        )


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

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "phase": self.phase.value,
            "desired": {"revision": self.desired_revision, "image": self.desired_image},
            "live": {"image": self.live_image, "task_definition": self.live_task_definition},
            "last_error": self.last_error,
            "last_transition": _iso(self.last_transition),
            "rollout": None if self.rollout is None else self.rollout.to_json(),
            "promoted_from": None
            if self.promoted_from is None
            else {"app": self.promoted_from, "revision": self.desired_revision},
            "pinned_by": self.pinned_by,
            "pinned_revision": self.pinned_revision,
            "history": [
                {
                    "revision": h.revision,
                    "result": h.result.value,
                    "started_at": _iso(h.started_at),
                    "finished_at": _iso(h.finished_at),
                    "error": h.error,
                }
                for h in self.history
            ],
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> AppStatus:
        """The status another daemon published with to_json (what /status serves), back as
        an AppStatus. A key missing (an older writer) takes AppStatus's default and a key
        not known here (a newer one) is left out; `observed` is never published and stays
        False. A value this version cannot read, such as a phase or result it does not
        know, raises ValueError rather than being guessed."""
        try:
            desired = document.get("desired") or {}
            live = document.get("live") or {}
            promoted = document.get("promoted_from")
            rollout = document.get("rollout")
            return cls(
                name=str(document.get("name") or ""),
                desired_revision=desired.get("revision"),
                desired_image=desired.get("image"),
                live_image=live.get("image"),
                live_task_definition=live.get("task_definition"),
                rollout=None if rollout is None else RolloutView.from_json(rollout),
                promoted_from=None if promoted is None else promoted.get("app"),
                **_present(
                    document,
                    phase=Phase,
                    last_error=None,
                    last_transition=_required_moment,
                    pinned_by=None,
                    pinned_revision=None,
                    history=_history,
                ),
            )
        except (AttributeError, TypeError, KeyError) as exc:
            # Translated, so a reader need only expect ValueError of a document it got.
            raise ValueError(f"not an app status document: {exc!r}") from exc


def _history(entries: list[Mapping[str, Any]]) -> deque[HistoryEntry]:
    return deque(
        (
            HistoryEntry(
                revision=str(entry["revision"]),
                result=Result(entry["result"]),
                started_at=_required_moment(entry["started_at"]),
                finished_at=_required_moment(entry["finished_at"]),
                error=entry.get("error"),
            )
            for entry in entries
        ),
        maxlen=HISTORY_LIMIT,
    )
