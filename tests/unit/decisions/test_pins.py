"""Where an operator's rollback goes: only to a revision that once deployed successfully."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reconciler.decisions.model import HistoryEntry, Result
from reconciler.decisions.pins import RollbackRefused, rollback_target

A, B, C = "a" * 40, "b" * 40, "c" * 40
AT = datetime(2026, 1, 1, tzinfo=UTC)


def entry(revision: str, result: Result) -> HistoryEntry:
    return HistoryEntry(revision, result, AT, AT)


HISTORY = [  # newest first
    entry(C, Result.ROLLED_BACK),
    entry(B, Result.DEPLOYED),
    entry(A, Result.DEPLOYED),
]


def test_the_default_is_the_newest_success_that_is_not_live() -> None:
    assert rollback_target(HISTORY, live_revision=B, requested=None) == A
    assert rollback_target(HISTORY, live_revision=C, requested=None) == B


def test_a_short_sha_names_its_revision() -> None:
    assert rollback_target(HISTORY, live_revision=B, requested="aaaaaaa") == A


@pytest.mark.parametrize(
    ("requested", "says"),
    [
        (C, "never deployed successfully"),
        ("d" * 12, "never deployed successfully"),
    ],
)
def test_a_revision_that_never_succeeded_is_refused(requested: str, says: str) -> None:
    with pytest.raises(RollbackRefused, match=says):
        rollback_target(HISTORY, live_revision=B, requested=requested)


def test_nothing_to_go_back_to_is_said() -> None:
    with pytest.raises(RollbackRefused, match="no earlier successful revision"):
        rollback_target([entry(A, Result.DEPLOYED)], live_revision=A, requested=None)
