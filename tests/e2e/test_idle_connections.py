"""Connections that never send a complete request, against `reconciler run` under a default
1024-file limit: enough of them to take every descriptor the daemon has left. It holds half its
limit, closes the rest at once and the held ones after the request timeout, answers /healthz
again, never runs out of descriptors itself (no failing accept(), config reads go on) and
keeps deploying.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from reconciler.daemon import listener
from tests.support.daemon_process import DaemonProcess
from tests.support.services import require
from tests.support.world import World

pytestmark = [pytest.mark.slow]

NOFILE = 1024  # the daemon's limit: the default soft limit of most distributions
BEYOND = 50  # connections past the daemon's last free descriptor
HALF_EVERY = 10  # every tenth connection sends half a request line, the others nothing
MARGIN = 20.0  # seconds allowed beyond the request timeout; bounds the wait, measures nothing


async def open_idle(address: tuple[str, int], count: int) -> list[socket.socket]:
    loop = asyncio.get_running_loop()
    opened = []
    for index in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        opened.append(sock)
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, address), 10)
        if index % HALF_EVERY == 0:
            # The daemon may have closed it already: past its limit, it does at once.
            with contextlib.suppress(ConnectionError):
                sock.send(b"GET /healthz HT")
    return opened


def open_files(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


def closed_by_daemon(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


async def until_healthy(daemon: DaemonProcess, deadline: float) -> None:
    while True:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            code, _ = await daemon.get("/healthz", timeout=aiohttp.ClientTimeout(total=2))
            if code == 200:
                return
        if time.monotonic() > deadline:
            raise AssertionError("/healthz did not answer again")
        await asyncio.sleep(0.2)


def lines_with(daemon: DaemonProcess, *words: str) -> list[str]:
    return [line for line in daemon.text().splitlines() if any(w in line for w in words)]


@pytest.fixture
def client_files() -> Iterator[None]:
    """This test process holds a thousand sockets too: raise its soft limit for the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = NOFILE + 1024
    raised = hard
    if hard != resource.RLIM_INFINITY and hard < needed:
        try:  # root may raise its own hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, needed))
            raised = needed
        except (ValueError, OSError):
            require(False, f"the hard file limit {hard} leaves no room for {NOFILE} sockets")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), raised))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, raised))


async def test_idle_connections_exhausting_files_are_closed_and_the_daemon_recovers(
    world: World, client_files: None
) -> None:
    daemon = DaemonProcess(world.write_config(), world.root / "daemon.log", nofile=NOFILE)
    sockets: list[socket.socket] = []
    try:
        await daemon.start()
        await daemon.wait_for(world.name, lambda s: s["phase"] == "InSync", what="in sync")
        host, port = daemon.url.removeprefix("http://").rsplit(":", 1)
        in_use = open_files(daemon.pid)
        count = NOFILE - in_use + BEYOND
        flood = time.monotonic()
        sockets = await open_idle((host, int(port)), count)

        await until_healthy(daemon, time.monotonic() + listener.REQUEST_TIMEOUT + MARGIN)
        deadline = time.monotonic() + 2 * listener.REQUEST_TIMEOUT + MARGIN
        while not all(closed_by_daemon(sock) for sock in sockets):
            assert time.monotonic() < deadline, "idle connections still open"
            await asyncio.sleep(0.5)

        refusals = lines_with(daemon, "connection_refused_at_limit")
        seconds = time.monotonic() - flood
        assert 1 <= len(refusals) <= seconds / listener.ACCEPT_LOG_INTERVAL + 1, refusals
        assert lines_with(daemon, "accept_failed", "socket.accept()", "Too many open files") == []
        assert "Traceback" not in daemon.text()

        head = world.repo.commit({"app.txt": "version 2\n"}, "after the flood")
        code, body = await daemon.post(f"/apps/{world.name}/sync")
        assert code == 202, body
        await daemon.wait_for(
            world.name,
            lambda s: s["phase"] == "InSync" and s["live"]["image"] == world.image(head),
            what="the new revision deployed",
        )
        assert daemon.stop() == 0, daemon.text()
    finally:
        for sock in sockets:
            sock.close()
        daemon.kill()
