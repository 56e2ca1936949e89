"""The processes running on this machine, read from /proc, for tests that check what a
step started is still (or no longer) running."""

from __future__ import annotations

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
