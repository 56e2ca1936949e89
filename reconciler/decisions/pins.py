"""Which revision an operator's rollback goes to: a pure decision over the app's history.

Only a revision that was deployed successfully may be pinned (its image is in the registry
and it once ran); by default the newest such one that is not the revision live now.
"""

from __future__ import annotations

from collections.abc import Iterable

from reconciler.decisions.model import HistoryEntry, Result


class RollbackRefused(ValueError):
    """The rollback cannot go where it was asked to; the message says why, in one line."""


def rollback_target(
    history: Iterable[HistoryEntry], *, live_revision: str | None, requested: str | None
) -> str:
    """The full SHA to pin. `requested` may be a full or abbreviated SHA."""
    deployed = [h.revision for h in history if h.result is Result.DEPLOYED]
    if requested:
        wanted = requested.strip().lower()
        matches = sorted({r for r in deployed if r.startswith(wanted)})
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise RollbackRefused(f"revision {requested!r} is ambiguous: {', '.join(matches)}")
        raise RollbackRefused(
            f"revision {requested!r} never deployed successfully here; "
            "only a revision that succeeded can be rolled back to"
        )
    for revision in deployed:
        if revision != live_revision:
            return revision
    raise RollbackRefused("no earlier successful revision in the history to roll back to")
