"""The HTTP listening socket of the daemon.

Every accepted connection holds a file descriptor, and a client that connects and sends
nothing (or half a request) would hold it for aiohttp's keep-alive timeout, an hour. A thousand
such clients exhaust a 1024-file limit: accept() fails, and so do git, config reads and
/healthz. So a new connection gets REQUEST_TIMEOUT to deliver its request line and headers, and
a kept-alive connection KEEPALIVE_TIMEOUT to deliver the next ones (aiohttp closes it then even
if half a request has arrived); both are closed without an answer. Connections beyond half the
file limit are closed as soon as they are accepted.
"""

from __future__ import annotations

import asyncio
import errno
import resource
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from reconciler.errors import ReconcilerError

log = structlog.get_logger("reconciler.listener")

REQUEST_TIMEOUT = 5.0  # seconds from accept() to a complete request head
KEEPALIVE_TIMEOUT = 15.0  # seconds from a response to the next complete request head
ACCEPT_LOG_INTERVAL = 1.0  # at most one line per this many seconds while accept() fails

# asyncio's accept loop reports these through the loop's exception handler, once for every
# queued connection on every retry, each with a traceback: thousands of lines a second.
_OUT_OF_FILES = (errno.EMFILE, errno.ENFILE)


def runner_options() -> dict[str, Any]:
    """Keyword arguments for web.AppRunner: aiohttp passes them on to each connection."""
    return {"keepalive_timeout": KEEPALIVE_TIMEOUT}


async def listen(runner: web.AppRunner, *, host: str, port: int) -> tuple[str, int]:
    """Start serving `runner` on host:port; the address actually bound (port 0 picks one).

    `runner.cleanup()` stops the listener again."""
    site = _Site(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        raise ReconcilerError(
            f"daemon.listen: cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from exc
    bound = runner.addresses[0] if runner.addresses else (host, port)
    return str(bound[0]), int(bound[1])


class _Site(web.BaseSite):
    """A TCP site with the limits above, whose failing accept() is logged at most once a
    second; registered with the runner, so its cleanup() stops it and puts back the loop's
    exception handler."""

    __slots__ = ("_host", "_port", "_previous_handler")

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._previous_handler: Any = None

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(_protocols(server), self._host, self._port)
        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(_AcceptErrors(server, self._previous_handler))

    async def stop(self) -> None:
        if self._server is not None:
            asyncio.get_running_loop().set_exception_handler(self._previous_handler)
        await super().stop()


def _protocols(server: web.Server) -> Callable[[], asyncio.Protocol]:
    loop = asyncio.get_running_loop()
    most = _most_connections()
    refused = _Throttled("connection_refused_at_limit")

    def accepted() -> asyncio.Protocol:
        if len(server.connections) >= most:
            refused(loop.time(), most_connections=most)
            return _Refused()
        handler = server()
        loop.call_later(REQUEST_TIMEOUT, _close_unless_requested, handler)
        return handler

    return accepted


def _most_connections() -> int:
    # About half the descriptors stay free for git, Docker, AWS and the config file, whatever
    # clients do; REQUEST_TIMEOUT alone would leave them all taken for seconds at a time.
    # (A burst can overshoot by an accept batch or two: aiohttp counts a connection a loop
    # iteration after it is accepted.)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(1, soft // 2) if soft != resource.RLIM_INFINITY else 1 << 30


class _Refused(asyncio.Protocol):
    """A connection past the limit: closed at once, before it costs more than its accept()."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


def _close_unless_requested(handler: RequestHandler) -> None:
    # aiohttp counts a request once its head is parsed (a malformed one too: it answers 400),
    # so a connection with none has no request in progress to cut short.
    if handler._request_count == 0:
        handler.force_close()


class _Throttled:
    """An event logged at most once per ACCEPT_LOG_INTERVAL, with how often it happened."""

    def __init__(self, event: str) -> None:
        self._event = event
        self._next_line = 0.0
        self._count = 0

    def __call__(self, now: float, **fields: Any) -> None:
        self._count += 1
        if now < self._next_line:
            return
        self._next_line = now + ACCEPT_LOG_INTERVAL
        log.error(self._event, times=self._count, **fields)
        self._count = 0


class _AcceptErrors:
    """Loop exception handler: accept() failing for want of descriptors becomes one line a
    second; everything else goes to the handler it replaced."""

    def __init__(self, server: web.Server, previous: Any) -> None:
        self._server = server
        self._previous = previous
        self._failed = _Throttled("accept_failed_out_of_files")

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if (
            str(context.get("message", "")).startswith("socket.accept()")
            and isinstance(error, OSError)
            and error.errno in _OUT_OF_FILES
        ):
            self._failed(
                loop.time(),
                error=error.strerror,
                connections=len(self._server.connections),
                file_limit=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            )
        elif self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)
