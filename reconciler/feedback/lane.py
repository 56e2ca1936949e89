"""One target's delivery: a bounded queue of keys and one sender task that works it off.

A key names work (an app's commit whose forge state is behind, a chat message); what to
send is looked up when it is sent, so a key queued again while it waits costs nothing and
the newest state wins. A delivery that fails for a reason that may pass (a timeout, a 5xx,
a rate limit) is retried after an exponential, jittered backoff that grows with the
target's consecutive failures, and the key goes to the back so one bad item does not starve
the rest. One the target refused for good (401, 403, 404, 422) is reported and dropped. A
full queue drops its oldest key. Nothing here raises out of `run()`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import structlog

from reconciler.aio import backoff

log = structlog.get_logger("reconciler.feedback")
K = TypeVar("K", bound=Hashable)


class Rejected(Exception):
    """The target refused in a way a retry will not change."""


class Retry(Exception):
    """The target could not be reached or answered with an error that may pass."""

    def __init__(self, reason: str, *, after: float = 0.0) -> None:
        super().__init__(reason)
        self.after = after  # at least this long before the next try (a Retry-After)


# key, outcome (sent | retried | rejected | dropped), reason
Report = Callable[[K, str, str], None]


class Lane(Generic[K]):
    def __init__(
        self,
        target: str,
        deliver: Callable[[K], Awaitable[None]],
        *,
        report: Report[K],
        limit: int = 500,
        retry_base: float = 1.0,
        retry_cap: float = 300.0,
        max_tries: int | None = None,
    ) -> None:
        self.target = target
        self._deliver = deliver
        self._report = report
        self._limit = limit
        self._retry_base = retry_base
        self._retry_cap = retry_cap
        self._max_tries = max_tries
        self._queue: OrderedDict[K, int] = OrderedDict()  # key -> failed tries so far
        self._busy: K | None = None
        self._again = False  # the key being delivered was queued again meanwhile
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._failures = 0  # consecutive failed deliveries, for the backoff

    def __len__(self) -> int:
        """Keys waiting, and the one being delivered."""
        return len(self._queue) + (self._busy is not None)

    @property
    def busy(self) -> bool:
        return self._busy is not None or bool(self._queue)

    def put(self, key: K) -> None:
        """Queue `key` (once: a key already waiting keeps its place)."""
        if key == self._busy:
            self._again = True
            return
        if key in self._queue:
            return
        while len(self._queue) >= self._limit:
            oldest, _ = self._queue.popitem(last=False)
            self._report(oldest, "dropped", "queue full")
        self._queue[key] = 0
        self._idle.clear()
        self._ready.set()

    def discard(self, key: K) -> None:
        self._queue.pop(key, None)
        self._settle()

    async def run(self) -> None:
        while True:
            await self._ready.wait()
            if not self._queue:
                self._ready.clear()
                self._settle()
                continue
            key, tries = self._queue.popitem(last=False)
            self._busy, self._again = key, False
            delay = 0.0
            try:
                await self._deliver(key)
            except Rejected as exc:
                self._report(key, "rejected", str(exc))
            except Retry as exc:
                tries += 1
                self._failures += 1
                if self._max_tries is not None and tries >= self._max_tries:
                    self._report(key, "dropped", f"gave up after {tries} tries: {exc}")
                else:
                    self._report(key, "retried", str(exc))
                    self._queue[key] = tries
                    step = backoff.backoff_delay(
                        self._failures - 1, base=self._retry_base, cap=self._retry_cap
                    )
                    delay = min(self._retry_cap, max(exc.after, step))
            except asyncio.CancelledError:
                self._queue[key] = tries
                self._queue.move_to_end(key, last=False)
                raise
            except Exception as exc:
                # A bug must not turn into a retry loop or end the sender.
                log.exception("feedback_delivery_crashed", target=self.target)
                self._report(key, "dropped", f"internal error: {type(exc).__name__}")
            else:
                self._failures = 0
                self._report(key, "sent", "")
            finally:
                self._busy = None
            if self._again and key not in self._queue:
                self._queue[key] = 0
            self._settle()
            if delay:
                await asyncio.sleep(delay)

    async def drain(self, *, within: float) -> bool:
        """Wait up to `within` seconds for the queue to empty; whether it did."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), within)
        return self._idle.is_set()

    def _settle(self) -> None:
        if not self._queue and self._busy is None:
            self._idle.set()
