"""One pass's context over the in-memory fakes, for tests of a single stage on its own.

    run = a_pass(test={"command": ["make", "test"]})
    run.observe()                  # what `observe` would have found, from the fakes' state
    assert await run_test(run.ctx)
    assert run.docker.runs == [run.image()]

The stage gets a real AppSession, Reporter, AppStatus and Metrics around the fakes of
tests/support/fakes.py; the app's state lives in a `MemoryStore`, which keeps what was last
written apart from the memory and can refuse writes as a full disk would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reconciler.adapters.ports import Adapters
from reconciler.app.reporter import Reporter
from reconciler.app.stages.context import AppSession, PassContext, PromotionSource
from reconciler.app.stages.watch import Rollout
from reconciler.app.state import AppMemory, cleared, decode_memory, encode_memory
from reconciler.app.status import AppStatus
from reconciler.config import AppConfig
from reconciler.decisions.model import Desired, ImageRef, Live, Observation, utcnow
from reconciler.metrics import Metrics
from tests.support.fakes import (
    QUICK,
    REGISTRY,
    FakeDocker,
    FakeEcr,
    FakeEcs,
    FakeGit,
    FakeMetrics,
    FakeRegistry,
    FakeSecrets,
)

REVISION = "a" * 40
NEWER = "b" * 40


@dataclass
class MemoryStore:
    """A StateStore in memory. `written(app)` is the memory as last saved; while `refusing`
    says why, every save fails (and is recorded) and the memory stays as it is."""

    refusing: str | None = None
    saves: int = 0  # successful writes
    _memories: dict[str, AppMemory] = field(default_factory=dict)
    _written: dict[str, str] = field(default_factory=dict)
    _errors: dict[str, str] = field(default_factory=dict)

    def load(self, app: str) -> AppMemory:
        return self._memories.setdefault(app, AppMemory())

    def forget(self, app: str) -> None:
        self._memories.pop(app, None)
        self._errors.pop(app, None)

    def write_error(self, app: str) -> str | None:
        return self._errors.get(app)

    async def reset(self, app: str) -> AppMemory:
        memory = cleared(self.load(app))
        await self.save(app)
        return memory

    async def save(self, app: str, memory: AppMemory | None = None) -> bool:
        if memory is not None:
            self._memories[app] = memory
        if self.refusing is not None:
            self._errors[app] = self.refusing
            return False
        self._written[app] = encode_memory(self.load(app))
        self._errors.pop(app, None)
        self.saves += 1
        return True

    def written(self, app: str) -> AppMemory:
        """The app's memory as the last successful save left it (empty before any)."""
        text = self._written.get(app)
        return AppMemory() if text is None else decode_memory(text)


@dataclass
class Pass:
    """A PassContext over fakes, and the fakes, status and metrics to look at."""

    ctx: PassContext
    git: FakeGit
    docker: FakeDocker
    registry: FakeRegistry
    ecs: FakeEcs
    store: MemoryStore
    status: AppStatus
    metrics: Metrics
    secrets: FakeSecrets
    sources: FakeMetrics = field(default_factory=FakeMetrics)  # analysis checks' values

    @property
    def session(self) -> AppSession:
        return self.ctx.session

    @property
    def app(self) -> AppConfig:
        return self.ctx.app

    @property
    def memory(self) -> AppMemory:
        return self.ctx.memory

    @property
    def written(self) -> AppMemory:
        return self.store.written(self.app.name)

    def image(self, revision: str | None = None) -> str:
        return f"{REGISTRY}/{self.app.ecr_repository}:{revision or self.ctx.revision}"

    def live_task_definition(self) -> str:
        assert self.ecs.state is not None
        return self.ecs.state.task_definition

    def observe(self) -> Observation:
        """Set the pass's observation to what the fakes show now (the stages after `observe`
        read it), without running the observe stage."""
        assert self.ecs.state is not None
        desired = Desired(
            revision=self.ctx.revision,
            image=ImageRef(REGISTRY, self.app.ecr_repository, self.ctx.revision),
        )
        live = Live(
            service=self.ecs.state,
            images={"app": self.ecs.image_of(self.ecs.state.task_definition)},
        )
        memory, pushed = self.memory, self.docker.pushes
        self.ctx.observation = Observation(
            desired=desired,
            live=live,
            image_in_registry=None if live.runs(desired.image) else str(desired.image) in pushed,
            hold=memory.hold,
            attempt=memory.attempt,
            build_failures=memory.build_failures.get(self.ctx.revision, 0),
            config_fingerprint=self.app.fingerprint(),
        )
        return self.ctx.observation

    async def roll_out(self, *, settle_after: int = 0) -> Rollout:
        """UpdateService to a new task definition of the pass's image, as deploy sends it;
        the fake's rollout completes after `settle_after` more DescribeServices."""
        self.ecs.settle_after = settle_after
        previous = self.live_task_definition()
        arn = await self.ecs.register_task_definition(
            {"family": "web", "containerDefinitions": [{"name": "app", "image": self.image()}]},
            [],
        )
        started = await self.ecs.update_service(
            cluster=self.app.cluster, service=self.app.service, task_definition=arn
        )
        return Rollout(
            deployment_id=started.deployment_id,
            task_definition=arn,
            previous=previous,
            since=utcnow(),
            service_deployment=started.service_deployment,
        )

    def results(self) -> list[tuple[str, str]]:
        """(revision, result) of each history entry, newest first, as operators see it."""
        return [(h.revision, h.result.value) for h in self.status.history]

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return value or 0.0

    def count(self, result: str) -> float:
        """Passes counted with `result` (`reconciler_reconcile_total`)."""
        return self.sample("reconciler_reconcile_total", app=self.app.name, result=result)

    def timed(self, histogram: str) -> float:
        """How many times `histogram` (e.g. `reconciler_build_seconds`) was observed."""
        return self.sample(f"{histogram}_count")


def app_config(name: str = "web", **keys: Any) -> AppConfig:
    return AppConfig.model_validate(
        {
            "name": name,
            "repo": f"file:///srv/{name}.git",
            "ecr_repository": name,
            "cluster": "cluster",
            "service": "web",
            "rollout_timeout": 5.0,
            **keys,
        }
    )


def a_pass(
    *,
    revision: str = REVISION,
    head: str | None = None,
    git: FakeGit | None = None,
    registry: Callable[[FakeDocker], FakeRegistry] = FakeRegistry,
    build_slots: int = 2,
    promotion: PromotionSource | None = None,
    **app_keys: Any,
) -> Pass:
    """A pass of app `web` on `revision`; git's head is `head` (default: the same revision).
    `registry` makes the registry fake from the Docker one; `app_keys` are further keys of
    the app's config, e.g. extra_tags=["latest"]."""
    app = app_config(**app_keys)
    git = git or FakeGit(head or revision)
    docker, ecs, secrets, sources = FakeDocker(), FakeEcs(), FakeSecrets(), FakeMetrics()
    registry_ = registry(docker)
    store, status, metrics = MemoryStore(), AppStatus(name=app.name), Metrics()
    session = AppSession(
        app=app,
        io=Adapters(
            git=git,
            docker=docker,
            registry=registry_,
            ecr=FakeEcr(),
            ecs=ecs,
            secrets=secrets,
            metrics=sources,
        ),
        store=store,
        report=Reporter(app=app.name, status=status, metrics=metrics, store=store),
        timings=QUICK,
        build_slots=asyncio.Semaphore(build_slots),
        poll_interval=3600.0,
        promotion=promotion,
    )
    return Pass(
        ctx=PassContext(session, revision=revision),
        git=git,
        docker=docker,
        registry=registry_,
        ecs=ecs,
        store=store,
        status=status,
        metrics=metrics,
        secrets=secrets,
        sources=sources,
    )
