"""Which daemon runs an app, as the daemon asks it: the lease table's answer when several
daemons share the apps (cluster/ownership.py), every app here when this daemon is alone."""

from __future__ import annotations

from typing import Any, Protocol

from reconciler.adapters.ports import Adapters
from reconciler.errors import NotForwarded


class Ownership(Protocol):
    def holds(self, name: str) -> bool:
        """Whether this daemon runs the app now."""

    def guard(self, name: str, adapters: Adapters) -> Adapters:
        """The app's adapters as its AWS writes may go out from here."""

    def ownership(self, name: str) -> dict[str, Any]:
        """What the app's status says of its owner (`owner`, `lease_age_seconds`, `here`)."""

    def elsewhere(self, name: str) -> str | None:
        """The daemon that owns the app when it is not this one, as "host-id (url)"."""

    def remote_status(self, name: str) -> dict[str, Any] | None:
        """The owner's last published status of an app this daemon does not run."""

    async def read_statuses(self) -> None:
        """Bring what the owners published up to date (briefly; it may keep the last)."""

    def passes_on(self, name: str) -> bool:
        """Whether a nudge for the app, when it has no loop here, goes to whoever runs it
        (through the lease table, even to this daemon about to start its loop)."""

    async def forward_nudge(self, name: str) -> None:
        """Ask the app's owner for a pass; NotForwarded when that could not be passed on."""

    async def forward_sync(self, name: str) -> None:
        """Ask the app's owner for a sync; NotForwarded when that could not be passed on."""


class Alone:
    """A daemon without a lease table: it runs every app, its AWS writes unfenced, and
    there is nobody to ask or to forward to."""

    def holds(self, name: str) -> bool:
        return True

    def guard(self, name: str, adapters: Adapters) -> Adapters:
        return adapters

    def ownership(self, name: str) -> dict[str, Any]:
        return {}

    def elsewhere(self, name: str) -> str | None:
        return None

    def remote_status(self, name: str) -> dict[str, Any] | None:
        return None

    async def read_statuses(self) -> None:
        return None

    def passes_on(self, name: str) -> bool:
        return False  # its loop is about to start, and its first pass looks anyway

    async def forward_nudge(self, name: str) -> None:
        raise NotForwarded(f"no other daemon to pass the nudge of {name!r} on to")

    async def forward_sync(self, name: str) -> None:
        raise NotForwarded(f"no other daemon to pass the sync of {name!r} on to")
