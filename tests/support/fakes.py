"""Small, honest in-memory fakes of the adapters, for tests of one app's loop.

Each fake keeps the state a real service would (git heads, pushed tags, task definitions,
the service's deployments) and records the calls that change something, so a test can say
what was done and what was not. Failures are queued per call: `fail_next("update_service",
AwsUnavailable("..."))` makes the next call raise.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from reconciler.adapters.docker import BuildResult
from reconciler.adapters.git import GitSource
from reconciler.adapters.ports import Adapters
from reconciler.adapters.registry import RegistryAuth
from reconciler.adapters.values import BuildRequest, ContainerRun, TaskRunRequest
from reconciler.aio.backoff import Timings
from reconciler.app.loop import AppLoop
from reconciler.app.reporter import Reporter
from reconciler.app.state import FileStateStore
from reconciler.app.status import AppStatus
from reconciler.config import AnalysisCheck, AppConfig, BuildSecretSource
from reconciler.decisions.local_images import LocalImage
from reconciler.decisions.model import (
    Deployment,
    HookAction,
    ServiceDeployment,
    ServiceState,
    Started,
    TaskState,
    TestRun,
)
from reconciler.errors import StalledError
from reconciler.metrics import Metrics
from tests.support.metrics import passes_of

REGISTRY = "registry.test"
COMMITTED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)  # a commit's time unless told
QUICK = Timings(retry_base=0.01, retry_cap=0.05, rollout_polls=(0.01,))


class _Failures:
    def __init__(self) -> None:
        self._queued: dict[str, deque[BaseException]] = defaultdict(deque)

    def fail_next(self, call: str, *errors: BaseException) -> None:
        self._queued[call].extend(errors)

    def check(self, call: str) -> None:
        if self._queued[call]:
            raise self._queued[call].popleft()


class FakeGit(_Failures):
    def __init__(self, head: str) -> None:
        super().__init__()
        self.head = head
        self.resolves = 0
        self.exports = 0
        self.tracked: list[GitSource] = []
        self.files: dict[str, bytes] = {}  # path -> bytes, at every commit
        self.commit_times: dict[str, datetime] = {}  # commit -> its committer time

    async def read_file(self, source: GitSource, *, commit: str, path: str) -> bytes | None:
        await asyncio.sleep(0)
        return self.files.get(path)

    async def resolve(self, source: GitSource) -> str:
        self.resolves += 1
        await asyncio.sleep(0)
        self.check("resolve")
        return self.head

    def forget_heads(self, url: str) -> None:
        pass

    def track(self, sources: Iterable[GitSource]) -> None:
        self.tracked = list(sources)

    async def export_context(
        self, source: GitSource, *, commit: str, context: str, dockerfile: str
    ) -> BinaryIO:
        self.check("export_context")
        self.exports += 1
        return io.BytesIO(b"tar of " + commit.encode())

    async def commit_subject(self, source: GitSource, commit: str) -> str:
        return f"commit {commit[:7]}"

    async def commit_time(self, source: GitSource, commit: str) -> datetime:
        self.check("commit_time")
        return self.commit_times.get(commit, COMMITTED)


class FakeDocker(_Failures):
    def __init__(self) -> None:
        super().__init__()
        self.builds: list[str] = []
        self.requests: list[BuildRequest] = []  # every build asked for, in order
        self.run_requests: list[ContainerRun] = []  # every test container asked for
        self.pushes: list[str] = []
        self.tags: dict[str, str] = {}  # local tag -> the image it was put on
        self.runs: list[str] = []
        self.test_result = TestRun(exit_code=0, timed_out=False, tail=("ok",))
        self.during_build: Callable[[str], Any] | None = None
        self.context_of: dict[str, bytes] = {}  # tag -> the context its build read
        # tag -> an event the build waits for before its first step starts
        self.first_step_after: dict[str, asyncio.Event] = {}
        # The engine's images: tag -> (image id, labels); builds and tags add to it.
        self.images: dict[str, tuple[str, Mapping[str, str]]] = {}
        self.removed: list[str] = []  # tags removed, in order

    async def build(
        self,
        context: BinaryIO,
        request: BuildRequest,
        *,
        on_first_step: Callable[[], None] | None = None,
    ) -> BuildResult:
        """Reads the whole context, says its first step started (once `first_step_after[tag]`
        is set, if there is one), then waits on `during_build`. `fail_next("build", ...)`
        fails the next build, `fail_next("build test", ...)` the next of target `test`."""
        self.builds.append(request.tag)
        self.requests.append(request)
        self.context_of[request.tag] = context.read()
        if request.tag in self.first_step_after:
            await self.first_step_after[request.tag].wait()
        if on_first_step is not None:
            on_first_step()
        if self.during_build is not None:
            await self.during_build(request.tag)
        self.check("build")
        if request.target:
            self.check(f"build {request.target}")
        image_id = f"sha256:{len(self.builds):064x}"
        self.images[request.tag] = (image_id, dict(request.labels))
        return BuildResult(image_id=image_id, log_tail=(), cached_steps=0)

    async def push(self, image: str, *, auth: RegistryAuth | None) -> str:
        """`fail_next("push", ...)` fails the next push, `fail_next(f"push {image}", ...)`
        the next of `image`."""
        self.check("push")
        self.check(f"push {image}")
        self.pushes.append(image)
        return "sha256:" + "1" * 64

    async def tag(self, image: str, new: str) -> None:
        self.check("tag")
        self.tags[new] = image
        if image in self.images:
            self.images[new] = self.images[image]

    async def local_images(self, *, label: str) -> list[LocalImage]:
        self.check("local_images")
        key, _, value = label.partition("=")
        by_id: dict[str, list[str]] = {}
        for tag, (image_id, labels) in self.images.items():
            if labels.get(key) == value:
                by_id.setdefault(image_id, []).append(tag)
        return [LocalImage(image_id, tuple(tags)) for image_id, tags in by_id.items()]

    async def remove_image(self, tag: str) -> None:
        self.check("remove_image")
        self.check(f"remove_image {tag}")
        self.images.pop(tag, None)
        self.removed.append(tag)

    async def run(self, request: ContainerRun, *, on_line: Callable[[str], None]) -> TestRun:
        """Runs nothing: answers `test_result` and prints its tail through `on_line`."""
        self.check("run")
        self.runs.append(request.image)
        self.run_requests.append(request)
        for line in self.test_result.tail:
            on_line(line)
        return self.test_result


class FakeSecrets(_Failures):
    """Build secrets by source (`values["ssm /db"] = b"..."`); each read's keys recorded. A
    source it has no value for cannot be read, as a missing parameter cannot."""

    def __init__(self, values: Mapping[str, bytes] | None = None) -> None:
        super().__init__()
        self.values = dict(values or {})
        self.reads: list[list[str]] = []

    async def read(self, secrets: Mapping[str, BuildSecretSource]) -> dict[str, bytes]:
        self.check("read")
        self.reads.append(sorted(secrets))
        values: dict[str, bytes] = {}
        for key, source in secrets.items():
            if source.describe() not in self.values:
                raise StalledError(f"build secret {key} ({source.describe()}) cannot be read")
            values[key] = self.values[source.describe()]
        return values


class FakeRegistry(_Failures):
    def __init__(self, docker: FakeDocker) -> None:
        super().__init__()
        self._docker = docker
        self.tags: dict[str, str] = {}  # extra tag -> the tag it was moved to

    async def has_tag(
        self, *, registry: str, repository: str, tag: str, auth: RegistryAuth | None
    ) -> bool:
        self.check("has_tag")
        return f"{registry}/{repository}:{tag}" in self._docker.pushes

    async def digest(
        self, *, registry: str, repository: str, tag: str, auth: RegistryAuth | None
    ) -> str | None:
        """A digest per image pushed: pushing the same tag again names another."""
        self.check("digest")
        image = f"{registry}/{repository}:{tag}"
        if image not in self._docker.pushes:
            return None
        count = self._docker.pushes.count(image)
        return "sha256:" + hashlib.sha256(f"{image}#{count}".encode()).hexdigest()

    async def copy(
        self,
        *,
        source_registry: str,
        source_repository: str,
        tag: str,
        target_registry: str,
        target_repository: str,
        source_auth: RegistryAuth | None,
        target_auth: RegistryAuth | None,
    ) -> str:
        """The copied image appears as pushed to the target."""
        self.check("copy")
        self._docker.pushes.append(f"{target_registry}/{target_repository}:{tag}")
        return "sha256:" + "3" * 64

    async def retag(
        self, *, registry: str, repository: str, tag: str, new_tag: str, auth: RegistryAuth | None
    ) -> str:
        self.check("retag")
        self.tags[new_tag] = tag
        return "sha256:" + "2" * 64


class FakeEcr:
    async def registry(self) -> str:
        return REGISTRY

    async def auth(self) -> RegistryAuth:
        return RegistryAuth(username="AWS", password="fake-ecr-password", server=REGISTRY)


class FakeMetrics:
    """Metric sources answering each check's queued answers in turn (a value, None for no
    data, or an error to raise), then its `steady` answer; `asked` counts the asks."""

    def __init__(self, steady: float | None = 0.0) -> None:
        self.steady = steady
        self.queued: dict[str, deque[float | BaseException | None]] = defaultdict(deque)
        self.asked: dict[str, int] = defaultdict(int)

    def answer(self, check: str, *answers: float | BaseException | None) -> None:
        self.queued[check].extend(answers)

    async def measure(self, check: AnalysisCheck) -> float | None:
        self.asked[check.name] += 1
        queued = self.queued[check.name]
        answer = queued.popleft() if queued else self.steady
        if isinstance(answer, BaseException):
            raise answer
        return answer


@dataclass
class FakeEcs(_Failures):
    """One service whose rollouts complete after `settle_after` more DescribeServices."""

    cluster: str = "cluster"
    service: str = "web"
    definitions: dict[str, dict[str, Any]] = field(default_factory=dict)
    registered: list[str] = field(default_factory=list)  # ARNs, in order
    updates: list[str] = field(default_factory=list)  # task definitions, in order
    settings_sent: list[dict[str, Any]] = field(default_factory=list)  # service.json's, in order
    state: ServiceState | None = None
    before_register: Callable[[], Any] | None = None
    during_update: Callable[[str], Any] | None = None  # called with the task definition
    settle_after: int = 0  # DescribeServices calls that still see a new rollout IN_PROGRESS
    tasks: dict[str, TaskState] = field(default_factory=dict)  # RunTask's tasks by ARN
    task_requests: list[TaskRunRequest] = field(default_factory=list)  # every RunTask asked
    task_exit_code: int | None = 0
    stopped: list[str] = field(default_factory=list)  # StopTask calls
    # Service deployment records by the task definition they deploy.
    service_deployments: dict[str, ServiceDeployment] = field(default_factory=dict)
    # The record the next UpdateService starts (then kept under its task definition), and
    # whether UpdateService's answer names it (currentServiceDeployment), as ECS's does.
    next_record: ServiceDeployment | None = None
    names_records: bool = True
    continued: list[tuple[str, str, str]] = field(default_factory=list)  # (arn, hook, action)

    def __post_init__(self) -> None:
        super().__init__()
        self._describes_left = 0
        arn = self._arn(1)
        self.definitions[arn] = {
            "family": "web",
            "containerDefinitions": [
                {"name": "app", "image": f"{REGISTRY}/web:bootstrap"},
                {"name": "sidecar", "image": "public.test/sidecar:1"},
            ],
        }
        self.state = ServiceState(
            cluster=self.cluster,
            service=self.service,
            task_definition=arn,
            deployments=(Deployment("ecs-svc/0", "PRIMARY", arn, "COMPLETED", 1, 1),),
        )

    def _arn(self, revision: int) -> str:
        return f"arn:aws:ecs:us-east-1:123456789012:task-definition/web:{revision}"

    def image_of(self, arn: str) -> str:
        return str(self.definitions[arn]["containerDefinitions"][0]["image"])

    async def describe_service(
        self, cluster: str, service: str, *, max_age: float = 0.0
    ) -> ServiceState:
        await asyncio.sleep(0)
        self.check("describe_service")
        assert self.state is not None
        primary = self.state.primary
        if primary is not None and primary.rollout_state == "IN_PROGRESS":
            if self._describes_left > 0:
                self._describes_left -= 1
                return self.state
            self.state = replace(
                self.state, deployments=(replace(primary, rollout_state="COMPLETED"),)
            )
        return self.state

    async def task_definition(self, arn: str) -> tuple[dict[str, Any], list[Any]]:
        await asyncio.sleep(0)
        return dict(self.definitions[arn]), []

    async def register_task_definition(self, definition: dict[str, Any], tags: list[Any]) -> str:
        if self.before_register is not None:
            self.before_register()
        await asyncio.sleep(0)
        self.check("register_task_definition")
        arn = self._arn(len(self.definitions) + 1)
        self.definitions[arn] = dict(definition)
        self.registered.append(arn)
        return arn

    async def update_service(
        self,
        *,
        cluster: str,
        service: str,
        task_definition: str,
        settings: Mapping[str, Any] | None = None,
    ) -> Started:
        await asyncio.sleep(0)
        self.settings_sent.append(dict(settings or {}))
        self.check("update_service")
        if self.during_update is not None:
            self.during_update(task_definition)
        self._describes_left = self.settle_after
        assert self.state is not None
        self.updates.append(task_definition)
        deployment_id = f"ecs-svc/{len(self.updates)}"
        old = self.state.primary
        deployments = [Deployment(deployment_id, "PRIMARY", task_definition, "IN_PROGRESS", 0, 1)]
        if old is not None:
            deployments.append(replace(old, status="ACTIVE"))
        self.state = replace(
            self.state,
            task_definition=task_definition,
            deployments=tuple(deployments),
            settings={**self.state.settings, **(settings or {})},
        )
        record, self.next_record = self.next_record, None
        if record is not None:
            self.service_deployments[task_definition] = record
        named = record.arn if record is not None and self.names_records else None
        return Started(deployment_id, named)

    async def run_task(self, request: TaskRunRequest) -> str:
        """A task that is STOPPED with `task_exit_code` when first described."""
        self.check("run_task")
        self.task_requests.append(request)
        arn = f"arn:aws:ecs:us-east-1:123456789012:task/{request.cluster}/{len(self.tasks) + 1}"
        self.tasks[arn] = TaskState(
            arn, "STOPPED", "EssentialContainerExited", "", {request.container: self.task_exit_code}
        )
        return arn

    async def describe_task(self, *, cluster: str, task: str) -> TaskState:
        self.check("describe_task")
        return self.tasks[task]

    async def stop_task(self, *, cluster: str, task: str, reason: str) -> None:
        self.stopped.append(task)

    async def find_tasks(self, *, cluster: str, started_by: str) -> list[str]:
        return [arn for arn, state in self.tasks.items() if not state.stopped]

    async def find_service_deployment(
        self,
        *,
        cluster: str,
        service: str,
        task_definition: str,
        created_after: datetime | None = None,
    ) -> ServiceDeployment | None:
        """Like a region without service deployment records, unless a test gives some."""
        self.check("find_service_deployment")
        return self.service_deployments.get(task_definition)

    async def describe_service_deployment(self, *, cluster: str, arn: str) -> ServiceDeployment:
        self.check("describe_service_deployment")
        return next(d for d in self.service_deployments.values() if d.arn == arn)

    async def continue_service_deployment(self, *, arn: str, hook: str, action: HookAction) -> None:
        """What ECS does, at once: the record leaves its hook, done (or rolled back)."""
        self.check("continue_service_deployment")
        self.continued.append((arn, hook, action))
        for key, record in self.service_deployments.items():
            if record.arn == arn and record.paused_hook == hook:
                status = "ROLLBACK_SUCCESSFUL" if action == "ROLLBACK" else "SUCCESSFUL"
                self.service_deployments[key] = replace(record, paused_hook=None, status=status)


@dataclass
class FakeWorld:
    """An AppLoop wired to fakes, and the fakes to look at."""

    app: AppConfig
    git: FakeGit
    docker: FakeDocker
    registry: FakeRegistry
    ecs: FakeEcs
    store: FileStateStore
    status: AppStatus
    metrics: Metrics
    loop: AppLoop

    @classmethod
    def create(
        cls,
        state_dir: Path,
        *,
        head: str,
        poll_interval: float = 3600.0,
        timings: Timings = QUICK,
        **app_keys: Any,
    ) -> FakeWorld:
        """`app_keys` are further keys of the app's config, e.g. test={"command": ["t"]}."""
        app = AppConfig.model_validate(
            {
                "name": "web",
                "repo": "file:///srv/web.git",
                "ecr_repository": "web",
                "cluster": "cluster",
                "service": "web",
                "rollout_timeout": 5.0,
                **app_keys,
            }
        )
        git, docker, ecs = FakeGit(head), FakeDocker(), FakeEcs()
        registry = FakeRegistry(docker)
        adapters = Adapters(
            git=git,
            docker=docker,
            registry=registry,
            ecr=FakeEcr(),
            ecs=ecs,
            secrets=FakeSecrets(),
        )
        store, status, metrics = FileStateStore(state_dir), AppStatus(name="web"), Metrics()
        loop = AppLoop(
            app=app,
            poll_interval=poll_interval,
            adapters=adapters,
            build_slots=asyncio.Semaphore(2),
            store=store,
            reporter=Reporter(app=app.name, status=status, metrics=metrics, store=store),
            timings=timings,
        )
        return cls(app, git, docker, registry, ecs, store, status, metrics, loop)

    def image(self, revision: str) -> str:
        return f"{REGISTRY}/web:{revision}"

    def live_image(self) -> str:
        assert self.ecs.state is not None
        return self.ecs.image_of(self.ecs.state.task_definition)

    def count(self, result: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "reconciler_reconcile_total", {"app": self.app.name, "result": result}
        )
        return value or 0.0

    def state_write_failing(self) -> float:
        """`reconciler_state_write_failing` of the app: 1 while its state cannot be written."""
        value = self.metrics.registry.get_sample_value(
            "reconciler_state_write_failing", {"app": self.app.name}
        )
        return value or 0.0

    def passes(self) -> float:
        """The passes finished so far, as the metrics count them (one result each)."""
        return passes_of(self.metrics, self.app.name)
