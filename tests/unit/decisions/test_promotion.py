"""What a promoted app may run: the newest revision its source kept live long enough."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reconciler.decisions.model import HistoryEntry, Result
from reconciler.decisions.promotion import promotable

A, B, C = "a" * 40, "b" * 40, "c" * 40
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def entry(revision: str, result: Result, finished: float) -> HistoryEntry:
    return HistoryEntry(revision, result, at(finished - 1), at(finished))


def test_nothing_before_the_source_kept_anything_live_long_enough() -> None:
    history = [entry(A, Result.DEPLOYED, 0)]
    assert promotable(history, now=at(5), after=600) is None
    assert promotable(history, now=at(10), after=600) == A


def test_a_newer_revision_that_is_not_proved_yet_leaves_the_older_one() -> None:
    history = [entry(B, Result.DEPLOYED, 30), entry(A, Result.DEPLOYED, 0)]
    assert promotable(history, now=at(35), after=600) == A  # A was live 30 min, B only 5
    assert promotable(history, now=at(45), after=600) == B


def test_a_revision_that_failed_in_the_source_is_never_promoted() -> None:
    history = [
        entry(C, Result.ROLLED_BACK, 50),
        entry(B, Result.FAILED, 40),
        entry(A, Result.DEPLOYED, 0),
    ]
    assert promotable(history, now=at(120), after=600) == A


def test_a_revision_replaced_before_its_time_is_skipped() -> None:
    history = [entry(B, Result.DEPLOYED, 5), entry(A, Result.DEPLOYED, 0)]
    # A was live only 5 minutes before B replaced it; B is not proved yet at minute 10.
    assert promotable(history, now=at(10), after=600) is None
