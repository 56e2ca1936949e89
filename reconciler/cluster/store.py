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

from reconciler.app.cache import PerAppCache
from reconciler.app.state import (
    AppMemory,
    CachedStateStore,
    decode_memory,
    encode_history,
    encode_memory,
    why_unreadable,
)
from reconciler.cluster.table import LeaseTable
from reconciler.errors import ReconcilerError

log = structlog.get_logger("reconciler.cluster")


class TableStateStore(CachedStateStore):
    def __init__(self, table: LeaseTable, *, host_id: str) -> None:
        super().__init__(PerAppCache(_not_adopted, logger="reconciler.cluster", subject="state"))
        self._table = table
        self._host_id = host_id
        self._versions: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # The history text the table holds apart, per app: it is written only when it changed.
        self._history_sent: dict[str, str | None] = {}

    def adopt(
        self, app: str, *, version: int, text: str | None, history: str | None = None
    ) -> AppMemory:
        """The app's memory as read when lease `version` was won (None: it has none yet),
        with its history kept apart (None: none, or only in the memory, as an older daemon
        wrote it); from now on it is written under that lease."""
        memory = AppMemory() if text is None else _decoded(app, text, history)
        self._memories.put(app, memory)
        # What the table holds apart; the first write sends the history unless it is that.
        self._history_sent[app] = history
        self._versions[app] = version
        self._memories.clear_error(app)
        return memory

    def forget(self, app: str) -> None:
        super().forget(app)
        self._versions.pop(app, None)
        self._history_sent.pop(app, None)

    async def save(self, app: str, memory: AppMemory | None = None) -> bool:
        if memory is not None:
            self._memories.put(app, memory)
        lock = self._locks.setdefault(app, asyncio.Lock())
        async with lock:
            # Encoded under the lock: two saves in flight never land older over newer.
            version = self._versions.get(app)
            if version is None:
                reason = f"this daemon does not hold the lease of {app!r}"
                return self._memories.write_failed(app, reason)
            memory = self.load(app)
            history = encode_history(memory.history)
            changed = history != self._history_sent.get(app)
            try:
                written = await self._table.write_state(
                    app,
                    me=self._host_id,
                    version=version,
                    memory=encode_memory(memory, with_history=False),
                    history=history if changed else None,
                )
            except ReconcilerError as exc:
                reason = f"cannot write the state of {app!r}: {exc}"
                return self._memories.write_failed(app, reason)
            if not written:
                reason = f"the lease of {app!r} was taken by another daemon"
                return self._memories.write_failed(app, reason)
            self._history_sent[app] = history
        return self._memories.written(app)


def _not_adopted(app: str) -> AppMemory:
    raise RuntimeError(f"the state of {app!r} is read when its lease is won, not here")


def _decoded(app: str, text: str, history: str | None = None) -> AppMemory:
    """The memory in the table; a damaged one fails closed, as a damaged file does."""
    try:
        return decode_memory(text, history)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = f"state in the table damaged ({why_unreadable(exc)}); `reconciler sync {app}`"
        log.error("state_damaged", app=app, error=reason)
        return AppMemory(damaged=reason)


async def peek_all(table: LeaseTable) -> dict[str, AppMemory]:
    """Every app's memory as the table has it, for read-only commands."""
    found: dict[str, AppMemory] = {}
    for app, (text, history) in (await table.read_states()).items():
        found[app] = _decoded(app, text, history)
    return found
