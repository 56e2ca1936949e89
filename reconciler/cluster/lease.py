"""When a daemon may still act for an app: the lease's validity over a monotonic clock.

A daemon's leases live as long as its member item: the others take its apps over only once
that item has stayed the same for the TTL on their own clocks (liveness.py), which begins
no earlier than the moment they could first see this daemon's last heartbeat. So this
daemon treats a lease as valid until TTL minus a margin after the earlier of two moments:
the start of its last successful heartbeat, and the start of the last view that still showed
it as the app's owner with the same version. Both are taken before the request is sent, so a
reply that was slow only shortens the lease (and a heartbeat whose answer came back after
the lease ran out starts no new one: manager.py). The monotonic clock keeps running while
the process is stopped (SIGSTOP), so a daemon resumed after its lease ran out sees it ran
out before it writes anything; writes under way are cut when it runs out (fenced.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


def margin_for(ttl: float) -> float:
    """How long before the others may take a lease this daemon stops acting on it: room
    for the two monotonic clocks' rates to differ and for a request cut at the end of the
    lease to have reached AWS."""
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
        return self.left(app) > 0

    def left(self, app: str) -> float:
        """Seconds the app's lease may still be acted on (0 when it may not)."""
        lease = self.held.get(app)
        if lease is None or self.heartbeat_at is None:
            return 0.0
        since = min(self.heartbeat_at, lease.confirmed_at)
        return max(0.0, since + self.ttl - self.margin - self.clock())

    def version(self, app: str) -> int | None:
        lease = self.held.get(app)
        return None if lease is None else lease.version

    def why_not(self, app: str) -> str:
        """One line for an operator: why a write for `app` was refused."""
        if app not in self.held:
            return f"this daemon does not hold the lease of {app!r}"
        return f"the lease of {app!r} could not be renewed in time (DynamoDB unreachable?)"
