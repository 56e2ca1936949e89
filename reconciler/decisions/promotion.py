"""Promotion: which revision an app promoted from another may run. A pure decision over the
source app's history.

The newest revision the source deployed successfully and that stayed live there at least
`after` seconds (until the next successful deploy replaced it, or until now). A revision that
failed there never deployed successfully, so it is never promoted.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from reconciler.decisions.model import HistoryEntry, Result


def promotable(history: Sequence[HistoryEntry], *, now: datetime, after: float) -> str | None:
    """`history` newest first, as the app's state keeps it."""
    until = now
    for entry in history:
        if entry.result is not Result.DEPLOYED:
            continue
        if until - entry.finished_at >= timedelta(seconds=after):
            return entry.revision
        until = entry.finished_at  # it became live then, ending its predecessor's time
    return None
