"""Supersede: git asked again; a newer revision ends this pass's revision, recorded as
superseded."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from reconciler.app.stages.supersede import superseded
from reconciler.errors import GitUnavailable
from tests.support.passes import NEWER, REVISION, a_pass


async def test_the_same_revision_is_not_superseded() -> None:
    run = a_pass()
    assert await superseded(run.ctx) is False
    assert run.git.resolves == 1
    assert run.results() == []


async def test_a_newer_revision_supersedes_and_is_recorded() -> None:
    run = a_pass(head=NEWER)
    run.session.nudges.bump()
    with capture_logs() as logged:
        assert await superseded(run.ctx, event="rollout_superseded") is True
    assert run.results() == [(REVISION, "superseded")]
    assert run.status.history[0].error == f"superseded by {NEWER}"
    assert run.written.history[0].revision == REVISION
    assert [(e["event"], e["newer"]) for e in logged] == [("rollout_superseded", NEWER)]
    assert not run.session.nudges.since_resolve  # the nudge was answered


async def test_a_git_failure_is_let_through_and_records_nothing() -> None:
    run = a_pass()
    run.git.fail_next("resolve", GitUnavailable("ls-remote: timed out"))
    with pytest.raises(GitUnavailable):
        await superseded(run.ctx)
    assert run.results() == []
