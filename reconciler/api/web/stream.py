"""GET /events: each phase change as one Server-Sent Event, for the pages' live updates, and
each change of a release's stages as a `stage` event, for the app page's timeline.

Every client has its own subscription to the event bus, dropped when the client goes away.
The bus never waits for a client: a slow one loses its oldest events, and its writes wait
at most SEND_TIMEOUT before the stream is cut. A comment every HEARTBEAT keeps proxies from
closing an idle stream and is how a vanished client is noticed when nothing happens. On
shutdown every stream is ended at once, so the server's short grace is not spent on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

import structlog
from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from reconciler.app.events import Event, EventBus, PhaseChanged, StagesChanged

log = structlog.get_logger("reconciler.web")

HEARTBEAT = 15.0  # seconds between comments on an idle stream
SEND_TIMEOUT = 30.0  # a client that takes this long to accept a write is cut off
QUEUE_LIMIT = 256  # events held for one client before its oldest are dropped
RETRY_MS = 3000  # how soon a browser reconnects after the stream ends


class HasBus(Protocol):
    @property
    def bus(self) -> EventBus: ...


class Streams:
    """The open streams of one app, so shutdown can end them."""

    def __init__(self) -> None:
        self.open: set[EventSourceResponse] = set()
        self.closing = False

    def close_all(self) -> None:
        self.closing = True
        for stream in list(self.open):
            stream.stop_streaming()


BUS: web.AppKey[HasBus] = web.AppKey("dashboard_bus", HasBus)
STREAMS: web.AppKey[Streams] = web.AppKey("dashboard_streams", Streams)
SEES: web.AppKey[Callable[[web.Request, str], bool]] = web.AppKey("dashboard_stream_sees")
MAX_STREAMS = 100  # event streams open at once per daemon


def as_json(event: PhaseChanged) -> str:
    return json.dumps(
        {
            "app": event.app,
            "phase": event.phase.value,
            "revision": event.revision,
            "at": event.at.isoformat().replace("+00:00", "Z"),
        },
        separators=(",", ":"),
    )


def stages_json(event: StagesChanged) -> str:
    """The release's stages so far, as the `stage` event the app page's timeline reads."""

    def iso(moment: datetime | None) -> str | None:
        return None if moment is None else moment.isoformat().replace("+00:00", "Z")

    return json.dumps(
        {
            "app": event.app,
            "revision": event.revision,
            "done": event.done,
            "at": iso(event.at),
            "stages": [
                {
                    "label": s.label,
                    "name": s.name,
                    "step": s.step,
                    "started_at": iso(s.started_at),
                    "finished_at": iso(s.finished_at),
                }
                for s in event.stages
            ],
        },
        separators=(",", ":"),
    )


async def _forward(
    queue: asyncio.Queue[Event], stream: EventSourceResponse, shown: Callable[[str], bool]
) -> None:
    while True:
        event = await queue.get()
        if isinstance(event, PhaseChanged) and shown(event.app):
            await stream.send(as_json(event))
        elif isinstance(event, StagesChanged) and shown(event.app):
            # A named event: pages that know only phases never see it.
            await stream.send(stages_json(event), event="stage")


async def events(request: web.Request) -> web.StreamResponse:
    streams = request.app[STREAMS]
    if streams.closing:
        raise web.HTTPServiceUnavailable(reason="the daemon is stopping")
    if len(streams.open) >= MAX_STREAMS:
        # Each stream holds a queue of events and a connection: a bound on both.
        raise web.HTTPServiceUnavailable(
            reason=f"{MAX_STREAMS} event streams are open already", headers={"Retry-After": "30"}
        )
    sees = request.app[SEES]
    bus = request.app[BUS].bus
    queue = bus.subscribe(limit=QUEUE_LIMIT)
    try:
        async with sse_response(
            request, ping_interval=HEARTBEAT, send_timeout=SEND_TIMEOUT
        ) as stream:
            streams.open.add(stream)
            forward = asyncio.create_task(
                _forward(queue, stream, lambda app: sees(request, app)), name="dashboard-events"
            )
            # A failed write (the client went away) ends the stream as the heartbeat would.
            forward.add_done_callback(lambda _: stream.stop_streaming())
            try:
                # How soon a browser comes back after a restart; a block without data is no
                # event. It also gets the headers to the client at once.
                with contextlib.suppress(ConnectionResetError):
                    await stream.write(f"retry: {RETRY_MS}\r\n\r\n".encode())
                await stream.wait()
            finally:
                forward.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await forward
                streams.open.discard(stream)
    finally:
        bus.unsubscribe(queue)
    return stream


async def _end_streams(app: web.Application) -> None:
    streams = app[STREAMS]
    if streams.open:
        log.info("event_streams_closed", streams=len(streams.open))
    streams.close_all()


def setup(
    app: web.Application, source: HasBus, *, sees: Callable[[web.Request, str], bool]
) -> None:
    app[BUS] = source
    app[SEES] = sees
    app[STREAMS] = Streams()
    app.router.add_get("/events", events, name="dashboard-events", allow_head=False)
    app.on_shutdown.append(_end_streams)
