"""Liveness on this daemon's own clock: a member is dead once its record stayed the same for
the TTL since it was first seen here, whatever its wall clock says."""

from __future__ import annotations

from reconciler.cluster.liveness import Liveness
from reconciler.cluster.table import Member

TTL = 30.0


def member(beat: int, *, expires_at: float = 0.0, instance: str = "i1") -> dict[str, Member]:
    return {"a": Member(host_id="a", expires_at=expires_at, instance=instance, beat=beat)}


def test_a_member_first_seen_is_alive_for_a_whole_ttl() -> None:
    liveness = Liveness(TTL)
    liveness.saw(member(7), at=100.0)
    assert liveness.alive("a", now=100.0 + TTL - 0.01)
    assert not liveness.alive("a", now=100.0 + TTL)


def test_a_record_that_changes_keeps_its_member_alive() -> None:
    liveness = Liveness(TTL)
    for step in range(10):
        liveness.saw(member(step), at=step * 20.0)
    assert liveness.live(now=9 * 20.0 + TTL - 1) == ["a"]


def test_a_record_seen_again_unchanged_does_not_restart_the_count() -> None:
    liveness = Liveness(TTL)
    liveness.saw(member(1), at=0.0)
    liveness.saw(member(1), at=25.0)
    assert not liveness.alive("a", now=TTL)
    assert liveness.silent_for("a", now=TTL) == TTL


def test_wall_clock_expiry_far_in_the_past_or_future_decides_nothing() -> None:
    """The holder's clock ran a minute behind or ahead: its `expires_at` is ignored."""
    for expires_at in (-60.0, 1e12):
        liveness = Liveness(TTL)
        liveness.saw(member(1, expires_at=expires_at), at=0.0)
        assert liveness.alive("a", now=1.0)
        assert not liveness.alive("a", now=TTL + 1)


def test_a_new_instance_under_the_same_host_id_is_a_new_record() -> None:
    liveness = Liveness(TTL)
    liveness.saw(member(5, instance="old"), at=0.0)
    liveness.saw(member(5, instance="new"), at=20.0)
    assert liveness.alive("a", now=TTL + 1)


def test_a_member_that_left_is_forgotten() -> None:
    liveness = Liveness(TTL)
    liveness.saw(member(1), at=0.0)
    liveness.saw({}, at=1.0)
    assert liveness.live(now=1.0) == []
    assert liveness.silent_for("a", now=1.0) is None


def test_the_next_expiry_is_when_the_quietest_member_would_count_as_dead() -> None:
    liveness = Liveness(TTL)
    liveness.saw(member(1), at=10.0)
    assert liveness.next_expiry(now=20.0) == TTL - 10.0
    assert liveness.next_expiry(now=10.0 + TTL) is None
