"""The audit log of a cluster: every daemon's lines in the lease table too, so any daemon
shows what all of them were asked. The local file stays the record of this daemon's own
lines; a table that cannot take a line is logged, never in the way of the request.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence

import structlog

from reconciler.adapters.audit import AuditEntry, AuditLog
from reconciler.cluster.table import LeaseTable
from reconciler.errors import ReconcilerError

log = structlog.get_logger("reconciler.audit")

READ_AT_MOST = 2000  # lines read from the table for one answer, the newest
KEEP = 400 * 86400.0  # seconds the table keeps a line by default ([cluster].audit_keep)


class SharedAudit:
    def __init__(
        self, local: AuditLog, table: LeaseTable, *, host_id: str, keep: float = KEEP
    ) -> None:
        self._local = local
        self._table = table
        self._host_id = host_id
        self._keep = keep
        self._count = itertools.count()

    async def record(self, entry: AuditEntry) -> None:
        await self._local.record(entry)
        key = f"{entry.time}#{self._host_id}#{next(self._count):08d}"
        try:
            await self._table.append_audit(key, entry.to_line(), purge_at=time.time() + self._keep)
        except ReconcilerError as exc:
            log.error(
                "audit_table_write_failed", error=str(exc), action=entry.action, app=entry.app
            )

    async def read(self, *, app: str | None = None, limit: int = 200) -> Sequence[AuditEntry]:
        """The newest entries of every daemon (of `app`), oldest first; this daemon's own
        file when the table cannot be read."""
        try:
            lines = await self._table.audit_lines(newest=READ_AT_MOST)
        except ReconcilerError as exc:
            log.warning("audit_table_read_failed", error=str(exc))
            return await self._local.read(app=app, limit=limit)
        entries = []
        for line in lines:
            try:
                entry = AuditEntry.from_line(line)
            except (ValueError, TypeError):
                continue
            if app is None or entry.app == app:
                entries.append(entry)
        return entries[-limit:]
