"""Which live daemon should own which app: an even spread that moves few apps.

Every daemon computes the same answer from the same view (the member list and the app
names), so they agree without talking to each other. Each app ranks the daemons by a hash
of (app, daemon), rendezvous style, and goes to the first in its ranking that still has room
under the fair share; apps are placed in a fixed order (their own names' hash), so the
answer depends on the sets only. A daemon joining or leaving moves about 1/n of the apps,
and no daemon is given more than ceil(apps / daemons).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def _score(*parts: str) -> int:
    digest = hashlib.blake2b("\x00".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def fair_share(apps: int, members: int) -> int:
    """The most apps one daemon should hold: ceil(apps / members)."""
    if members <= 0:
        return 0
    return -(-apps // members)


def assign(apps: Iterable[str], members: Iterable[str]) -> dict[str, str]:
    """app -> the member that should own it; empty when there are no members."""
    names = sorted(set(apps), key=lambda a: (_score(a), a))
    live = sorted(set(members))
    if not live:
        return {}
    room = dict.fromkeys(live, fair_share(len(names), len(live)))
    owners: dict[str, str] = {}
    for app in names:
        ranking = sorted(live, key=lambda m: (_score(app, m), m), reverse=True)
        owner = next(m for m in ranking if room[m] > 0)
        room[owner] -= 1
        owners[app] = owner
    return owners
