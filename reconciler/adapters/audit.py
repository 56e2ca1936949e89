"""The audit log: one JSON line per state-changing request, accepted or refused.

`<state_dir>/audit.jsonl`, opened for appending only (mode 0600) and synced after each line,
so a line once answered is on disk and nothing earlier is ever rewritten. Lines are written
from a worker thread one at a time, in the order the requests were decided. In a cluster the
same entry also goes to the lease table (cluster/), so any daemon shows what all of them did.

An entry names who (identity, role, how they proved it), from where (the peer address, for
the record, never for a decision), what (action, app, arguments) and how it ended
(`accepted`, or `refused: <why>`). What a client sent is cut to a bounded size first.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

log = structlog.get_logger("reconciler.audit")

MAX_TEXT = 200  # characters kept of any one value a client sent
MAX_ARGS = 8  # arguments kept of one request


@dataclass(frozen=True)
class AuditEntry:
    time: str
    identity: str
    role: str
    via: str
    address: str
    action: str
    app: str | None
    args: dict[str, str] = field(default_factory=dict)
    result: str = "accepted"

    @classmethod
    def now(
        cls,
        *,
        identity: str,
        role: str,
        via: str,
        address: str,
        action: str,
        app: str | None,
        args: Mapping[str, Any] | None = None,
        result: str = "accepted",
    ) -> AuditEntry:
        kept = dict(list((args or {}).items())[:MAX_ARGS])
        return cls(
            time=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            identity=_cut(identity),
            role=role,
            via=via,
            address=_cut(address),
            action=action,
            app=None if app is None else _cut(app),
            args={_cut(str(k)): _cut(str(v)) for k, v in kept.items()},
            result=_cut(result),
        )

    def to_line(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=True)

    @classmethod
    def from_line(cls, line: str) -> AuditEntry:
        raw = json.loads(line)
        if not isinstance(raw, dict):
            raise ValueError("an audit line is a JSON object")
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


class AuditTrail(Protocol):
    """Where audit entries go and are read back (the file here, or the cluster's table too)."""

    async def record(self, entry: AuditEntry) -> None: ...

    async def read(self, *, app: str | None = None, limit: int = 200) -> Sequence[AuditEntry]: ...


class AuditLog:
    """The file; `record` appends, `read` answers the newest entries, optionally of one app."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = asyncio.Lock()

    async def record(self, entry: AuditEntry) -> None:
        """Append `entry` and sync it; an audit line that cannot be written is logged as an
        error with the entry (the request has been decided by then)."""
        async with self._lock:
            try:
                await asyncio.to_thread(self._append, entry.to_line())
            except OSError as exc:
                log.error("audit_write_failed", error=str(exc), **asdict(entry))

    def _append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(descriptor, (line + "\n").encode())
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    async def read(self, *, app: str | None = None, limit: int = 200) -> Sequence[AuditEntry]:
        """The newest `limit` entries (of `app` when given), oldest first."""
        return await asyncio.to_thread(self._read, app, limit)

    def _read(self, app: str | None, limit: int) -> list[AuditEntry]:
        kept: deque[AuditEntry] = deque(maxlen=limit)
        kept.extend(e for e in self._entries() if app is None or e.app == app)
        return list(kept)

    def _entries(self) -> Iterator[AuditEntry]:
        try:
            with self.path.open(encoding="utf-8") as lines:
                for number, line in enumerate(lines, start=1):
                    try:
                        yield AuditEntry.from_line(line)
                    except (ValueError, TypeError) as exc:
                        log.warning("audit_line_unreadable", line=number, error=str(exc)[:200])
        except FileNotFoundError:
            return
