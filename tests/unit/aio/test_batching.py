"""Batching: callers within a window share requests of at most `limit` keys; each gets its
own key's answer or error; close drops what waits and sends nothing more (pure asyncio)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from typing import TypeVar

import pytest

from reconciler.aio.batching import Batcher

T = TypeVar("T")

WINDOW = 0.01


class Api:
    """An API answering `group:key` for each key; some keys are refused one by one, some
    make the whole request fail, some it leaves out of its answer."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, list[str]]] = []
        self.hold: asyncio.Event | None = None  # set: requests on their way come back
        self.refused: set[str] = set()
        self.breaking: set[str] = set()
        self.ignored: set[str] = set()

    async def send(self, group: str, keys: list[str]) -> Mapping[str, str | BaseException]:
        self.requests.append((group, list(keys)))
        if self.hold is not None:
            await self.hold.wait()
        if self.breaking & set(keys):
            raise ConnectionError(f"request of {keys} failed")
        return {
            key: LookupError(f"{key} refused") if key in self.refused else f"{group}:{key}"
            for key in keys
            if key not in self.ignored
        }


def batcher(api: Api, *, limit: int = 10, fill: list[str] | None = None) -> Batcher[str, str, str]:
    return Batcher[str, str, str](
        api.send,
        limit=limit,
        window=WINDOW,
        name="test",
        fill=None if fill is None else (lambda group: fill),
    )


async def soon(awaitable: Awaitable[T]) -> T:
    """`awaitable`'s outcome within a second: a bug that strands a caller fails fast."""
    return await asyncio.wait_for(awaitable, 1.0)


async def requested(api: Api, count: int) -> None:
    """Until `count` requests have been sent (a second at most)."""
    for _ in range(100):
        if len(api.requests) >= count:
            return
        await asyncio.sleep(WINDOW / 2)
    raise AssertionError(f"{len(api.requests)} requests sent, not {count}")


async def test_callers_within_the_window_share_one_request() -> None:
    api = Api()
    batch = batcher(api)
    answers = await asyncio.gather(
        batch.get("c1", "a"), batch.get("c1", "b"), batch.get("c1", "a"), batch.get("c1", "c")
    )
    assert list(answers) == ["c1:a", "c1:b", "c1:a", "c1:c"]
    assert api.requests == [("c1", ["a", "b", "c"])]  # each key asked once


async def test_a_caller_after_the_window_gets_a_request_of_its_own() -> None:
    api = Api()
    batch = batcher(api)
    assert await batch.get("c1", "a") == "c1:a"
    assert await batch.get("c1", "a") == "c1:a"
    assert api.requests == [("c1", ["a"]), ("c1", ["a"])]


async def test_each_group_has_its_own_requests() -> None:
    api = Api()
    batch = batcher(api)
    answers = await asyncio.gather(batch.get("c1", "a"), batch.get("c2", "a"), batch.get("c1", "b"))
    assert list(answers) == ["c1:a", "c2:a", "c1:b"]
    assert sorted(api.requests) == [("c1", ["a", "b"]), ("c2", ["a"])]


async def test_requests_carry_at_most_limit_keys_each() -> None:
    api = Api()
    batch = batcher(api, limit=10)
    keys = [f"k{i:02d}" for i in range(25)]
    answers = await asyncio.gather(*(batch.get("c1", key) for key in keys))
    assert answers == [f"c1:{key}" for key in keys]
    assert [len(keys) for _, keys in api.requests] == [10, 10, 5]
    assert [key for _, chunk in api.requests for key in chunk] == keys


async def test_a_key_refused_fails_only_its_own_callers() -> None:
    api = Api()
    api.refused = {"b"}
    batch = batcher(api)
    a, b, b_again, c = await asyncio.gather(
        batch.get("c1", "a"),
        batch.get("c1", "b"),
        batch.get("c1", "b"),
        batch.get("c1", "c"),
        return_exceptions=True,
    )
    assert (a, c) == ("c1:a", "c1:c")
    assert isinstance(b, LookupError) and str(b) == "b refused"
    assert isinstance(b_again, LookupError) and str(b_again) == "b refused"
    assert len(api.requests) == 1


async def test_a_failed_request_fails_the_callers_it_carried_and_no_others() -> None:
    api = Api()
    api.breaking = {"k12"}  # in the second request of 10
    batch = batcher(api, limit=10)
    keys = [f"k{i:02d}" for i in range(15)]
    answers = await asyncio.gather(*(batch.get("c1", key) for key in keys), return_exceptions=True)
    assert answers[:10] == [f"c1:{key}" for key in keys[:10]]
    failed = answers[10:]
    assert all(isinstance(a, ConnectionError) for a in failed), failed
    assert "k12" in str(failed[0])


async def test_a_key_the_answer_leaves_out_fails_instead_of_waiting_forever() -> None:
    api = Api()
    api.ignored = {"b"}
    batch = batcher(api)
    a, b = await asyncio.gather(batch.get("c1", "a"), batch.get("c1", "b"), return_exceptions=True)
    assert a == "c1:a"
    assert isinstance(b, LookupError) and "'b'" in str(b)


async def test_a_cancelled_caller_leaves_the_batch_and_its_other_callers_alone() -> None:
    api = Api()
    batch = batcher(api)
    gone = asyncio.create_task(batch.get("c1", "a"))
    stays = asyncio.create_task(batch.get("c1", "a"))
    other = asyncio.create_task(batch.get("c1", "b"))
    await asyncio.sleep(0)  # they are waiting for the window
    gone.cancel()
    assert await soon(stays) == "c1:a"
    assert await soon(other) == "c1:b"
    assert gone.cancelled()
    assert api.requests == [("c1", ["a", "b"])]


async def test_a_caller_cancelled_while_its_request_is_on_its_way_leaves_the_others() -> None:
    api = Api()
    api.hold = asyncio.Event()
    batch = batcher(api)
    gone = asyncio.create_task(batch.get("c1", "a"))
    stays = asyncio.create_task(batch.get("c1", "a"))
    await requested(api, 1)
    gone.cancel()
    await asyncio.sleep(0)
    api.hold.set()
    assert await soon(stays) == "c1:a"
    assert gone.cancelled()


async def test_a_joining_caller_waits_for_the_request_already_on_its_way() -> None:
    api = Api()
    api.hold = asyncio.Event()
    batch = batcher(api)
    first = asyncio.create_task(batch.get("c1", "a"))
    await requested(api, 1)
    joining = asyncio.create_task(batch.get("c1", "a", join=True))
    queued = asyncio.create_task(batch.get("c1", "a"))  # not joining: the next request
    await asyncio.sleep(0)
    api.hold.set()
    assert list(await asyncio.gather(first, joining, queued)) == ["c1:a"] * 3
    assert api.requests == [("c1", ["a"]), ("c1", ["a"])]
    # Back: a joining caller now asks anew.
    assert await batch.get("c1", "a", join=True) == "c1:a"
    assert len(api.requests) == 3


async def test_an_older_request_landing_does_not_end_a_newer_one_for_the_same_key() -> None:
    """Key a is on its way twice (a caller that did not join sent it again); the first
    coming back must leave the second joinable."""
    api = Api()
    holds = [asyncio.Event(), asyncio.Event()]

    async def send(group: str, keys: list[str]) -> Mapping[str, str | BaseException]:
        hold = holds[len(api.requests)]
        api.requests.append((group, keys))
        await hold.wait()
        return {key: f"{group}:{key}#{len(api.requests)}" for key in keys}

    batch = Batcher[str, str, str](send, limit=10, window=WINDOW, name="test")
    first = asyncio.create_task(batch.get("c1", "a"))
    await requested(api, 1)
    second = asyncio.create_task(batch.get("c1", "a"))
    await requested(api, 2)
    holds[0].set()
    await first
    joining = asyncio.create_task(batch.get("c1", "a", join=True))
    await asyncio.sleep(WINDOW * 3)
    assert len(api.requests) == 2  # joined the second, asked nothing new
    holds[1].set()
    assert list(await asyncio.gather(second, joining)) == ["c1:a#2", "c1:a#2"]


async def test_free_places_of_the_last_request_carry_other_keys() -> None:
    api = Api()
    api.hold = asyncio.Event()
    batch = batcher(api, limit=4, fill=["x", "a", "y", "w", "z"])
    on_way = asyncio.create_task(batch.get("c1", "w"))
    await requested(api, 1)
    api.hold.set()
    await on_way
    api.hold.clear()
    # w's request is back, so w may be carried again: a, then the first three others.
    asked = asyncio.create_task(batch.get("c1", "a"))
    await requested(api, 2)
    assert api.requests[1] == ("c1", ["a", "x", "y", "w"])
    api.hold.set()
    assert await asked == "c1:a"


async def test_keys_waiting_or_on_their_way_are_not_carried_again() -> None:
    api = Api()
    api.hold = asyncio.Event()
    batch = batcher(api, limit=4, fill=["x", "a", "y", "z"])
    on_way = asyncio.create_task(batch.get("c1", "x"))
    await requested(api, 1)
    # x's own request carried a, y and z; x is still on its way when b is asked.
    assert api.requests[0] == ("c1", ["x", "a", "y", "z"])
    asked = asyncio.create_task(batch.get("c1", "b"))
    await requested(api, 2)
    assert api.requests[1] == ("c1", ["b"])
    api.hold.set()
    assert list(await asyncio.gather(on_way, asked)) == ["c1:x", "c1:b"]


async def test_a_full_request_carries_nothing_else() -> None:
    api = Api()
    batch = batcher(api, limit=2, fill=["x"])
    assert list(await asyncio.gather(batch.get("c1", "a"), batch.get("c1", "b"))) == [
        "c1:a",
        "c1:b",
    ]
    assert api.requests == [("c1", ["a", "b"])]


async def test_close_drops_the_waiting_callers_and_sends_nothing() -> None:
    api = Api()
    batch = batcher(api)
    callers = [asyncio.create_task(batch.get(group, "a")) for group in ("c1", "c2")]
    await asyncio.sleep(0)  # they are waiting for the window
    assert batch.busy
    await soon(batch.close())
    assert not batch.busy
    await asyncio.sleep(WINDOW * 3)
    assert api.requests == []
    assert all(caller.cancelled() for caller in callers)


async def test_close_drops_a_request_on_its_way() -> None:
    api = Api()
    api.hold = asyncio.Event()
    batch = batcher(api)
    caller = asyncio.create_task(batch.get("c1", "a"))
    await requested(api, 1)
    await soon(batch.close())
    api.hold.set()
    await asyncio.sleep(0)
    assert caller.cancelled()
    assert not batch.busy


async def test_nothing_is_asked_after_close() -> None:
    api = Api()
    batch = batcher(api)
    await soon(batch.close())
    with pytest.raises(RuntimeError, match="closed"):
        await batch.get("c1", "a")
    await asyncio.sleep(WINDOW * 3)
    assert api.requests == []
