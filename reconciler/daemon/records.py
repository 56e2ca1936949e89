"""Each app's kept releases, as the four keys and the timeline read them: the app's state
for the apps this daemon runs (RELEASES_KEPT of them); for an app another daemon of the
cluster runs, what its owner last published (its newest HISTORY_LIMIT)."""

from __future__ import annotations

from collections.abc import Sequence

from reconciler.app.state import StateStore
from reconciler.app.status import AppStatus
from reconciler.daemon.in_force import InForce
from reconciler.daemon.ownership import Ownership
from reconciler.decisions.model import HistoryEntry


class Releases:
    def __init__(self, *, in_force: InForce, ownership: Ownership, store: StateStore) -> None:
        self._in_force = in_force
        self._ownership = ownership
        self._store = store

    def held(self) -> list[str]:
        """The apps whose state this daemon holds."""
        return [n for n in self._in_force.app_names() if self._ownership.holds(n)]

    def of(self, name: str) -> Sequence[HistoryEntry]:
        """The app's releases, newest first (none for an app not in the config)."""
        if name not in self._in_force.app_names():
            return ()
        if self._ownership.holds(name):
            return self._store.load(name).history
        document = self._ownership.remote_status(name)
        if document is None:
            return ()
        try:
            return list(AppStatus.from_json(document).history)
        except ValueError:
            return ()  # an owner of another version: its page says so
