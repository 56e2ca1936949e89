"""The listener against a bare aiohttp app: connections that send no complete request are
closed, kept-alive ones idle too long and ones past the limit as well, requests in time are
answered, and a failing accept() is one log line a second. Timeouts are made small here; every
wait is bounded, none is measured."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import pytest
import structlog
from aiohttp import web

from reconciler.daemon import listener
from reconciler.daemon.listener import listen, runner_options
from reconciler.errors import ReconcilerError

MARGIN = 5.0  # seconds allowed beyond a timeout before a test fails
REQUEST = b"GET /hello HTTP/1.1\r\nHost: test\r\n\r\n"


async def hello(_request: web.Request) -> web.Response:
    return web.Response(text="hello")


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, int]]:
    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app, access_log=None, **runner_options())
    await runner.setup()
    try:
        yield await listen(runner, host="127.0.0.1", port=0)
    finally:
        await runner.cleanup()


@pytest.fixture
def short_request_timeout(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(listener, "REQUEST_TIMEOUT", 0.3)
    return 0.3


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if line)
    return head + await reader.readexactly(int(fields[b"Content-Length"]))


async def closed_within(reader: asyncio.StreamReader, timeout: float) -> bool:
    try:
        async with asyncio.timeout(timeout + MARGIN):
            return await reader.read() == b""
    except ConnectionResetError:
        return True


async def test_a_normal_request_is_answered(served: tuple[str, int]) -> None:
    host, port = served
    async with aiohttp.ClientSession() as http, http.get(f"http://{host}:{port}/hello") as answer:
        assert (answer.status, await answer.text()) == (200, "hello")


async def test_a_connection_that_sends_nothing_is_closed(
    short_request_timeout: float, served: tuple[str, int]
) -> None:
    reader, writer = await asyncio.open_connection(*served)
    try:
        assert await closed_within(reader, short_request_timeout)
    finally:
        writer.close()


async def test_half_a_request_line_is_closed_without_an_answer(
    short_request_timeout: float, served: tuple[str, int]
) -> None:
    reader, writer = await asyncio.open_connection(*served)
    try:
        writer.write(b"GET /hello HT")
        assert await closed_within(reader, short_request_timeout)
    finally:
        writer.close()


async def test_a_slow_but_complete_request_is_answered(
    monkeypatch: pytest.MonkeyPatch, served: tuple[str, int]
) -> None:
    monkeypatch.setattr(listener, "REQUEST_TIMEOUT", 3.0)
    reader, writer = await asyncio.open_connection(*served)
    try:
        for piece in (REQUEST[:5], REQUEST[5:20], REQUEST[20:]):
            writer.write(piece)
            await asyncio.sleep(0.1)
        assert (await read_response(reader)).endswith(b"hello")
    finally:
        writer.close()


async def test_a_kept_alive_connection_serves_requests_after_the_request_timeout(
    short_request_timeout: float, served: tuple[str, int]
) -> None:
    """The request timeout runs from accept(); later requests have the keep-alive timeout."""
    reader, writer = await asyncio.open_connection(*served)
    try:
        writer.write(REQUEST)
        assert (await read_response(reader)).endswith(b"hello")
        await asyncio.sleep(short_request_timeout * 2)
        writer.write(REQUEST)
        assert (await read_response(reader)).endswith(b"hello")
    finally:
        writer.close()


async def test_a_kept_alive_connection_left_idle_is_closed(
    monkeypatch: pytest.MonkeyPatch, short_request_timeout: float
) -> None:
    monkeypatch.setattr(listener, "KEEPALIVE_TIMEOUT", 0.5)
    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app, access_log=None, **runner_options())
    await runner.setup()
    try:
        reader, writer = await asyncio.open_connection(
            *await listen(runner, host="127.0.0.1", port=0)
        )
        try:
            writer.write(REQUEST)
            assert (await read_response(reader)).endswith(b"hello")
            assert await closed_within(reader, 0.5)
        finally:
            writer.close()
    finally:
        await runner.cleanup()


async def test_connections_past_the_limit_are_closed_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The request timeout is left at its default: only the limit can close the third."""
    monkeypatch.setattr(listener, "_most_connections", lambda: 2)
    runner = web.AppRunner(web.Application(), **runner_options())
    await runner.setup()
    held = []
    try:
        address = await listen(runner, host="127.0.0.1", port=0)
        with structlog.testing.capture_logs() as logged:
            for _ in range(2):
                held.append(await asyncio.open_connection(*address))
                await asyncio.sleep(0.1)  # let the daemon see it before the next one
            reader, writer = await asyncio.open_connection(*address)
            held.append((reader, writer))
            assert await closed_within(reader, 0)
        assert [(e["event"], e["times"]) for e in logged] == [("connection_refused_at_limit", 1)]
    finally:
        for _, writer in held:
            writer.close()
        await runner.cleanup()


async def test_cleanup_closes_the_listener_and_restores_the_exception_handler() -> None:
    loop = asyncio.get_running_loop()
    before = loop.get_exception_handler()
    runner = web.AppRunner(web.Application(), **runner_options())
    await runner.setup()
    address = await listen(runner, host="127.0.0.1", port=0)
    assert loop.get_exception_handler() is not before
    await runner.cleanup()
    assert loop.get_exception_handler() is before
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(*address)


async def test_an_address_in_use_is_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        runner = web.AppRunner(web.Application())
        await runner.setup()
        try:
            with pytest.raises(ReconcilerError) as caught:
                await listen(runner, host="127.0.0.1", port=port)
        finally:
            await runner.cleanup()
    message = str(caught.value)
    assert message.startswith(f"daemon.listen: cannot listen on 127.0.0.1:{port}: ")
    assert "address already in use" in message.lower()
    assert "\n" not in message


class Clock:
    """The two things the handler asks of its loop: the time, and the default handler."""

    def __init__(self) -> None:
        self.now = 100.0
        self.defaulted: list[str] = []

    def time(self) -> float:
        return self.now

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.defaulted.append(context["message"])


def accept_failure(code: int) -> dict[str, Any]:
    return {
        "message": "socket.accept() out of system resource",
        "exception": OSError(code, os.strerror(code)),
    }


async def unused(_request: web.BaseRequest) -> web.StreamResponse:
    raise AssertionError("no request is made")


def accept_errors(clock: Clock) -> tuple[listener._AcceptErrors, asyncio.AbstractEventLoop]:
    loop = cast(asyncio.AbstractEventLoop, clock)
    return listener._AcceptErrors(web.Server(unused, loop=loop), None), loop


def test_accept_failures_for_want_of_files_are_one_line_a_second() -> None:
    clock = Clock()
    handler, loop = accept_errors(clock)
    with structlog.testing.capture_logs() as logged:
        for _ in range(500):
            handler(loop, accept_failure(errno.EMFILE))
        clock.now += listener.ACCEPT_LOG_INTERVAL
        handler(loop, accept_failure(errno.ENFILE))
    assert [(e["event"], e["times"]) for e in logged] == [
        ("accept_failed_out_of_files", 1),
        ("accept_failed_out_of_files", 500),
    ]
    assert clock.defaulted == []


def test_other_loop_errors_go_to_the_handler_replaced() -> None:
    clock = Clock()
    handler, loop = accept_errors(clock)
    handler(loop, {"message": "Task exception was never retrieved", "exception": ValueError()})
    handler(loop, accept_failure(errno.ECONNABORTED))
    assert clock.defaulted == [
        "Task exception was never retrieved",
        "socket.accept() out of system resource",
    ]
