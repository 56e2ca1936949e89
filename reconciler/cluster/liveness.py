"""Which daemons are alive, judged on this daemon's own monotonic clock.

A member item carries the holder's `instance` (random per process) and `beat` (raised by
every heartbeat). This daemon never compares the holder's wall-clock `expires_at` with its
own wall clock: a clock running minutes ahead would take every lease early, one running
behind would be counted dead by everyone. Instead, as Kubernetes' leader election does, a
member is dead once its record has stayed the same for `ttl` since this daemon first saw
it. The holder counts its own lease on its monotonic clock from the start of its last
heartbeat, which is no later than the moment anyone can first see that heartbeat, and it
stops acting a margin before `ttl`: so whatever the wall clocks say, a taker's "dead" comes
after the holder's last act, as long as the two monotonic clocks run at about the same
rate (the margin covers a rate difference of ttl/5 over one ttl).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from reconciler.cluster.table import Member

Record = tuple[str, int, float]  # instance, beat, and expires_at (for items without a beat)


def record_of(member: Member) -> Record:
    return (member.instance, member.beat, member.expires_at)


@dataclass(frozen=True)
class Sighting:
    record: Record
    first_seen: float  # this daemon's monotonic clock when the record was first seen


class Liveness:
    """The members of the views seen so far, each with when its record last changed here."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._sightings: dict[str, Sighting] = {}

    def saw(self, members: Mapping[str, Member], *, at: float) -> None:
        """A view read that ended at `at`: a record that changed counts from then (a later
        moment than the write it shows, so never too early)."""
        for host in list(self._sightings):
            if host not in members:
                del self._sightings[host]
        for host, member in members.items():
            record = record_of(member)
            known = self._sightings.get(host)
            if known is None or known.record != record:
                self._sightings[host] = Sighting(record=record, first_seen=at)

    def alive(self, host: str, *, now: float) -> bool:
        sighting = self._sightings.get(host)
        return sighting is not None and now < sighting.first_seen + self.ttl

    def live(self, *, now: float) -> list[str]:
        return sorted(host for host in self._sightings if self.alive(host, now=now))

    def silent_for(self, host: str, *, now: float) -> float | None:
        """Seconds since the member's record last changed, as seen here (None: unknown)."""
        sighting = self._sightings.get(host)
        return None if sighting is None else max(0.0, now - sighting.first_seen)

    def next_expiry(self, *, now: float) -> float | None:
        """Seconds until the next live member would count as dead, if none heartbeats."""
        left = [s.first_seen + self.ttl - now for s in self._sightings.values()]
        ahead = [seconds for seconds in left if seconds > 0]
        return min(ahead) if ahead else None
