"""Ways for fault tests to see what the daemon did, and what it did not do.

- `eventually`: wait (bounded) until a check holds; the one polling helper of the suite.
- `record_delays`: every (attempt, delay) the loop drew from `backoff_delay`.
- `assert_backoff`: those delays grow, are jittered and stay under the cap.
- `record_updates`: every task definition the daemon's UpdateService calls asked for, in order.
- `images_of_family`: the managed image of every task definition registered for a World.
- `reconcile_count`: a `reconciler_reconcile_total` sample of an in-process daemon.
- `slow_dockerfile`: a build that lasts long enough for a test to act during it.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest

from reconciler.adapters.ecs import Ecs
from reconciler.aio import backoff
from reconciler.decisions.model import Started
from tests.support.metrics import passes_of
from tests.support.world import RunningDaemon, World


async def eventually(
    check: Callable[[], bool | Awaitable[bool]],
    *,
    timeout: float = 60.0,
    what: str = "",
    interval: float = 0.02,
) -> None:
    """Wait until `check()` holds; fail naming `what` after `timeout` seconds.

    `check` may be a coroutine function (one that asks the daemon over HTTP, say). The bound
    is generous on purpose: it stops a broken test hanging, it does not time anything.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(interval)


def record_delays(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, float]]:
    seen: list[tuple[int, float]] = []
    real = backoff.backoff_delay

    def recording(attempt: int, **kwargs: Any) -> float:
        delay = real(attempt, **kwargs)
        seen.append((attempt, delay))
        return delay

    monkeypatch.setattr(backoff, "backoff_delay", recording)
    return seen


def assert_backoff(delays: list[tuple[int, float]], *, base: float, cap: float) -> None:
    """Consecutive attempts from 0, each delay in [step/2, step] of a capped doubling step."""
    assert [attempt for attempt, _ in delays] == list(range(len(delays))), delays
    ratios = set()
    for attempt, delay in delays:
        step = min(cap, base * 2**attempt)
        assert step / 2 <= delay <= step <= cap, (attempt, delay)
        ratios.add(round(delay / step, 9))
    assert len(ratios) > 1, f"no jitter in {delays}"


def record_updates(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Task definition ARNs the daemon asked UpdateService for (successful calls), in order."""
    seen: list[str] = []
    real = Ecs.update_service

    async def recording(
        self: Ecs,
        *,
        cluster: str,
        service: str,
        task_definition: str,
        settings: Mapping[str, Any] | None = None,
    ) -> Started:
        started = await real(
            self,
            cluster=cluster,
            service=service,
            task_definition=task_definition,
            settings=settings,
        )
        seen.append(task_definition)
        return started

    monkeypatch.setattr(Ecs, "update_service", recording)
    return seen


def image_of(world: World, arn: str) -> str:
    definition, _ = world.task_definition(arn)
    return next(str(c["image"]) for c in definition["containerDefinitions"] if c["name"] == "app")


def images_of_family(world: World) -> list[str]:
    """The `app` image of every task definition of the World's family, oldest first."""
    arns = world.ecs().list_task_definitions(familyPrefix=world.name, sort="ASC")
    return [image_of(world, arn) for arn in arns["taskDefinitionArns"]]


def passes(daemon: RunningDaemon, app: str | None = None) -> float:
    """The app's finished passes in the daemon, as its metrics count them."""
    return passes_of(daemon.daemon.metrics, app or daemon.world.name)


def reconcile_count(daemon: RunningDaemon, result: str, app: str | None = None) -> float:
    value = daemon.daemon.metrics.registry.get_sample_value(
        "reconciler_reconcile_total", {"app": app or daemon.world.name, "result": result}
    )
    return value or 0.0


def slow_dockerfile(base_image: str, seconds: int = 2) -> str:
    """A build that takes a few seconds, so a test can act while it runs.

    The RUN step is unique, so no earlier build's cache makes it instant.
    """
    step = f"sleep {seconds} && echo {uuid.uuid4().hex}"
    return f"FROM {base_image}\nRUN {step}\nCOPY app.txt /app.txt\n"
