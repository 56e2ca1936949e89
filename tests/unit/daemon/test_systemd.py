"""systemd integration: sd_notify against a real datagram socket, and the unit file.

The socket plays systemd's part: it is bound where NOTIFY_SOCKET points (a path, or an
abstract `@name`) and collects what the daemon sends.
"""

from __future__ import annotations

import asyncio
import configparser
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from reconciler.config import parse_config
from reconciler.daemon.root import Daemon
from reconciler.daemon.systemd import Notifier
from tests.support.config import config_text
from tests.support.inprocess import started

UNIT = Path(__file__).parents[3] / "systemd" / "reconciler.service"
WAIT = 15.0  # bound on every wait for a message; generous, since it only matters on failure


class NotifySocket:
    """The receiving end of sd_notify, read from the event loop as datagrams arrive.

    `on_message` runs in the reader callback, so it sees the daemon exactly as it was when
    the message could first be read, before the daemon's coroutines run any further.
    """

    def __init__(self, address: str, *, on_message: Callable[[str], None] | None = None) -> None:
        self.address = address  # as NOTIFY_SOCKET spells it
        self.messages: list[str] = []
        self._on_message = on_message
        self._arrived = asyncio.Event()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self._sock.setblocking(False)
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self.read_pending)

    def read_pending(self) -> list[str]:
        """Take every datagram already queued, without waiting; returns the new ones."""
        new: list[str] = []
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                break
            message = data.decode()
            new.append(message)
            self.messages.append(message)
            if self._on_message is not None:
                self._on_message(message)
        if new:
            self._arrived.set()
        return new

    def indexes(self, line: str) -> list[int]:
        """Positions of the messages that carry `line` (e.g. "READY=1")."""
        return [i for i, m in enumerate(self.messages) if line in m.split("\n")]

    async def wait_for(self, line: str, *, count: int = 1, after: int = -1) -> int:
        """Wait until `count` messages after position `after` carry `line`; the last's index."""
        async with asyncio.timeout(WAIT):
            while True:
                found = [i for i in self.indexes(line) if i > after]
                if len(found) >= count:
                    return found[count - 1]
                self._arrived.clear()
                await self._arrived.wait()

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 107 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="sdn-") as name:
        yield Path(name)


@pytest.fixture(params=["path", "abstract"])
def notify_address(request: pytest.FixtureRequest, short_dir: Path) -> str:
    if request.param == "abstract":
        return f"@reconciler-test-{uuid.uuid4().hex}"
    return str(short_dir / "notify")


# --- the daemon ------------------------------------------------------------------------


async def test_ready_once_listening_then_status_watchdog_and_stopping(
    notify_address: str, tmp_path: Path
) -> None:
    """READY=1 (with a STATUS) arrives only once the HTTP port accepts connections; then
    status updates and watchdog pings flow, and STOPPING=1 comes first thing on stop."""
    config = parse_config(
        config_text(daemon={"listen": "127.0.0.1:0", "state_dir": tmp_path / "state"})
    )
    notifier = Notifier(environ={"NOTIFY_SOCKET": notify_address, "WATCHDOG_USEC": "400000"})
    supervisor = Daemon(config=config, notifier=notifier)
    accepted_when_ready: list[bool] = []

    def on_message(message: str) -> None:
        if "READY=1" in message.split("\n"):
            accepted_when_ready.append(_accepts(supervisor.listening))

    listener = NotifySocket(notify_address, on_message=on_message)
    try:
        async with started(supervisor, start_timeout=WAIT, stop_timeout=WAIT) as running:
            ready = await listener.wait_for("READY=1")
            assert accepted_when_ready == [True]
            assert any(
                line.startswith("STATUS=0 apps") for line in listener.messages[ready].split("\n")
            )
            assert supervisor.listening is not None
            host, port = supervisor.listening
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://{host}:{port}/healthz") as answer,
            ):
                assert answer.status == 200

            # The supervisor's own watchdog task pings, and its status reporter speaks up.
            await listener.wait_for("WATCHDOG=1", count=2, after=ready)
            await listener.wait_for("STATUS=0 apps: 0 in sync, 0 deploying, 0 failed", after=ready)
            assert listener.indexes("STOPPING=1") == []

            supervisor.request_stop()
            async with asyncio.timeout(WAIT):
                await running
            stopping = await listener.wait_for("STOPPING=1")
            assert stopping > ready
            assert len(listener.indexes("READY=1")) == 1
    finally:
        listener.close()


def _accepts(address: tuple[str, int] | None) -> bool:
    if address is None:
        return False
    try:
        with socket.create_connection(address, timeout=2):
            return True
    except OSError:
        return False


# --- the watchdog ----------------------------------------------------------------------


async def test_watchdog_pings_come_from_the_event_loop(notify_address: str) -> None:
    """Pings repeat while the loop runs, none arrives while it is blocked, and they resume.

    A ping sent from a thread would keep coming during the block and hide a hung loop from
    systemd; this is what the test rules out.
    """
    listener = NotifySocket(notify_address)
    notifier = Notifier(environ={"NOTIFY_SOCKET": notify_address, "WATCHDOG_USEC": "200000"})
    assert notifier.watchdog_interval == pytest.approx(0.1)  # half of WATCHDOG_USEC
    pinging = asyncio.create_task(notifier.watchdog())
    during_block: list[str] = []
    block_over = asyncio.Event()

    def block_the_loop() -> None:
        listener.read_pending()  # whatever was sent before the block
        time.sleep(1.0)  # ten watchdog intervals with the loop stuck
        during_block.extend(listener.read_pending())
        block_over.set()

    try:
        first = await listener.wait_for("WATCHDOG=1", count=3)
        asyncio.get_running_loop().call_soon(block_the_loop)
        async with asyncio.timeout(WAIT):
            await block_over.wait()
        after_block = len(listener.messages) - 1

        assert first >= 2
        assert during_block == []
        await listener.wait_for("WATCHDOG=1", count=2, after=after_block)
    finally:
        pinging.cancel()
        await asyncio.gather(pinging, return_exceptions=True)
        listener.close()


async def test_no_pings_while_the_daemon_reports_itself_unhealthy(notify_address: str) -> None:
    """With a health check, pings stop while it fails (say, an app loop died) and resume."""
    listener = NotifySocket(notify_address)
    notifier = Notifier(environ={"NOTIFY_SOCKET": notify_address, "WATCHDOG_USEC": "200000"})
    health = {"ok": True}
    pinging = asyncio.create_task(notifier.watchdog(healthy=lambda: health["ok"]))
    try:
        await listener.wait_for("WATCHDOG=1", count=2)
        health["ok"] = False
        notifier.status("unhealthy")  # datagrams keep their order: earlier pings come first
        unhealthy = await listener.wait_for("STATUS=unhealthy")
        for _ in range(5):  # five watchdog intervals of a failing check
            await asyncio.sleep(notifier.watchdog_interval or 0)
        notifier.status("healthy")
        healthy = await listener.wait_for("STATUS=healthy")
        assert [i for i in listener.indexes("WATCHDOG=1") if unhealthy < i < healthy] == []

        health["ok"] = True
        await listener.wait_for("WATCHDOG=1", after=healthy)
    finally:
        pinging.cancel()
        await asyncio.gather(pinging, return_exceptions=True)
        listener.close()


@pytest.mark.parametrize(
    ("environ", "enabled"),
    [
        ({"WATCHDOG_USEC": "200000"}, True),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}, True),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getppid())}, False),
        ({"WATCHDOG_USEC": "0"}, False),
        ({}, False),
    ],
    ids=["usec", "our-pid", "another-pid", "zero", "unset"],
)
async def test_watchdog_only_for_the_watched_process(
    short_dir: Path, environ: dict[str, str], enabled: bool
) -> None:
    """WATCHDOG_PID naming another process (we inherited its variables) disables pinging."""
    address = str(short_dir / "notify")
    listener = NotifySocket(address)
    notifier = Notifier(environ={"NOTIFY_SOCKET": address, **environ})
    pinging = asyncio.create_task(notifier.watchdog())
    try:
        if enabled:
            await listener.wait_for("WATCHDOG=1", count=2)
        else:
            async with asyncio.timeout(WAIT):
                await pinging  # returns at once instead of pinging forever
            notifier.status("marker")  # anything sent earlier arrives before this
            await listener.wait_for("STATUS=marker")
            assert listener.indexes("WATCHDOG=1") == []
    finally:
        pinging.cancel()
        await asyncio.gather(pinging, return_exceptions=True)
        listener.close()


async def test_notifications_are_one_datagram_each_and_status_stays_one_line(
    notify_address: str,
) -> None:
    listener = NotifySocket(notify_address)
    notifier = Notifier(environ={"NOTIFY_SOCKET": notify_address})
    try:
        notifier.ready("2 apps\nREADY=0")
        notifier.status("busy")
        notifier.stopping()
        await listener.wait_for("STOPPING=1")
        assert listener.messages == [
            "READY=1\nSTATUS=2 apps READY=0",
            "STATUS=busy",
            "STOPPING=1",
        ]
    finally:
        listener.close()


def test_without_notify_socket_nothing_is_sent_and_nothing_fails(short_dir: Path) -> None:
    """Outside systemd (or with a socket that went away) the daemon carries on."""
    assert not Notifier(environ={}).enabled
    assert not Notifier(environ={"NOTIFY_SOCKET": "relative/path"}).enabled
    gone = Notifier(environ={"NOTIFY_SOCKET": str(short_dir / "nobody-listens")})
    gone.ready("x")
    gone.stopping()


# --- the unit file ---------------------------------------------------------------------


def _unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def test_unit_is_notify_with_a_watchdog_and_keeps_docker_and_network() -> None:
    """Type=notify with WatchdogSec; the hardening still lets it reach the Docker socket
    (docker group, AF_UNIX) and the network (AF_INET/AF_INET6, no private network)."""
    service = _unit()["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["WatchdogSec"]
    assert service["ExecStart"].split()[1:] == [
        "run",
        "--config",
        "/etc/reconciler/reconciler.toml",
    ]
    assert "docker" in service["SupplementaryGroups"].split()
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= set(service["RestrictAddressFamilies"].split())
    assert service.get("PrivateNetwork", "no") == "no"
    assert service.get("PrivateUsers", "no") == "no"  # would unmap the docker group
    assert "IPAddressDeny" not in service
    # SIGTERM stops the daemon within 10 s, so systemd must wait at least that long.
    assert int(service["TimeoutStopSec"].removesuffix("s")) > 10
    # An invalid config exits 2 and needs a human: restarting it every few seconds won't help.
    assert "2" in service["RestartPreventExitStatus"].split()
