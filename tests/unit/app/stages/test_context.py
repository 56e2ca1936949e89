"""The context stages share: nudges counted rather than flagged, and the session's write
through to the app's state, which reports whether the state can be written (as a metric
and in `last_error`)."""

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


async def test_a_failed_write_is_in_last_error_beside_the_passs_own_until_a_write_goes() -> None:
    """The write error is in `last_error` from the failed save on; an error the pass then
    reports keeps it beside, InSync does not clear it; the next write that goes removes it
    and leaves the pass's own error as it was."""
    run = a_pass()
    full = "cannot write state file: No space left on device"
    run.store.refusing = full
    await run.session.save()
    assert run.status.last_error == full
    run.session.report.in_sync()
    assert (run.status.phase.value, run.status.last_error) == ("InSync", full)
    run.session.report.failed("circuit breaker")
    assert run.status.last_error == f"circuit breaker\n{full}"

    run.store.refusing = None
    await run.session.save()
    assert run.status.last_error == "circuit breaker"
