"""What happened to an app, as events: the reporter publishes, the dashboard's live stream
and the feedback to forges and chat subscribe.

Publishing never blocks and never fails: each subscriber has a bounded queue, and a slow
subscriber loses its oldest events rather than slowing a pass down.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime

from reconciler.decisions.model import Phase, Result, utcnow
from reconciler.decisions.timeline import StageTime


@dataclass(frozen=True)
class PhaseChanged:
    app: str
    phase: Phase
    previous: Phase
    revision: str | None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class Finished:
    """A pass ended an attempt at a revision with `result` (a history entry was written)."""

    app: str
    revision: str
    result: Result
    started_at: datetime
    finished_at: datetime
    error: str | None


@dataclass(frozen=True)
class StagesChanged:
    """The release under way began or ended a stage: its stages so far (`done` once the
    release is a history entry), for the timeline on the app's page."""

    app: str
    revision: str | None
    stages: tuple[StageTime, ...]
    done: bool = False
    at: datetime = field(default_factory=utcnow)


Event = PhaseChanged | Finished | StagesChanged
QUEUE_LIMIT = 1000


class EventBus:
    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[Event]] = set()

    def publish(self, event: Event) -> None:
        for queue in self._queues:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(event)

    def subscribe(self, limit: int = QUEUE_LIMIT) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=limit)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        self._queues.discard(queue)
