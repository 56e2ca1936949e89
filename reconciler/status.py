"""What operators see of one app: phase, desired, live, last error, history."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reconciler.model import HistoryEntry, Phase, utcnow
from reconciler.state import HISTORY_LIMIT


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


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
