"""Per-app values kept in memory, read from their backing store once and written through.

The memory is the authority between the two: a value is read the first time it is asked for
and the same object is answered for the app's whole stay; each change is written through by
the store that owns the cache, which reports here whether the write went. A failed write is
kept (and logged once per distinct reason) until one succeeds, so a full disk or a lost
lease says why to whoever asks, and the recovery is logged too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

import structlog

T = TypeVar("T")


class PerAppCache(Generic[T]):
    """`read(app)` answers an app's value the first time; `<subject>_write_failed` and
    `<subject>_write_recovered` are logged to `logger` as writes fail and recover."""

    def __init__(self, read: Callable[[str], T], *, logger: str, subject: str) -> None:
        self._read = read
        self._log = structlog.get_logger(logger)
        self._subject = subject
        self._values: dict[str, T] = {}
        self._write_errors: dict[str, str] = {}

    def get(self, app: str) -> T:
        """The app's value: read the first time, the same object afterwards."""
        if app not in self._values:
            self._values[app] = self._read(app)
        return self._values[app]

    def put(self, app: str, value: T) -> T:
        """`value` becomes the app's (it was read elsewhere, or replaces the old one)."""
        self._values[app] = value
        return value

    def forget(self, app: str) -> None:
        """Drop the app's value and write error; the backing store keeps what it has."""
        self._values.pop(app, None)
        self._write_errors.pop(app, None)

    @property
    def write_errors(self) -> Mapping[str, str]:
        return self._write_errors

    def write_error(self, app: str) -> str | None:
        """Why the app's last write failed, or None when its backing store is up to date."""
        return self._write_errors.get(app)

    def write_failed(self, app: str, reason: str) -> bool:
        """Record a failed write (logged when the reason is new); False, for the caller."""
        if self._write_errors.get(app) != reason:
            self._log.error(f"{self._subject}_write_failed", app=app, error=reason)
        self._write_errors[app] = reason
        return False

    def written(self, app: str) -> bool:
        """Record a write that went (logged when it ends a failure); True, for the caller."""
        if self._write_errors.pop(app, None) is not None:
            self._log.info(f"{self._subject}_write_recovered", app=app)
        return True

    def clear_error(self, app: str) -> None:
        """Forget the app's write error without a write (the value came anew)."""
        self._write_errors.pop(app, None)
