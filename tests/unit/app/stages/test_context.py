"""The context stages share: nudges counted rather than flagged, and the session's write
through to the app's state, which reports whether the state can be written."""

from __future__ import annotations

from reconciler.app.stages.context import Nudges
from tests.support.passes import a_pass


def test_a_nudge_is_seen_until_the_next_resolve_and_wakes_a_rollout_watch() -> None:
    nudges = Nudges()
    assert not nudges.since_resolve
    nudges.bump()
    assert nudges.since_resolve and nudges.during_rollout.is_set()
    nudges.resolved()
    assert not nudges.since_resolve
    nudges.bump()
    nudges.bump()  # counted, not flagged: one resolve answers both
    nudges.resolved()
    assert not nudges.since_resolve


async def test_a_save_says_whether_the_state_could_be_written() -> None:
    run = a_pass()
    failing = {"app": "web"}
    run.memory.tagged = "x" * 40
    run.store.refusing = "cannot write state file: No space left on device"
    assert await run.session.save() is False
    assert run.sample("reconciler_state_write_failing", **failing) == 1
    assert run.written.tagged is None

    run.store.refusing = None
    assert await run.session.save() is True
    assert run.sample("reconciler_state_write_failing", **failing) == 0
    assert run.written.tagged == "x" * 40
