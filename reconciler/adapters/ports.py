"""The seams of a pass: one Protocol per kind of I/O.

The stages and the loop depend on these, never on the concrete adapters, so a test may put a
small in-memory fake at any seam and mypy checks that it fits. The real implementations live
beside this module (git.py, docker.py, registry.py, ecr.py, ecs.py); the composition root
(daemon/root.py) opens them. What a build or a one-off task needs travels as one value
(values.py).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, Protocol

from reconciler.adapters.docker import BuildResult
from reconciler.adapters.git import GitSource
from reconciler.adapters.registry import RegistryAuth
from reconciler.adapters.values import BuildRequest, ContainerRun, TaskRunRequest
from reconciler.config import AnalysisCheck, BuildSecretSource
from reconciler.decisions.housekeeping import Deleted, StoredImage, TaskDefinitionRevision
from reconciler.decisions.local_images import LocalImage
from reconciler.decisions.model import (
    HookAction,
    ServiceDeployment,
    ServiceState,
    Started,
    TaskState,
    TestRun,
)
from reconciler.decisions.verification import Answer, Lookup

TaskDefinition = dict[str, Any]


class GitPort(Protocol):
    async def resolve(self, source: GitSource) -> str:
        """The full SHA the source wants now."""

    def forget_heads(self, url: str) -> None:
        """Drop cached remote heads of `url`: the next resolve asks the remote."""

    def track(self, sources: Iterable[GitSource]) -> None:
        """What every app follows (the config in force): fetches bring only these refs."""

    async def export_context(
        self, source: GitSource, *, commit: str, context: str, dockerfile: str
    ) -> BinaryIO:
        """The build context of `commit` as an uncompressed tar file object."""

    async def commit_subject(self, source: GitSource, commit: str) -> str:
        """The first line of `commit`'s message (untrusted text), from the mirror."""

    async def commit_time(self, source: GitSource, commit: str) -> datetime:
        """When `commit` was committed (its committer time, UTC), from the mirror."""

    async def read_file(self, source: GitSource, *, commit: str, path: str) -> bytes | None:
        """The bytes of `path` in `commit`'s tree, or None when there is no such file."""


class DockerPort(Protocol):
    async def build(
        self,
        context: BinaryIO,
        request: BuildRequest,
        *,
        on_first_step: Callable[[], None] | None = None,
    ) -> BuildResult:
        """Build the tar `context` as `request.tag`; images in `request.cache_from` may serve
        as cache. `on_first_step` is called once the build's first Dockerfile step past FROM
        has started (BuildKit only): by then its cache sources are read and the keys of the
        steps before it are known, so a build of the same Dockerfile started after it joins
        those steps rather than leading them."""

    async def push(self, image: str, *, auth: RegistryAuth | None) -> str:
        """Push `image`; the manifest digest it got."""

    async def tag(self, image: str, new: str) -> None:
        """Put the local tag `new` (`<registry>/<repository>:<tag>`) on the image `image`
        names, on the engine that has it."""

    async def local_images(self, *, label: str) -> list[LocalImage]:
        """The engine's images that carry `label` (`key=value`), with their tags."""

    async def remove_image(self, tag: str) -> None:
        """Remove the local tag `tag` (the image goes with its last tag); a tag that is gone
        already is fine."""

    async def run(self, request: ContainerRun, *, on_line: Callable[[str], None]) -> TestRun:
        """Run `request.command` in a new container of `request.image` until it exits or its
        timeout passes (then it is killed); each output line goes to `on_line`; the container
        is removed."""


class RegistryPort(Protocol):
    async def has_tag(
        self, *, registry: str, repository: str, tag: str, auth: RegistryAuth | None
    ) -> bool:
        """Whether the registry already has `repository:tag`."""

    async def digest(
        self, *, registry: str, repository: str, tag: str, auth: RegistryAuth | None
    ) -> str | None:
        """The manifest digest `repository:tag` names now; None when the tag is not there."""

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
        """Copy `source_repository:tag` to `target_repository:tag` (no layer leaves the
        registry where both are one); the digest, equal in both."""

    async def retag(
        self, *, registry: str, repository: str, tag: str, new_tag: str, auth: RegistryAuth | None
    ) -> str:
        """Put the manifest of `repository:tag` under `new_tag` too (no layer moves); its
        digest."""


class EcrPort(Protocol):
    async def registry(self) -> str:
        """The registry host images are pushed to."""

    async def auth(self) -> RegistryAuth:
        """Credentials for that registry, fresh."""


class EcsPort(Protocol):
    async def describe_service(
        self, cluster: str, service: str, *, max_age: float = 0.0
    ) -> ServiceState:
        """The service's state; an answer up to `max_age` seconds old will do."""

    async def task_definition(self, arn: str) -> tuple[TaskDefinition, list[Any]]:
        """The task definition and its tags."""

    async def register_task_definition(self, definition: TaskDefinition, tags: list[Any]) -> str:
        """Register a copy of `definition`; its ARN."""

    async def update_service(
        self,
        *,
        cluster: str,
        service: str,
        task_definition: str,
        settings: Mapping[str, Any] | None = None,
    ) -> Started:
        """Point the service at `task_definition` (and, with `definitions`, set the service
        settings of service.json); the deployment it started (and its service deployment
        record, where ECS names it)."""

    async def run_task(self, request: TaskRunRequest) -> str:
        """Start the one task `request` describes; its ARN."""

    async def describe_task(self, *, cluster: str, task: str) -> TaskState:
        """The task's state."""

    async def stop_task(self, *, cluster: str, task: str, reason: str) -> None:
        """Stop the task (it ends STOPPED)."""

    async def find_tasks(self, *, cluster: str, started_by: str) -> list[str]:
        """ARNs of the cluster's tasks started by `started_by` that have not stopped."""

    async def find_service_deployment(
        self,
        *,
        cluster: str,
        service: str,
        task_definition: str,
        created_after: datetime | None = None,
    ) -> ServiceDeployment | None:
        """The service's newest service deployment (created after `created_after`, if
        given) whose target revision runs `task_definition`; None where ECS keeps none (or
        none matches yet). Raises AwsRejected when the API is refused (access denied)."""

    async def describe_service_deployment(self, *, cluster: str, arn: str) -> ServiceDeployment:
        """One service deployment's record; concurrent callers share batched calls."""

    async def continue_service_deployment(self, *, arn: str, hook: str, action: HookAction) -> None:
        """Continue (or roll back) the service deployment `arn` stopped at PAUSE hook `hook`."""


class SecretsPort(Protocol):
    async def read(self, secrets: Mapping[str, BuildSecretSource]) -> dict[str, bytes]:
        """Key -> value of each build secret, read now with the app's identity; every value
        is registered for scrubbing before it is returned."""


class LookupsPort(Protocol):
    async def look_up(self, function: str, name: str) -> str:
        """What a definition template's `function(name)` (env, ssm, secret_arn) renders as;
        DefinitionError when it has no value the template may see."""


class VerifierPort(Protocol):
    async def answers(self, lookups: Collection[Lookup]) -> Mapping[Lookup, Answer]:
        """What AWS says of each thing a definition names (SPEC 19), asked with the app's
        identity, all at once; AwsUnavailable when AWS is busy or out of reach."""


class MetricsPort(Protocol):
    async def measure(self, check: AnalysisCheck) -> float | None:
        """An analysis check's value now (SPEC 21), None when its query has no data;
        MetricsUnavailable when its source cannot answer now, MetricsRefused when it never
        will (a bad query). The caller bounds the time it may take."""


class HousekeepingPort(Protocol):
    """The AWS calls housekeeping needs (adapters/housekeeping.py has the real ones)."""

    async def service(self, *, cluster: str, service: str) -> ServiceState:
        """The service as ECS tells it now."""

    async def in_flight_task_definitions(self, *, cluster: str, service: str) -> dict[str, str]:
        """Task definition ARN -> why, for every revision a service deployment in flight
        deploys, rolls from or rolls back to."""

    async def task_definitions(self, family: str) -> list[TaskDefinitionRevision]:
        """Every ACTIVE revision of the family, with tags and images."""

    async def task_definition(self, arn: str) -> TaskDefinitionRevision:
        """One revision, whatever its status."""

    async def images(self, repository: str) -> list[StoredImage]:
        """Every image of the ECR repository."""

    async def deregister(self, arn: str) -> None:
        """Deregister one revision."""

    async def delete_images(self, repository: str, digests: Sequence[str]) -> list[Deleted]:
        """Delete images by digest; one result per digest."""


class SchedulesPort(Protocol):
    """EventBridge rules and Scheduler schedules (adapters/schedules.py has the real ones)."""

    async def rule_targets(self, rule: str) -> list[dict[str, Any]]:
        """Every target of the rule, as ListTargetsByRule gives them."""

    async def put_targets(self, rule: str, targets: Sequence[dict[str, Any]]) -> None:
        """Write `targets` (whole) to the rule; AwsRejected when any was refused."""

    async def schedule(self, *, group: str, name: str) -> dict[str, Any]:
        """The schedule as GetSchedule gives it."""

    async def update_schedule(self, request: dict[str, Any]) -> None:
        """UpdateSchedule with every field in `request`."""

    def update_fields(self) -> frozenset[str]:
        """The fields of GetSchedule's answer that UpdateSchedule takes."""


@dataclass(frozen=True)
class Adapters:
    """The seams a pass uses, one of each."""

    git: GitPort
    docker: DockerPort
    registry: RegistryPort
    ecr: EcrPort
    ecs: EcsPort
    # Build secrets, read with the same identity as `ecs` and `ecr`.
    secrets: SecretsPort
    # Deregistering old task definitions and deleting old images; None where not opened.
    housekeeping: HousekeepingPort | None = None
    # What definition templates read (env, ssm, secret_arn); None where not opened.
    lookups: LookupsPort | None = None
    # Whether what a definition names exists; None where not opened (nothing verified).
    verifier: VerifierPort | None = None
    # EventBridge rules and Scheduler schedules a release moves; None where not opened.
    schedules: SchedulesPort | None = None
    # Where analysis checks read their values (Prometheus, CloudWatch with the app's
    # identity); None where not opened (an app with checks then fails their measurements).
    metrics: MetricsPort | None = None
