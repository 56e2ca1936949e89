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

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "phase": self.phase.value,
            "desired": {"revision": self.desired_revision, "image": self.desired_image},
            "live": {"image": self.live_image, "task_definition": self.live_task_definition},
            "last_error": self.last_error,
            "last_transition": _iso(self.last_transition),
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
