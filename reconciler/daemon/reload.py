"""Watching the config file: a changed file is applied within 2 s, an invalid one refused.

The file is checked every CONFIG_CHECK_INTERVAL and on request (SIGHUP). A changed file is
read again after CONFIG_SETTLE and applied only if it reads the same: an editor that
truncates and then writes must not make the daemon report a bogus error.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from reconciler.config import Config, parse_config
from reconciler.errors import ConfigError

log = structlog.get_logger("reconciler.reload")

CONFIG_CHECK_INTERVAL = 1.0
CONFIG_SETTLE = 0.2


def digest(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()


class ConfigWatcher:
    def __init__(
        self,
        path: Path,
        *,
        current: bytes,
        apply: Callable[[Config, str], Awaitable[None]],
        reject: Callable[[list[str]], None],
        requested: asyncio.Event | None = None,
    ) -> None:
        self._path = path
        # The bytes last read from the file, good or bad; None once it could not be read, so
        # the file reappearing is noticed even with the same content.
        self._bytes: bytes | None = current
        self._apply = apply
        self._reject = reject
        # Set to read the file again now (SIGHUP): the daemon's, which may be set before
        # the watcher runs.
        self._requested = requested or asyncio.Event()

    def request(self) -> None:
        """Read the file again now (SIGHUP), even if it looks unchanged."""
        self._requested.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._requested.wait(), CONFIG_CHECK_INTERVAL)
            forced = self._requested.is_set()
            self._requested.clear()
            try:
                await self.check(forced=forced)
            except Exception:
                # A bug here must not end reloading for the rest of the daemon's life.
                log.exception("config_reload_crashed")

    async def check(self, *, forced: bool) -> None:
        path = self._path
        try:
            current = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            if self._bytes is not None:  # reported once, not every second
                self._bytes = None
                reason = "file not found" if isinstance(exc, FileNotFoundError) else exc.strerror
                self._reject([f"{path}: {reason}"])
            return
        if current == self._bytes and not forced:
            return
        if not forced:
            await asyncio.sleep(CONFIG_SETTLE)
            try:
                settled = await asyncio.to_thread(path.read_bytes)
            except OSError:
                return  # the next check reports it
            if settled != current:
                return  # still being written; the next check looks again
        self._bytes = current
        try:
            # Parsed from the very bytes whose digest is reported as the config in force.
            new = parse_config(current.decode("utf-8"), source=str(path))
        except UnicodeDecodeError as exc:
            self._reject([f"{path}: cannot read: {exc}"])
            return
        except ConfigError as exc:
            self._reject(exc.problems)
            return
        await self._apply(new, digest(current))
