"""One app's life: observe -> plan -> act, again and again, with backoff and nudges.

A pass starts from scratch every time (git, the registry, ECS), so whatever happened before,
a crash, a restart or a change in the console, the next pass converges from what is true now.
Errors are sorted by what to do next (errors.py): transient ones are retried with jittered
backoff and never mark a revision as failed; a failed build counts towards the 3 attempts a
revision gets; a failed rollout rolls back and holds the revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from reconciler import backoff
from reconciler.adapters.docker import DockerEngine
from reconciler.adapters.ecr import Ecr
from reconciler.adapters.ecs import Ecs
from reconciler.adapters.git import GitMirrors, GitSource
from reconciler.adapters.registry import Registry
from reconciler.config import AppConfig
from reconciler.errors import (
    BuildFailed,
    ManifestError,
    ReconcilerError,
    RolloutFailed,
    StalledError,
    TransientError,
)
from reconciler.logs import redact
from reconciler.metrics import Metrics
from reconciler.model import (
    AwaitRollout,
    Deploy,
    Desired,
    Held,
    HistoryEntry,
    Hold,
    ImageRef,
    InSync,
    Live,
    Observation,
    Observe,
    Phase,
    Result,
    RollBack,
    image_repository,
    utcnow,
)
from reconciler.plan import plan
from reconciler.repourl import redact_url
from reconciler.rollout import Failed, Succeeded, judge
from reconciler.state import HISTORY_LIMIT, AppMemory, StateStore
from reconciler.status import AppStatus

log = structlog.get_logger("reconciler.loop")
# How old a DescribeServices answer a polling pass may use (capped at half the interval): the
# apps of a cluster pass together, and the first one's calls carry their neighbours.
OBSERVE_MAX_AGE = 5.0


@dataclass(frozen=True)
class Adapters:
    """The seams to the outside world; tests of the loop may swap in small fakes."""

    git: GitMirrors
    docker: DockerEngine
    registry: Registry
    ecr: Ecr
    ecs: Ecs


class Next(enum.Enum):
    """What the loop does after a pass."""

    WAIT = "wait"  # sleep poll_interval (or until nudged)
    RETRY = "retry"  # back off, then try again
    AGAIN = "again"  # start another pass at once (a newer revision turned up)


def source_of(app: AppConfig) -> GitSource:
    return GitSource(
        url=app.repo,
        branch=app.branch,
        revision=app.revision,
        paths=app.paths,
        token_file=app.git_token_file,
        ssh_key_file=app.git_ssh_key_file,
    )


def managed_images(app: AppConfig, definition: Mapping[str, Any]) -> dict[str, str]:
    """The containers whose image this app manages, with their current image."""
    containers = definition.get("containerDefinitions") or []
    if app.containers:
        images = {
            c["name"]: str(c.get("image", ""))
            for c in containers
            if c.get("name") in app.containers
        }
        missing = sorted(set(app.containers) - set(images))
        if missing:
            raise ManifestError(
                f"task definition {definition.get('family')} has no container named "
                f"{', '.join(missing)}"
            )
        return images
    images = {
        c["name"]: str(c.get("image", ""))
        for c in containers
        if image_repository(str(c.get("image", ""))) == app.ecr_repository
    }
    if not images:
        raise ManifestError(
            f"no container of task definition {definition.get('family')} uses repository "
            f"{app.ecr_repository!r}; name the managed ones in `containers`"
        )
    return images


def _held_error(reason: str, revision: str, memory: AppMemory) -> str:
    """The Held reason, with the output of the last failed build of `revision` if it was one."""
    last = next((h for h in memory.history if h.revision == revision), None)
    if last is not None and last.result is Result.BUILD_FAILED and last.error:
        return f"{reason}\n{last.error}"
    return reason


def with_image(definition: Mapping[str, Any], containers: set[str], image: str) -> dict[str, Any]:
    """A copy of `definition` with only the managed containers' images changed."""
    result = copy.deepcopy(dict(definition))
    for container in result.get("containerDefinitions", []):
        if container.get("name") in containers:
            container["image"] = image
    return result


async def observe(
    app: AppConfig, io: Adapters, *, revision: str, memory: AppMemory, max_age: float = 0.0
) -> Observation:
    """Everything the planner needs, read from ECS, the registry and the app's memory.

    Reads only: the `plan` command uses this to show what a pass would do. With `max_age`,
    a DescribeServices answer up to that many seconds old will do.
    """
    registry = await io.ecr.registry()
    desired = Desired(revision=revision, image=ImageRef(registry, app.ecr_repository, revision))
    service = await io.ecs.describe_service(app.cluster, app.service, max_age=max_age)
    definition, _tags = await io.ecs.task_definition(service.task_definition)
    live = Live(service=service, images=managed_images(app, definition))
    image_in_registry: bool | None = None
    if not live.runs(desired.image):
        image_in_registry = await io.registry.has_tag(
            registry=registry, repository=app.ecr_repository, tag=revision, auth=await io.ecr.auth()
        )
    return Observation(
        desired=desired,
        live=live,
        image_in_registry=image_in_registry,
        hold=memory.hold,
        build_failures=memory.build_failures.get(revision, 0),
        suspended=app.suspended,
        config_fingerprint=app.fingerprint(),
    )


class AppLoop:
    def __init__(
        self,
        *,
        app: AppConfig,
        poll_interval: float,
        adapters: Adapters,
        build_slots: asyncio.Semaphore,
        store: StateStore,
        status: AppStatus,
        metrics: Metrics,
        timings: backoff.Timings,
    ) -> None:
        self.app = app
        self._poll_interval = poll_interval
        self._io = adapters
        self._build_slots = build_slots
        self._store = store
        self.status = status
        self._metrics = metrics
        self._timings = timings
        self._source = source_of(app)
        self._wakeup = asyncio.Event()
        self._nudged_during_rollout = asyncio.Event()
        self._clear_hold_requested = False
        # Held around RegisterTaskDefinition + UpdateService: a stop waits for it, so a
        # reload or shutdown never leaves a registration without its service update.
        self._critical = asyncio.Lock()
        self._attempt = 0
        self._woken = True  # the first pass, like a nudged one, reads everything afresh
        self.passes = 0
        # Bumped by every nudge; compared with the value seen at the last git resolve to tell
        # whether the remote may have moved since (a newer revision must win, SPEC 3).
        self._nudges = 0
        self._nudges_at_resolve = 0
        # (live task definition, image, registered ARN) of a registration whose UpdateService
        # has not succeeded yet: a retry reuses it instead of registering one more revision.
        self._registered: tuple[str, str, str] | None = None
        memory = store.load(app.name)
        if not status.history:
            status.history.extend(memory.history[:HISTORY_LIMIT])

    # Steering --------------------------------------------------------------------------

    def nudge(self) -> None:
        """Start a pass now; a burst of nudges collapses into one pass (plus one if mid-pass)."""
        # A nudge means "the remote may have moved": do not answer from cached remote heads.
        self._io.git.forget_heads(self.app.repo)
        self._nudges += 1
        self._wakeup.set()
        self._nudged_during_rollout.set()

    def sync(self) -> None:
        """Operator's `reconciler sync`: clear a Failed hold and start a pass now."""
        self._clear_hold_requested = True
        self.nudge()

    async def quiesce(self, grace: float) -> None:
        """Wait (bounded) for a registration and service update under way, then bar new ones."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._critical.acquire(), grace)

    # The loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            # Cleared before the pass, so a nudge that arrives during it starts one more.
            self._wakeup.clear()
            self.passes += 1
            outcome = await self._pass()
            if outcome is Next.AGAIN:
                continue
            if outcome is Next.RETRY:
                # Never later than a normal poll: a retry costs no more than polling does.
                delay = min(
                    self._poll_interval,
                    backoff.backoff_delay(
                        self._attempt, base=self._timings.retry_base, cap=self._timings.retry_cap
                    ),
                )
                self._attempt += 1
            else:
                # To the next point of a grid shared by every app (never later than one
                # interval): all apps pass together, so their DescribeServices share calls and
                # the apps of a repository share one ls-remote.
                delay = backoff.aligned(self._poll_interval)
                self._attempt = 0
            self._woken = await backoff.sleep(delay, wakeup=self._wakeup)

    async def _pass(self) -> Next:
        with structlog.contextvars.bound_contextvars(app=self.app.name):
            try:
                return await self._reconcile()
            except TransientError as exc:
                self._error(exc, result="retry", level="warning")
                return Next.RETRY
            except StalledError as exc:
                # Fixed outside the daemon (a branch pushed again, a permission granted), so
                # it is retried too, with backoff: the fix is noticed without a nudge.
                self._error(exc, result="stalled", level="error")
                return Next.RETRY
            except BuildFailed as exc:
                self._error(exc, result="build_failed", level="error", detail=exc.log_tail)
                return Next.RETRY
            except RolloutFailed as exc:  # raised only when even the rollback could not start
                self._error(exc, result="failed", level="error")
                return Next.RETRY
            except ReconcilerError as exc:
                self._error(exc, result="error", level="error")
                return Next.RETRY
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A bug must not kill the app's loop or the daemon; it is logged in full and the
                # pass retried with backoff, like any transient failure.
                log.exception("pass_crashed")
                self._error(exc, result="error", level="error")
                return Next.RETRY

    def _error(
        self, exc: BaseException, *, result: str, level: str, detail: list[str] | None = None
    ) -> None:
        message = redact(str(exc) or type(exc).__name__)
        if detail:
            message = message + "\n" + "\n".join(redact(line) for line in detail[-10:])
        self.status.last_error = message
        getattr(log, level)("pass_failed", error=message, kind=type(exc).__name__)
        self._metrics.reconcile_total.labels(app=self.app.name, result=result).inc()
        if self.status.phase in {Phase.BUILDING, Phase.PUSHING, Phase.DEPLOYING}:
            self._set_phase(Phase.PENDING)

    def _set_phase(self, phase: Phase) -> None:
        if self.status.phase != phase:
            log.info("phase_changed", phase=phase.value, previous=self.status.phase.value)
            self.status.phase = phase
            self.status.last_transition = utcnow()
        self._metrics.app_in_sync.labels(app=self.app.name).set(1 if phase is Phase.IN_SYNC else 0)

    # One pass ----------------------------------------------------------------------------

    async def _reconcile(self) -> Next:
        memory = self._store.load(self.app.name)
        if self._clear_hold_requested:
            self._clear_hold_requested = False
            if memory.hold or memory.build_failures:
                log.info("hold_cleared", revision=memory.hold.revision if memory.hold else None)
            memory.hold = None
            memory.build_failures.clear()
            self._store.save(self.app.name, memory)

        hold = memory.hold
        if hold is not None and hold.rollback_to:
            # A rollback owed after a failed rollout does not depend on git: pay it before
            # asking the remote, so an unreachable git server cannot keep a failed revision live.
            with structlog.contextvars.bound_contextvars(revision=hold.revision):
                self._set_phase(Phase.FAILED)
                await self._roll_back(hold.rollback_to, memory)

        self._nudges_at_resolve = self._nudges
        revision = await self._io.git.resolve(self._source)
        structlog.contextvars.bind_contextvars(revision=revision)
        try:
            return await self._reconcile_revision(revision, memory)
        finally:
            structlog.contextvars.unbind_contextvars("revision")

    async def _reconcile_revision(self, revision: str, memory: AppMemory) -> Next:
        # A nudged pass reads ECS afresh; a polling pass may use a neighbour's answer.
        max_age = 0.0 if self._woken else min(OBSERVE_MAX_AGE, self._poll_interval / 2)
        observation = await observe(
            self.app, self._io, revision=revision, memory=memory, max_age=max_age
        )
        if max_age and not isinstance(plan(observation), InSync | Observe | Held):
            # About to write: the copy must be of the task definition live now, not of one a
            # few seconds ago.
            observation = await observe(self.app, self._io, revision=revision, memory=memory)
        desired, live = observation.desired, observation.live
        self.status.desired_revision = revision
        self.status.desired_image = str(desired.image)
        self.status.live_image = live.image
        self.status.live_task_definition = live.task_definition
        action = plan(observation)
        self.status.observed = True

        match action:
            case Observe():
                self._set_phase(Phase.SUSPENDED)
                self._count("suspended")
                return Next.WAIT
            case InSync():
                self.status.last_error = None
                self._set_phase(Phase.IN_SYNC)
                self._count("in_sync")
                if memory.hold is not None or memory.build_failures:
                    memory.hold = None
                    memory.build_failures.clear()
                    self._store.save(self.app.name, memory)
                return Next.WAIT
            case RollBack(task_definition=previous):
                self._set_phase(Phase.FAILED)
                await self._roll_back(previous, memory)
                return Next.WAIT
            case Held(reason=reason):
                self.status.last_error = _held_error(reason, revision, memory)
                self._set_phase(Phase.FAILED)
                self._count("held")
                return Next.WAIT
            case AwaitRollout():
                log.info("rollout_in_flight_found", deployment=action.deployment_id)
                self._set_phase(Phase.DEPLOYING)
                return await self._await_rollout(
                    revision=revision,
                    deployment_id=action.deployment_id,
                    task_definition=action.task_definition,
                    previous=action.previous_task_definition,
                    started_at=utcnow(),
                    memory=memory,
                )
            case Deploy():
                return await self._deploy(
                    desired=desired, live=live, build=action.build, memory=memory
                )
        raise AssertionError(f"unplanned action {action!r}")  # pragma: no cover

    def _count(self, result: str) -> None:
        self._metrics.reconcile_total.labels(app=self.app.name, result=result).inc()

    # Acting ------------------------------------------------------------------------------

    async def _deploy(
        self, *, desired: Desired, live: Live, build: bool, memory: AppMemory
    ) -> Next:
        started_at = utcnow()
        if build:
            await self._build_and_push(desired, memory, started_at)
            # A newer commit may have landed while we built. Never deploy an older revision
            # after a newer one: if the desired revision moved, start over with it.
            if await self._superseded(desired.revision, memory, started_at):
                return Next.AGAIN

        self._set_phase(Phase.DEPLOYING)
        template, tags = await self._io.ecs.task_definition(live.task_definition)
        new_definition = with_image(template, set(live.images), str(desired.image))
        stable = live.service.previous_task_definition if live.service.in_flight else None
        previous = stable or live.task_definition
        # A webhook since the last look at git may announce a newer revision: this is the last
        # point where the older one can be dropped without ever reaching the service.
        if self._nudges != self._nudges_at_resolve and await self._superseded(
            desired.revision, memory, started_at
        ):
            return Next.AGAIN
        async with self._critical:
            arn = await self._register(live.task_definition, new_definition, tags, desired.image)
            try:
                deployment_id = await self._io.ecs.update_service(
                    cluster=self.app.cluster, service=self.app.service, task_definition=arn
                )
            except TransientError:
                raise  # the registration is reused by the retry
            except BaseException:
                self._registered = None
                raise
            self._registered = None
        self._metrics.deploys_total.labels(app=self.app.name, kind="deploy").inc()
        log.info(
            "service_updated", task_definition=arn, deployment=deployment_id, previous=previous
        )
        return await self._await_rollout(
            revision=desired.revision,
            deployment_id=deployment_id,
            task_definition=arn,
            previous=previous,
            started_at=started_at,
            memory=memory,
        )

    async def _superseded(
        self,
        revision: str,
        memory: AppMemory,
        started_at: datetime,
        *,
        event: str = "superseded_before_deploy",
    ) -> bool:
        """Ask git again; True (and recorded) when the desired revision moved on."""
        self._nudges_at_resolve = self._nudges
        latest = await self._io.git.resolve(self._source)
        if latest == revision:
            return False
        log.info(event, newer=latest)
        self._record(memory, revision, Result.SUPERSEDED, started_at, f"superseded by {latest}")
        return True

    async def _register(
        self, live_arn: str, definition: dict[str, Any], tags: list[Any], image: ImageRef
    ) -> str:
        key = (live_arn, str(image))
        if self._registered is not None and self._registered[:2] == key:
            return self._registered[2]
        arn = await self._io.ecs.register_task_definition(definition, tags)
        self._registered = (*key, arn)
        log.info("task_definition_registered", task_definition=arn, image=str(image))
        return arn

    async def _build_and_push(
        self, desired: Desired, memory: AppMemory, started_at: datetime
    ) -> None:
        image = str(desired.image)
        async with self._build_slots:
            self._set_phase(Phase.BUILDING)
            log.info("build_started", image=image)
            began = time.monotonic()
            context = await self._io.git.export_context(
                self._source,
                commit=desired.revision,
                context=self.app.context,
                dockerfile=self.app.dockerfile,
            )
            try:
                result = await self._io.docker.build(
                    context=context,
                    dockerfile=self.app.dockerfile,
                    tag=image,
                    build_args=self.app.build_args,
                    target=self.app.target,
                    labels={
                        "org.opencontainers.image.revision": desired.revision,
                        "org.opencontainers.image.source": redact_url(self.app.repo),
                    },
                )
            except BuildFailed as exc:
                memory.build_failures[desired.revision] = (
                    memory.build_failures.get(desired.revision, 0) + 1
                )
                tail = "\n".join(exc.log_tail[-10:])
                self._record(
                    memory,
                    desired.revision,
                    Result.BUILD_FAILED,
                    started_at,
                    f"{exc}\n{tail}".strip(),
                )
                if memory.build_failures[desired.revision] >= 3:
                    self._set_phase(Phase.FAILED)
                raise
            finally:
                context.close()
            self._metrics.build_seconds.observe(time.monotonic() - began)
            log.info(
                "build_finished",
                image=image,
                image_id=result.image_id,
                cached_steps=result.cached_steps,
            )

        self._set_phase(Phase.PUSHING)
        began = time.monotonic()
        digest = await self._io.docker.push(image, auth=await self._io.ecr.auth())
        self._metrics.push_seconds.observe(time.monotonic() - began)
        log.info("push_finished", image=image, digest=digest)

    async def _await_rollout(
        self,
        *,
        revision: str,
        deployment_id: str,
        task_definition: str,
        previous: str | None,
        started_at: datetime,
        memory: AppMemory,
    ) -> Next:
        began = time.monotonic()
        deadline = began + self.app.rollout_timeout
        self._nudged_during_rollout.clear()
        while True:
            try:
                state = await self._io.ecs.describe_service(self.app.cluster, self.app.service)
            except TransientError as exc:
                # Losing sight of a rollout is not a failure of the rollout: keep watching.
                log.warning("rollout_watch_error", error=str(exc))
                state = None
            if state is not None:
                verdict = judge(state, deployment_id=deployment_id, task_definition=task_definition)
                if isinstance(verdict, Succeeded):
                    self._metrics.rollout_seconds.observe(time.monotonic() - began)
                    log.info(
                        "rollout_succeeded",
                        deployment=deployment_id,
                        task_definition=task_definition,
                    )
                    memory.hold = None
                    memory.build_failures.pop(revision, None)
                    self._record(memory, revision, Result.DEPLOYED, started_at, None)
                    self.status.live_task_definition = task_definition
                    self.status.live_image = self.status.desired_image
                    self.status.last_error = None
                    self._set_phase(Phase.IN_SYNC)
                    self._count("deployed")
                    return Next.WAIT
                if isinstance(verdict, Failed):
                    return await self._rollout_failed(
                        revision=revision,
                        reason=verdict.reason,
                        rolled_back_by_ecs=verdict.rolled_back_by_ecs,
                        previous=previous,
                        started_at=started_at,
                        memory=memory,
                        began=began,
                    )
            if time.monotonic() >= deadline:
                return await self._rollout_failed(
                    revision=revision,
                    reason=f"rollout did not complete within {self.app.rollout_timeout:g}s",
                    rolled_back_by_ecs=False,
                    previous=previous,
                    started_at=started_at,
                    memory=memory,
                    began=began,
                )
            # Counted, not just flagged: a nudge that came during the registration or the
            # UpdateService (before this watch began) must be seen here too.
            if self._nudges != self._nudges_at_resolve:
                self._nudged_during_rollout.clear()
                # Any git failure here (remote down, branch gone) only means "no newer
                # revision known": the rollout is still ours to judge and roll back.
                with contextlib.suppress(ReconcilerError):
                    # The newer revision's UpdateService supersedes this rollout; ECS
                    # replaces the in-flight deployment, so there is nothing to undo.
                    if await self._superseded(
                        revision, memory, started_at, event="rollout_superseded"
                    ):
                        return Next.AGAIN
            step = backoff.rollout_step(time.monotonic() - began, self._timings.rollout_polls)
            delay = backoff.aligned(step)
            await backoff.sleep(
                min(delay, max(0.0, deadline - time.monotonic()) + 0.01),
                wakeup=self._nudged_during_rollout,
            )

    async def _rollout_failed(
        self,
        *,
        revision: str,
        reason: str,
        rolled_back_by_ecs: bool,
        previous: str | None,
        started_at: datetime,
        memory: AppMemory,
        began: float,
    ) -> Next:
        self._metrics.rollout_seconds.observe(time.monotonic() - began)
        log.error("rollout_failed", reason=reason, rolled_back_by_ecs=rolled_back_by_ecs)
        owed = previous if (self.app.rollback and not rolled_back_by_ecs and previous) else None
        # The hold is written before the rollback is attempted: if the daemon dies in between,
        # the next start finds the hold (never redeploys) and the rollback still owed.
        memory.hold = Hold(
            revision=revision,
            reason=reason,
            config_fingerprint=self.app.fingerprint(),
            rollback_to=owed,
        )
        result = Result.ROLLED_BACK if (owed or rolled_back_by_ecs) else Result.FAILED
        self._record(memory, revision, result, started_at, reason)
        self.status.last_error = reason
        if owed:
            # If this raises (AWS down), the hold on disk still owes the rollback and the
            # next pass plans RollBack.
            await self._roll_back(owed, memory)
        self._set_phase(Phase.FAILED)
        self._count(result.value)
        return Next.WAIT

    async def _roll_back(self, task_definition: str, memory: AppMemory) -> None:
        state = await self._io.ecs.describe_service(self.app.cluster, self.app.service)
        if state.task_definition != task_definition:
            deployment = await self._io.ecs.update_service(
                cluster=self.app.cluster, service=self.app.service, task_definition=task_definition
            )
            self._metrics.deploys_total.labels(app=self.app.name, kind="rollback").inc()
            log.warning("rollback_started", task_definition=task_definition, deployment=deployment)
        if memory.hold is not None:
            memory.hold = dataclasses.replace(memory.hold, rollback_to=None)
            self._store.save(self.app.name, memory)
        self.status.live_task_definition = task_definition

    def _record(
        self,
        memory: AppMemory,
        revision: str,
        result: Result,
        started_at: datetime,
        error: str | None,
    ) -> None:
        entry = HistoryEntry(
            revision=revision,
            result=result,
            started_at=started_at,
            finished_at=utcnow(),
            error=None if error is None else redact(error),
        )
        memory.history.insert(0, entry)
        del memory.history[HISTORY_LIMIT:]
        self._store.save(self.app.name, memory)
        self.status.history.appendleft(entry)
