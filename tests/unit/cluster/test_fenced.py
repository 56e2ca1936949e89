"""The fence: a write starts only while the lease is valid, is cut off the moment the lease
stops being valid, and goes on while the lease keeps being renewed."""

from __future__ import annotations

import asyncio

import pytest

from reconciler.cluster.fenced import Fence
from reconciler.errors import LeaseNotHeld


class Lease:
    """A lease valid until `until` on the event loop's clock."""

    def __init__(self, seconds: float) -> None:
        self.until = asyncio.get_running_loop().time() + seconds

    def left(self, app: str) -> float:
        return max(0.0, self.until - asyncio.get_running_loop().time())

    def renew(self, seconds: float) -> None:
        self.until = asyncio.get_running_loop().time() + seconds


def fence_of(lease: Lease) -> Fence:
    return Fence("web", left=lease.left, why_not=lambda app: f"{app} is not held")


async def test_a_write_is_not_sent_without_a_valid_lease() -> None:
    lease = Lease(0.0)
    sent = []
    with pytest.raises(LeaseNotHeld, match="not sending UpdateService: web is not held"):
        async with fence_of(lease).held("UpdateService"):
            sent.append(1)
    assert sent == []


async def test_a_write_that_outlasts_its_lease_is_abandoned() -> None:
    lease = Lease(0.05)
    with pytest.raises(LeaseNotHeld, match="UpdateService abandoned: the lease of 'web' ran out"):
        async with fence_of(lease).held("UpdateService"):
            await asyncio.sleep(30)


async def test_a_write_goes_on_while_the_lease_is_renewed() -> None:
    lease = Lease(0.5)

    async def renew() -> None:
        # Outlasts the first lease by far, each renewal well before the last one runs out
        # (a loaded machine may stall the loop for a while).
        for _ in range(8):
            await asyncio.sleep(0.1)
            lease.renew(0.5)

    renewing = asyncio.create_task(renew())
    async with fence_of(lease).held("push"):
        await renewing  # longer than the first lease: renewals carry it
    assert lease.left("web") > 0


async def test_an_error_of_the_write_itself_passes_through() -> None:
    lease = Lease(10)
    with pytest.raises(TimeoutError, match="its own"):
        async with fence_of(lease).held("RunTask"):
            raise TimeoutError("its own")


async def test_a_finished_write_leaves_no_task_behind() -> None:
    lease = Lease(10)
    before = len(asyncio.all_tasks())
    async with fence_of(lease).held("RegisterTaskDefinition"):
        pass
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == before
