"""The sd_notify protocol, spoken directly: READY=1, STATUS=..., WATCHDOG=1, STOPPING=1.

No libsystemd needed: a datagram to the socket named in NOTIFY_SOCKET (a path, or `@name`
for the abstract namespace). Outside systemd the variable is unset and every call is a
no-op. The watchdog ping is sent from a task on the event loop, never from a thread, so a
blocked loop stops the pings and systemd restarts the process, which is the point of the
watchdog.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger("reconciler.systemd")


class Notifier:
    """Tells systemd how the daemon is doing; built from the environment systemd sets."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace
        elif not address.startswith("/"):
            address = ""  # unset, or a transport this does not speak (e.g. vsock)
        self._address = address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_interval: float | None = None
        # WATCHDOG_PID names the process systemd watches; a child that inherited the
        # variables must not ping on its parent's behalf.
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            # Ping at half the timeout, as sd_watchdog_enabled(3) recommends.
            self.watchdog_interval = int(usec) / 2_000_000

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, message: str) -> None:
        """One datagram; a failure is logged, never raised: systemd's absence is not fatal."""
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # Never block the event loop: a full queue drops the message instead.
                sock.setblocking(False)
                sock.sendto(message.encode(), self._address)
        except OSError as exc:
            log.warning("sd_notify_failed", message=message.split("\n", 1)[0], error=str(exc))

    def ready(self, status: str) -> None:
        self.send(f"READY=1\nSTATUS={_one_line(status)}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={_one_line(status)}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    async def watchdog(self, healthy: Callable[[], bool] | None = None) -> None:
        """Ping forever from the event loop; returns at once when WatchdogSec is not set.

        With `healthy`, a ping is skipped while it returns False, so systemd also restarts
        a process whose loop still turns but whose work has died.
        """
        if self.watchdog_interval is None or not self.enabled:
            return
        while True:
            if healthy is None or healthy():
                self.send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_interval)


def _one_line(text: str) -> str:
    # A newline would start a new assignment in the message.
    return " ".join(text.splitlines())
