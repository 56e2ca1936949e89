"""Waiting well: exponential backoff with jitter, and sleeps a nudge can cut short."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Timings:
    """Every delay the loop uses, in one place, so tests and operators can shorten them."""

    retry_base: float = 2.0  # first retry after a transient error
    retry_cap: float = 300.0  # never wait longer than this between retries
    # Then the last one, repeated. Each step is a multiple of the one before, so apps polling
    # on the aligned grid (see `aligned`) ask at the same instants and share a DescribeServices.
    rollout_polls: tuple[float, ...] = (0.25, 0.5, 1.0)


def backoff_delay(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Equal jitter (AWS architecture blog): uniform in [step / 2, step], where
    step = min(cap, base * 2**attempt).

    Jitter spreads the retries of many apps hitting the same throttled API; the floor of half
    the step keeps a retry from landing immediately after the failure.
    """
    # The exponent is clamped: an outage of a few days reaches attempt 1024, where
    # base * 2**attempt no longer fits in a float and would raise OverflowError.
    step = min(cap, base * (2.0 ** min(max(0, attempt), 60)))
    chooser = rng or random
    return step / 2 + chooser.uniform(0, step / 2)


def aligned(step: float, *, now: float | None = None) -> float:
    """Seconds until the next multiple of `step` on the monotonic clock.

    Every app loop of the process sleeping to the same grid wakes at the same instant, so
    their passes (or rollout polls) coincide: the ECS adapter batches their DescribeServices
    and the git adapter shares their ls-remote. Monotonic time is one clock per machine.
    """
    moment = time.monotonic() if now is None else now
    return step - (moment % step)


def rollout_step(elapsed: float, polls: tuple[float, ...], *, per_step: int = 4) -> float:
    """The poll step `elapsed` seconds into a rollout: each step of `polls` serves for
    `per_step` polls' worth of time, then the next; the last one for ever.

    From the time since UpdateService rather than a count of polls, so rollouts started
    together poll on the same step, and (aligned) at the same instants.
    """
    limit = 0.0
    for step in polls[:-1]:
        limit += step * per_step
        if elapsed < limit:
            return step
    return polls[-1]


async def sleep(delay: float, *, wakeup: asyncio.Event | None = None) -> bool:
    """Sleep up to `delay` seconds; True when woken early by `wakeup`."""
    if wakeup is None:
        await asyncio.sleep(delay)
        return False
    if wakeup.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wakeup.wait(), timeout=max(0.0, delay))
        return True
    return False
