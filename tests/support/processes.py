"""The processes running on this machine, read from /proc, for tests that check what a
step started is still (or no longer) running."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path


def command_lines() -> dict[int, list[bytes]]:
    """Every running process's arguments, by PID; one that ends while /proc is read is left
    out."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            found[int(entry.name)] = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
    return found


def started_by(text: str) -> dict[int, list[bytes]]:
    """The running processes whose parent's arguments contain `text`, by PID."""
    running = command_lines()
    parents = {pid for pid, args in running.items() if text.encode() in b"\0".join(args)}
    return {pid: args for pid, args in running.items() if _parent_of(pid) in parents}


def running_as(pids: Iterable[int], argv: Sequence[bytes]) -> list[int]:
    """Those of `pids` still running with arguments that start with `argv`."""
    running = command_lines()
    return [pid for pid in pids if running.get(pid, [])[: len(argv)] == list(argv)]


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None  # gone meanwhile
    # `pid (name) state ppid ...`, the name possibly holding spaces and parentheses.
    return int(stat.rpartition(")")[2].split()[1])
