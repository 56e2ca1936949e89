"""How much of an app's history is kept. Pure: no I/O.

The history is bounded three ways, so an app that releases all day keeps a state of a fixed
size (it is written whole on every change, to a file or to one lease-table item, which
DynamoDB caps at 400 KB): RELEASES_KEPT entries; stage lists only on the newest STAGES_KEPT,
each at most MAX_STAGES long; a full error only on the newest ERRORS_KEPT (older ones keep
its first line). What the four keys need (result, times, commit time) stays on every entry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from reconciler.decisions.model import HistoryEntry
from reconciler.decisions.timeline import MAX_STAGES, bounded_stages

RELEASES_KEPT = 500  # history entries an app keeps
STAGES_KEPT = 100  # the newest entries that keep their stage lists
ERRORS_KEPT = 20  # the newest entries that keep their error in full
ERROR_LINE = 200  # characters of an older entry's error kept


def first_line(text: str) -> str:
    stripped = text.strip()
    line = stripped.splitlines()[0] if stripped else ""
    return line if len(line) <= ERROR_LINE else line[: ERROR_LINE - 1] + "…"


def kept(entry: HistoryEntry, index: int) -> HistoryEntry:
    """The entry as kept at `index` (0: the newest)."""
    changes: dict[str, Any] = {}
    if index >= STAGES_KEPT and entry.stages:
        changes["stages"] = ()
    elif len(entry.stages) > MAX_STAGES:
        changes["stages"] = bounded_stages(entry.stages)
    if index >= ERRORS_KEPT and entry.error and entry.error != first_line(entry.error):
        changes["error"] = first_line(entry.error)
    return dataclasses.replace(entry, **changes) if changes else entry


def trimmed(history: Sequence[HistoryEntry]) -> list[HistoryEntry]:
    """`history` (newest first) as kept."""
    return [kept(entry, index) for index, entry in enumerate(history[:RELEASES_KEPT])]
