"""A place taken in a semaphore for a block of work, which the block may give back early."""

from __future__ import annotations

import asyncio
from types import TracebackType


class Place:
    """`async with Place(semaphore) as place:` takes a place; it is given back when the block
    ends, or before that by `place.give_back()` (once: a second call does nothing)."""

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self._semaphore = semaphore
        self._held = False

    async def __aenter__(self) -> Place:
        await self._semaphore.acquire()
        self._held = True
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.give_back()

    def give_back(self) -> None:
        if self._held:
            self._held = False
            self._semaphore.release()
