"""App state in the cluster's table, behind the same interface as the files in state_dir.

An app's memory is read once, when this daemon wins its lease (the lease manager hands it
over with `adopt`), and written through on every change in a transaction with a check that
the lease is still this daemon's at that version. A write refused by the check means another
daemon holds the app now: it is recorded like a full disk, so no deploy starts, and the loop
is stopped by the lease manager at its next look.
"""

from __future__ import annotations

import asyncio

import structlog

from reconciler.app.state import AppMemory, cleared, decode_memory, encode_memory, why_unreadable
from reconciler.cluster.table import LeaseTable
from reconciler.errors import ReconcilerError

log = structlog.get_logger("reconciler.cluster")


class TableStateStore:
    def __init__(self, table: LeaseTable, *, host_id: str) -> None:
        self._table = table
        self._host_id = host_id
        self._memories: dict[str, AppMemory] = {}
        self._versions: dict[str, int] = {}
        self._write_errors: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def adopt(self, app: str, *, version: int, text: str | None) -> AppMemory:
        """The app's memory as read when lease `version` was won (None: it has none yet);
        from now on it is written under that lease."""
        memory = AppMemory() if text is None else _decoded(app, text)
        self._memories[app] = memory
        self._versions[app] = version
        self._write_errors.pop(app, None)
        return memory

    def load(self, app: str) -> AppMemory:
        memory = self._memories.get(app)
        if memory is None:
            raise RuntimeError(f"the state of {app!r} is read when its lease is won, not here")
        return memory

    def forget(self, app: str) -> None:
        self._memories.pop(app, None)
        self._versions.pop(app, None)
        self._write_errors.pop(app, None)

    def write_error(self, app: str) -> str | None:
        return self._write_errors.get(app)

    async def reset(self, app: str) -> AppMemory:
        memory = cleared(self.load(app))
        await self.save(app)
        return memory

    async def save(self, app: str, memory: AppMemory | None = None) -> bool:
        if memory is not None:
            self._memories[app] = memory
        lock = self._locks.setdefault(app, asyncio.Lock())
        async with lock:
            # Encoded under the lock: two saves in flight never land older over newer.
            version = self._versions.get(app)
            if version is None:
                return self._failed(app, f"this daemon does not hold the lease of {app!r}")
            try:
                written = await self._table.write_state(
                    app, me=self._host_id, version=version, memory=encode_memory(self.load(app))
                )
            except ReconcilerError as exc:
                return self._failed(app, f"cannot write the state of {app!r}: {exc}")
            if not written:
                return self._failed(app, f"the lease of {app!r} was taken by another daemon")
        if self._write_errors.pop(app, None) is not None:
            log.info("state_write_recovered", app=app)
        return True

    def _failed(self, app: str, reason: str) -> bool:
        if self._write_errors.get(app) != reason:
            log.error("state_write_failed", app=app, error=reason)
        self._write_errors[app] = reason
        return False


def _decoded(app: str, text: str) -> AppMemory:
    """The memory in the table; a damaged one fails closed, as a damaged file does."""
    try:
        return decode_memory(text)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = f"state in the table damaged ({why_unreadable(exc)}); `reconciler sync {app}`"
        log.error("state_damaged", app=app, error=reason)
        return AppMemory(damaged=reason)


async def peek_all(table: LeaseTable) -> dict[str, AppMemory]:
    """Every app's memory as the table has it, for read-only commands."""
    found: dict[str, AppMemory] = {}
    for app, text in (await table.read_states()).items():
        found[app] = _decoded(app, text)
    return found
