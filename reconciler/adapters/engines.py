"""Several Docker engines behind one DockerPort (`[build].engines`).

A build goes to the engine with the fewest builds running, at most `max_per_engine` each;
ties go to the engine listed first, so a lightly loaded pool keeps building where its local
cache is warm. When every engine that answers is full, the build waits for a place.

An engine that cannot be reached is left out, and tried again (a ping, before the next build
it would take) once a backoff has passed that grows while it stays away. A build whose engine
goes away part way (DockerUnavailable) starts again from the beginning on another engine, at
most once per engine. Builds never push: the image's test run and push go to the engine that
completed its build, so a half-built image never reaches the registry. When that engine is
gone, the push fails with DockerUnavailable and the next pass builds the image again.

Which engine takes a build is `choose`, a pure function of the engines' loads; EnginePool
does the waiting, the pinging and the counting around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import structlog

from reconciler.adapters.buildkit import EngineTls
from reconciler.adapters.docker import BuildResult, DockerEngine
from reconciler.adapters.ports import DockerPort
from reconciler.adapters.registry import RegistryAuth
from reconciler.adapters.values import BuildRequest, ContainerRun
from reconciler.aio.backoff import backoff_delay
from reconciler.decisions.local_images import LocalImage
from reconciler.decisions.model import TestRun
from reconciler.errors import DockerUnavailable

log = structlog.get_logger("reconciler.docker")

# Images whose engine is remembered for their test run and push. A pass builds, tests and
# pushes within minutes; an image older than this many builds is built again if still wanted.
REMEMBERED_IMAGES = 1024


@dataclass(frozen=True)
class Load:
    """One engine as the choice sees it."""

    running: int  # builds on it now, places taken for a ping included
    # Monotonic time before which it is left alone, after it failed to answer; None when it
    # answered last (or has not been tried yet).
    down_until: float | None = None


@dataclass(frozen=True)
class Take:
    """Build on engine `index`; `probe`: it failed to answer before, ping it first."""

    index: int
    probe: bool


@dataclass(frozen=True)
class Wait:
    """Every engine that answers is full: wait for a build to end, or at most `seconds` (when
    an engine's backoff ends then and it may take the build)."""

    seconds: float | None


@dataclass(frozen=True)
class NoEngine:
    """Every engine left to try is down and not due a retry: nothing to wait for."""


def choose(
    loads: Sequence[Load], *, now: float, max_per_engine: int, skip: Collection[int] = ()
) -> Take | Wait | NoEngine:
    """Where the next build goes. Engines in `skip` (tried for this build already) are out."""
    left = [i for i in range(len(loads)) if i not in skip]
    room = [i for i in left if loads[i].running < max_per_engine]
    # Seconds until each engine with room that is down may be tried again (<= 0: now).
    backoffs = {i: until - now for i in room if (until := loads[i].down_until) is not None}
    free = [i for i in room if backoffs.get(i, 0.0) <= 0]
    if free:
        best = min(free, key=lambda i: (loads[i].running, i))
        return Take(index=best, probe=best in backoffs)
    if all(loads[i].down_until is not None for i in left):
        return NoEngine()
    return Wait(seconds=min(backoffs.values()) if backoffs else None)


class Engine(DockerPort, Protocol):
    """What the pool needs of one engine; DockerEngine is one."""

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


@dataclass
class _Slot:
    url: str
    engine: Engine
    running: int = 0
    failures: int = 0  # in a row, for the backoff
    down_until: float | None = None
    error: str = ""  # why it last failed to answer

    def load(self) -> Load:
        return Load(running=self.running, down_until=self.down_until)


class EnginePool:
    """DockerPort over `engines` (URL -> engine, in the order builds prefer them)."""

    def __init__(
        self,
        engines: Mapping[str, Engine],
        *,
        max_per_engine: int,
        retry_base: float = 1.0,
        retry_cap: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not engines:
            raise ValueError("an engine pool needs at least one engine")
        if max_per_engine < 1:
            raise ValueError(f"max_per_engine must be at least 1, not {max_per_engine}")
        self._slots = [_Slot(url=url, engine=engine) for url, engine in engines.items()]
        self._max = max_per_engine
        self._retry_base = retry_base
        self._retry_cap = retry_cap
        self._clock = clock
        # Replaced each time a place frees up: a build that decided to wait holds the event of
        # that moment, so a place freed after the decision cannot be missed.
        self._freed = asyncio.Event()
        self._built: OrderedDict[str, _Slot] = OrderedDict()

    @classmethod
    def open(
        cls,
        urls: Sequence[str],
        *,
        tls: tuple[Path, Path, Path] | None,
        builder: str,
        network: str,
        max_per_engine: int,
        build_timeout: float | None = None,
    ) -> EnginePool:
        """A pool of DockerEngines; `tls` (CA, certificate, key) is for the tcp:// ones.

        A build stopped at `build_timeout` is BuildFailed, so it is not tried on another
        engine, and its place is free at once."""
        certificates = None
        if tls is not None:
            ca, cert, key = (str(path) for path in tls)
            certificates = EngineTls(ca_file=ca, cert_file=cert, key_file=key)
        engines = {
            url: DockerEngine(
                url=url,
                builder=builder,
                network=network,
                tls=certificates if url.startswith("tcp://") else None,
                build_timeout=build_timeout,
            )
            for url in urls
        }
        return cls(engines, max_per_engine=max_per_engine)

    async def build(
        self,
        context: BinaryIO,
        request: BuildRequest,
        *,
        on_first_step: Callable[[], None] | None = None,
    ) -> BuildResult:
        """Build on the least busy engine; again on another when that one goes away.

        `context` must be seekable: a build started again reads it again from where it was.
        DockerUnavailable when no engine is left to try.
        """
        start = context.tell()
        tried: set[int] = set()
        while True:
            index = await self._take(request.tag, skip=tried)
            tried.add(index)
            slot = self._slots[index]
            try:
                result = await slot.engine.build(context, request, on_first_step=on_first_step)
            except DockerUnavailable as exc:
                self._down(slot, exc)
                context.seek(start)
                continue
            finally:
                self._release(slot)
            self._remember(request.tag, slot)
            return result

    async def push(self, image: str, *, auth: RegistryAuth | None) -> str:
        """Push `image` from the engine that built it."""
        return await self._holder(image, "push").push(image, auth=auth)

    async def tag(self, image: str, new: str) -> None:
        """Tag `image` on the engine that built it; `new` is pushed from there too."""
        slot = self._slot_of(image, "tag")
        await slot.engine.tag(image, new)
        self._remember(new, slot)

    async def local_images(self, *, label: str) -> list[LocalImage]:
        """The images carrying `label` on every engine that answers (one that does not is
        left out: its images are judged when it answers again)."""
        found: list[LocalImage] = []
        for slot in self._slots:
            try:
                found += await slot.engine.local_images(label=label)
            except DockerUnavailable as exc:
                log.warning("engine_images_not_listed", engine=slot.url, error=str(exc))
        return found

    async def remove_image(self, tag: str) -> None:
        """Remove `tag` from every engine; the first failure is raised once all were tried."""
        failures: list[DockerUnavailable] = []
        for slot in self._slots:
            try:
                await slot.engine.remove_image(tag)
            except DockerUnavailable as exc:
                failures.append(exc)
        self._built.pop(tag, None)
        if failures:
            raise failures[0]

    async def run(self, request: ContainerRun, *, on_line: Callable[[str], None]) -> TestRun:
        """Run the test command on the engine that built its image."""
        return await self._holder(request.image, "test run").run(request, on_line=on_line)

    async def close(self) -> None:
        for slot in self._slots:
            await slot.engine.close()

    def _remember(self, image: str, slot: _Slot) -> None:
        self._built[image] = slot
        self._built.move_to_end(image)
        while len(self._built) > REMEMBERED_IMAGES:
            self._built.popitem(last=False)

    def _holder(self, image: str, action: str) -> Engine:
        return self._slot_of(image, action).engine

    def _slot_of(self, image: str, action: str) -> _Slot:
        slot = self._built.get(image)
        if slot is None:
            raise DockerUnavailable(
                f"{action} of {image}: no engine of the pool built it since the daemon started;"
                " the next pass builds it again"
            )
        return slot

    async def _take(self, tag: str, *, skip: Collection[int]) -> int:
        """The engine the build of `tag` goes to, its place taken; waits while all are full."""
        while True:
            loads = [slot.load() for slot in self._slots]
            decision = choose(loads, now=self._clock(), max_per_engine=self._max, skip=skip)
            if isinstance(decision, NoEngine):
                reasons = "; ".join(f"{s.url}: {s.error}" for s in self._slots if s.error)
                raise DockerUnavailable(
                    f"no Docker engine can take the build of {tag}: {reasons or 'none answers'}"
                )
            if isinstance(decision, Wait):
                freed = self._freed
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(decision.seconds):
                        await freed.wait()
                continue
            slot = self._slots[decision.index]
            # Taken before the ping's await, so no other build counts this place as free.
            slot.running += 1
            if decision.probe:
                try:
                    await slot.engine.ping()
                except DockerUnavailable as exc:
                    self._release(slot)
                    self._down(slot, exc)
                    continue
                except BaseException:
                    self._release(slot)
                    raise
                self._up(slot)
            log.info("build_engine", image=tag, engine=slot.url, running=slot.running)
            return decision.index

    def _release(self, slot: _Slot) -> None:
        slot.running -= 1
        freed, self._freed = self._freed, asyncio.Event()
        freed.set()

    def _down(self, slot: _Slot, exc: DockerUnavailable) -> None:
        delay = backoff_delay(slot.failures, base=self._retry_base, cap=self._retry_cap)
        slot.failures += 1
        slot.down_until = self._clock() + delay
        slot.error = str(exc)
        log.warning(
            "engine_unreachable", engine=slot.url, error=slot.error, retry_in=round(delay, 1)
        )

    def _up(self, slot: _Slot) -> None:
        log.info("engine_answers_again", engine=slot.url)
        slot.failures, slot.down_until, slot.error = 0, None, ""
