"""How much of an app's history is kept. Pure: no I/O.

The history is bounded, so an app that releases all day keeps a state of a fixed size (it
is written whole on every change, to a file or to one lease-table item, which DynamoDB caps
at 400 KB): RELEASES_KEPT entries; stage lists on the newest ones only, at most STAGES_KEPT
entries and STAGE_BUDGET stages in all (each list at most MAX_STAGES long); an error of at
most ERROR_CHARS on the newest ERRORS_KEPT, its first line (ERROR_LINE) on older ones. What
the four keys need (result, times, commit time) stays on every entry. The worst case (every
bound full) is about 330 KB; a typical release of ten stages keeps stages on 80 entries.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from reconciler.decisions.model import HistoryEntry
from reconciler.decisions.timeline import MAX_STAGES, bounded_stages

RELEASES_KEPT = 500  # history entries an app keeps
STAGES_KEPT = 100  # the newest entries that may keep their stage lists
STAGE_BUDGET = 800  # stages kept over all entries
ERRORS_KEPT = 20  # the newest entries that keep their error in full
ERROR_CHARS = 2000  # characters of an error kept in full (its first line and its end)
ERROR_LINE = 120  # characters of an older entry's error kept


def first_line(text: str) -> str:
    stripped = text.strip()
    line = stripped.splitlines()[0] if stripped else ""
    return line if len(line) <= ERROR_LINE else line[: ERROR_LINE - 1] + "…"


def _error(error: str | None, index: int) -> str | None:
    if not error:
        return error
    if index >= ERRORS_KEPT:
        return first_line(error)
    if len(error) <= ERROR_CHARS:
        return error
    # The first line says what failed, the end of the output why: the middle goes.
    head = first_line(error) + "\n…\n"
    return head + error[-(ERROR_CHARS - len(head)) :]


def trimmed(history: Sequence[HistoryEntry]) -> list[HistoryEntry]:
    """`history` (newest first) as kept."""
    kept: list[HistoryEntry] = []
    budget = STAGE_BUDGET
    for index, entry in enumerate(history[:RELEASES_KEPT]):
        changes: dict[str, Any] = {}
        stages = bounded_stages(entry.stages) if len(entry.stages) > MAX_STAGES else entry.stages
        if index >= STAGES_KEPT or len(stages) > budget:
            stages, budget = (), 0  # older entries keep none: the newest are what is drawn
        budget -= len(stages)
        if stages != entry.stages:
            changes["stages"] = stages
        error = _error(entry.error, index)
        if error != entry.error:
            changes["error"] = error
        kept.append(dataclasses.replace(entry, **changes) if changes else entry)
    return kept
