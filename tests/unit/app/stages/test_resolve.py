"""Resolve: which revision the app should run now, decided from the operator's pin, the
config's own pin, the source app of a promotion, or git."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from reconciler.adapters.git import GitSource
from reconciler.app.stages.resolve import desired_revision, resolve
from reconciler.app.state import AppMemory
from reconciler.decisions.model import HistoryEntry, Pin, Result, utcnow
from reconciler.errors import GitUnavailable, PromotionWaiting, TransientError
from tests.support.fakes import FakeGit
from tests.support.passes import a_pass, app_config

HEAD = "h" * 40
PINNED = "p" * 40
PROVED = "d" * 40
NEWEST = "e" * 40


def deployed(revision: str, *, minutes_ago: float) -> HistoryEntry:
    at = utcnow() - timedelta(minutes=minutes_ago)
    return HistoryEntry(revision=revision, result=Result.DEPLOYED, started_at=at, finished_at=at)


@dataclass
class Case:
    app: dict[str, Any]
    pin: str | None  # "current": made under the app's config now; "stale": under another
    # The promotion source's history, made when the test runs: its times are relative to now,
    # and a suite can run many minutes after the cases were collected.
    source: Callable[[], list[HistoryEntry]] = list
    want: str = HEAD
    asks_git: bool = True


CASES = {
    "no pin: git says": Case(app={}, pin=None),
    "an operator's pin under the current config wins over git": Case(
        app={}, pin="current", want=PINNED, asks_git=False
    ),
    "a pin made under another config no longer holds": Case(app={}, pin="stale"),
    "a promoted app runs what its source kept live long enough": Case(
        app={"promote_from": "staging", "promote_after": 600},
        pin=None,
        source=lambda: [deployed(NEWEST, minutes_ago=1), deployed(PROVED, minutes_ago=60)],
        want=PROVED,
        asks_git=False,
    ),
    "an operator's pin wins over a promotion": Case(
        app={"promote_from": "staging"},
        pin="current",
        source=lambda: [deployed(PROVED, minutes_ago=60)],
        want=PINNED,
        asks_git=False,
    ),
    "a promoted app with a revision of its own follows git": Case(
        app={"promote_from": "staging", "revision": "v1.2"},
        pin=None,
        source=lambda: [deployed(PROVED, minutes_ago=60)],
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_resolve(case: Case) -> None:
    app = app_config(**case.app)
    memories = {"web": AppMemory(), "staging": AppMemory(history=case.source())}
    if case.pin is not None:
        fingerprint = app.fingerprint() if case.pin == "current" else "another config"
        memories["web"].pin = Pin(revision=PINNED, config_fingerprint=fingerprint)
    git = FakeGit(HEAD)
    assert await resolve(app, memory_of=memories.__getitem__, git=git) == case.want
    assert git.resolves == (1 if case.asks_git else 0)


async def test_a_promotion_whose_source_proved_nothing_yet_waits_without_asking_git() -> None:
    """Transient: the loop retries with backoff until the source has kept a revision live."""
    app = app_config(promote_from="staging", promote_after=600)
    memories = {"web": AppMemory(), "staging": AppMemory(history=[deployed(NEWEST, minutes_ago=1)])}
    git = FakeGit(HEAD)
    with pytest.raises(PromotionWaiting) as raised:
        await resolve(app, memory_of=memories.__getitem__, git=git)
    assert isinstance(raised.value, TransientError)
    assert "staging" in str(raised.value) and "600s" in str(raised.value)
    assert git.resolves == 0


class NudgedWhileAsked(FakeGit):
    """Git whose answer arrives together with a nudge (a push landed meanwhile)."""

    def __init__(self, head: str) -> None:
        super().__init__(head)
        self.on_resolve: list[Any] = []

    async def resolve(self, source: GitSource) -> str:
        for hook in self.on_resolve:
            hook()
        return await super().resolve(source)


async def test_desired_revision_counts_the_nudges_seen_before_git_was_asked() -> None:
    """Nudges before the question are answered by it; one that arrives while git is asked
    must still show as a nudge since the resolve, so the pass looks again."""
    git = NudgedWhileAsked(HEAD)
    run = a_pass(git=git)
    nudges = run.session.nudges
    nudges.bump()
    assert await desired_revision(run.session) == HEAD
    assert not nudges.since_resolve

    git.on_resolve.append(nudges.bump)
    await desired_revision(run.session)
    assert nudges.since_resolve


async def test_desired_revision_lets_a_git_failure_through() -> None:
    run = a_pass()
    run.git.fail_next("resolve", GitUnavailable("ls-remote: connection refused"))
    with pytest.raises(GitUnavailable):
        await desired_revision(run.session)
