"""Batching: callers asking for keys within a short window share requests of many keys each.

An API that answers many keys per request (and counts requests, not keys, against a shared
throttle) is asked once for everyone who asks within `window` seconds, in requests of at
most `limit` keys. Keys are gathered per group (whatever the request must name beside the
keys, such as a cluster); each group has its own window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from typing import Generic, TypeVar

G = TypeVar("G", bound=Hashable)
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# One request: the group and at most `limit` keys in, each key's answer or error out.
Send = Callable[[G, list[K]], Awaitable[Mapping[K, V | BaseException]]]
# A group's other keys, the preferred first, to carry in the free places of its last request.
Fill = Callable[[G], Iterable[K]]


class Batcher(Generic[G, K, V]):
    """Shares requests among the callers of `get`.

    Each caller gets its own key's answer, or its own key's error; only a request that fails
    as a whole fails every caller it carried. A caller cancelled while it waits leaves the
    others (and the request) as they were. `close` drops what is still waiting or on its
    way and sends nothing more.
    """

    def __init__(
        self,
        send: Send[G, K, V],
        *,
        limit: int,
        window: float,
        name: str,
        fill: Fill[G, K] | None = None,
    ) -> None:
        self._send = send
        self._limit = limit
        self._window = window
        self._name = name
        self._fill = fill
        # Per group, the callers of each key gathering for the next request.
        self._waiting: dict[G, dict[K, list[asyncio.Future[V]]]] = {}
        # The callers of each key whose request is on its way.
        self._in_flight: dict[tuple[G, K], list[asyncio.Future[V]]] = {}
        self._flushers: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def busy(self) -> bool:
        """A batch is waiting for its window or being sent."""
        return any(not flusher.done() for flusher in self._flushers)

    async def get(self, group: G, key: K, *, join: bool = False) -> V:
        """`key`'s answer from the next request of `group`; with `join`, from the request
        already on its way for it, if there is one."""
        if self._closed:
            # Sent after the client under it closed, a request may open connections nobody
            # closes; a call this late is a bug to be told about.
            raise RuntimeError(f"{self._name}: asked after it was closed")
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        joined = self._in_flight.get((group, key)) if join else None
        if joined is not None:
            joined.append(future)
            return await future
        batch = self._waiting.get(group)
        if batch is None:
            batch = self._waiting[group] = {}
            task_name = self._name if group is None else f"{self._name}-{group}"
            flusher = asyncio.create_task(self._flush(group), name=task_name)
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        batch.setdefault(key, []).append(future)
        return await future

    async def close(self) -> None:
        """Drop the batches still waiting or on their way, and refuse any later `get`.

        Their callers are gone by now (they stop first); any still waiting are cancelled
        rather than left waiting for an answer that will not come.
        """
        self._closed = True
        for flusher in list(self._flushers):
            flusher.cancel()
        await asyncio.gather(*self._flushers, return_exceptions=True)
        for batch in self._waiting.values():
            for futures in batch.values():
                _cancel(futures)
        for futures in self._in_flight.values():
            _cancel(futures)
        self._waiting.clear()
        self._in_flight.clear()

    async def _flush(self, group: G) -> None:
        await asyncio.sleep(self._window)
        batch = self._waiting.pop(group, {})
        keys = list(batch)
        # The free places of the last request carry other keys: it costs the same.
        room = -len(keys) % self._limit
        if room and self._fill is not None:
            others = (
                k for k in self._fill(group) if k not in batch and (group, k) not in self._in_flight
            )
            keys += list(dict.fromkeys(others))[:room]
        for key in keys:
            self._in_flight[(group, key)] = batch.setdefault(key, [])
        chunks = [keys[i : i + self._limit] for i in range(0, len(keys), self._limit)]
        await asyncio.gather(*(self._request(group, chunk, batch) for chunk in chunks))

    async def _request(
        self, group: G, keys: list[K], batch: dict[K, list[asyncio.Future[V]]]
    ) -> None:
        try:
            answers = await self._send(group, keys)
        except Exception as exc:
            self._landed(group, keys, batch)
            for key in keys:
                _settle(batch[key], exc)
            return
        self._landed(group, keys, batch)
        for key in keys:
            if key in answers:
                _settle(batch[key], answers[key])
            else:  # fails rather than leaving its callers waiting
                _settle(batch[key], LookupError(f"{self._name}: no answer for {key!r}"))

    def _landed(self, group: G, keys: list[K], batch: dict[K, list[asyncio.Future[V]]]) -> None:
        """The request for `keys` is back: later callers must not join it any more (unless a
        later batch sent the key again and is on its way in turn)."""
        for key in keys:
            if self._in_flight.get((group, key)) is batch[key]:
                del self._in_flight[(group, key)]


def _settle(futures: list[asyncio.Future[V]], answer: V | BaseException) -> None:
    for future in futures:
        if future.done():  # its caller was cancelled
            continue
        if isinstance(answer, BaseException):
            future.set_exception(answer)
        else:
            future.set_result(answer)


def _cancel(futures: list[asyncio.Future[V]]) -> None:
    for future in futures:
        future.cancel()
