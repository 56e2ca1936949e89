"""The audit log: appended and synced in order, bounded per value, read back by app."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

from structlog.testing import capture_logs

from reconciler.adapters.audit import MAX_TEXT, AuditEntry, AuditLog


def entry(app: str | None, action: str = "sync", **fields: str) -> AuditEntry:
    return AuditEntry.now(
        identity=fields.get("identity", "alice"),
        role="operator",
        via="token",
        address="127.0.0.1",
        action=action,
        app=app,
        args={"revision": fields["revision"]} if "revision" in fields else None,
        result=fields.get("result", "accepted"),
    )


async def test_entries_are_appended_in_order_and_read_back(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    await asyncio.gather(*(audit.record(entry("web", revision=str(n))) for n in range(20)))
    await audit.record(entry("api", result="refused: 403 operator may not cleanup"))
    everything = await audit.read()
    assert [e.args.get("revision") for e in everything[:20]] == [str(n) for n in range(20)]
    assert [e.app for e in await audit.read(app="api")] == ["api"]
    assert [e.args["revision"] for e in await audit.read(app="web", limit=3)] == ["17", "18", "19"]
    assert stat.S_IMODE((tmp_path / "audit.jsonl").stat().st_mode) == 0o600


async def test_a_line_is_never_rewritten_only_added(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    await audit.record(entry("web"))
    first = path.read_bytes()
    await audit.record(entry("web", action="rollback"))
    assert path.read_bytes().startswith(first)
    assert len(path.read_bytes().splitlines()) == 2


async def test_what_a_client_sent_is_bounded_and_one_line(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    hostile = "x" * 10_000 + '\n{"forged": true}\n'
    await audit.record(entry("web", revision=hostile, identity="a\nb"))
    (line,) = (tmp_path / "audit.jsonl").read_text().splitlines()
    raw = json.loads(line)
    assert len(raw["args"]["revision"]) == MAX_TEXT
    assert raw["identity"] == "a\nb"  # escaped inside the one JSON line


async def test_a_damaged_line_is_skipped_and_said(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    await audit.record(entry("web"))
    with path.open("a") as out:
        out.write("not json\n")
    await audit.record(entry("api"))
    with capture_logs() as logs:
        assert [e.app for e in await audit.read()] == ["web", "api"]
    assert [e["event"] for e in logs] == ["audit_line_unreadable"]


async def test_an_unwritable_log_is_an_error_naming_the_entry(tmp_path: Path) -> None:
    (tmp_path / "audit.jsonl").mkdir()  # a directory where the file should be
    audit = AuditLog(tmp_path / "audit.jsonl")
    with capture_logs() as logs:
        await audit.record(entry("web", action="unpin"))
    (failed,) = [e for e in logs if e["event"] == "audit_write_failed"]
    assert (failed["action"], failed["app"], failed["identity"]) == ("unpin", "web", "alice")
    assert failed["log_level"] == "error"
    assert await AuditLog(tmp_path / "missing.jsonl").read() == []
