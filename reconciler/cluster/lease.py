"""When a daemon may still act for an app: the lease's validity over a monotonic clock.

A daemon's leases live as long as its member item: the others take its apps over only
after the item's `expires_at` (the wall time its last heartbeat was sent, plus the TTL) has
passed. So this daemon treats a lease as valid until TTL minus a margin after the later of
two moments: the start of its last successful heartbeat, and the start of the last view that
still showed it as the app's owner with the same version (the smaller of the two counts).
Both are taken before the request is sent, so a reply that was slow only shortens the
lease. The monotonic clock keeps running while the process is stopped (SIGSTOP), so a
daemon resumed after its lease ran out sees it ran out before it writes anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


def margin_for(ttl: float) -> float:
    """How long before expiry a lease stops being acted on: room for clock skew between
    hosts and for a request between the check and AWS."""
    return max(0.5, ttl / 5)


@dataclass
class Held:
    """One app's lease as this daemon holds it."""

    version: int
    confirmed_at: float  # monotonic: start of the last view that showed it ours


@dataclass
class Leases:
    """The leases this daemon holds and whether each may be acted on now."""

    ttl: float
    clock: Callable[[], float] = time.monotonic
    heartbeat_at: float | None = None  # monotonic start of the last successful heartbeat
    held: dict[str, Held] = field(default_factory=dict)

    @property
    def margin(self) -> float:
        return margin_for(self.ttl)

    def valid(self, app: str) -> bool:
        lease = self.held.get(app)
        if lease is None or self.heartbeat_at is None:
            return False
        since = min(self.heartbeat_at, lease.confirmed_at)
        return self.clock() < since + self.ttl - self.margin

    def version(self, app: str) -> int | None:
        lease = self.held.get(app)
        return None if lease is None else lease.version

    def why_not(self, app: str) -> str:
        """One line for an operator: why a write for `app` was refused."""
        if app not in self.held:
            return f"this daemon does not hold the lease of {app!r}"
        return f"the lease of {app!r} could not be renewed in time (DynamoDB unreachable?)"
