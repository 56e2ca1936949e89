"""The domain: what is wanted, what runs, and what a pass decides to do about the difference.

Frozen values only; no I/O. The planner (plan.py) turns an Observation into an Action.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from reconciler.decisions.analysis import CheckResult
from reconciler.decisions.definition_diff import Change
from reconciler.decisions.timeline import StageTime


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ImageRef:
    """`<registry>/<repository>:<tag>`; the tag is always a full commit SHA for built images."""

    registry: str
    repository: str
    tag: str

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"


def image_repository(image: str) -> str:
    """The repository part of an image reference: no registry host, no tag, no digest.

    `123.dkr.ecr.us-east-1.amazonaws.com/team/web:abc` -> `team/web`;
    `127.0.0.1:5000/web@sha256:...` -> `web`.
    """
    name = image.split("@", 1)[0]
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        name = rest
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name = name[:colon]
    return name


@dataclass(frozen=True)
class Desired:
    revision: str
    image: ImageRef


@dataclass(frozen=True)
class Deployment:
    """One entry of an ECS service's `deployments`."""

    id: str
    status: str  # PRIMARY | ACTIVE | INACTIVE
    task_definition: str
    rollout_state: str | None  # IN_PROGRESS | COMPLETED | FAILED, or None where ECS gives none
    running_count: int = 0
    desired_count: int = 0
    reason: str = ""


@dataclass(frozen=True)
class Started:
    """What an UpdateService started: its entry in the service's `deployments`, and ECS's
    service deployment record of it where the answer names one (`currentServiceDeployment`)."""

    deployment_id: str
    service_deployment: str | None = None


@dataclass(frozen=True)
class TaskLaunch:
    """How the service launches its tasks; a one-off task of the app is launched the same way."""

    launch_type: str | None = None  # FARGATE | EC2 | EXTERNAL, or None with capacity providers
    capacity_provider_strategy: tuple[Mapping[str, object], ...] = ()
    network_configuration: Mapping[str, object] | None = None
    platform_version: str | None = None


@dataclass(frozen=True)
class TaskState:
    """What DescribeTasks says about one task."""

    arn: str
    last_status: str  # PROVISIONING | PENDING | ACTIVATING | RUNNING | ... | STOPPED
    stop_code: str = ""
    stopped_reason: str = ""
    # container name -> exit code (None while running, or when it never started)
    exit_codes: Mapping[str, int | None] = field(default_factory=dict)
    container_reasons: Mapping[str, str] = field(default_factory=dict)

    @property
    def stopped(self) -> bool:
        return self.last_status == "STOPPED"


@dataclass(frozen=True)
class TestRun:
    """How a test command in a container ended."""

    __test__ = False  # not a pytest test class

    exit_code: int | None  # None when it was killed at the timeout
    timed_out: bool
    tail: tuple[str, ...]  # the last lines of its output
    oom_killed: bool = False  # the engine killed a process of it at its memory limit

    @property
    def passed(self) -> bool:
        return not self.timed_out and self.exit_code == 0


# What ContinueServiceDeployment asks of a deployment stopped at a PAUSE lifecycle hook.
HookAction = Literal["CONTINUE", "ROLLBACK"]


@dataclass(frozen=True)
class ServiceDeployment:
    """One ECS service deployment record (DescribeServiceDeployments)."""

    arn: str
    status: str  # PENDING | IN_PROGRESS | SUCCESSFUL | STOPPED | STOP_REQUESTED | ROLLBACK_*
    lifecycle_stage: str = ""  # RECONCILE_SERVICE | ... | BAKE_TIME | CLEAN_UP
    target_revision: str = ""  # the service revision ARN it deploys
    status_reason: str = ""
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    failed_tasks: int = 0  # the circuit breaker's count
    alarms_triggered: tuple[str, ...] = ()  # names of the CloudWatch alarms that fired
    rollback_reason: str = ""
    # The PAUSE lifecycle hook it waits at for ContinueServiceDeployment (its hookId).
    paused_hook: str | None = None


@dataclass(frozen=True)
class RolloutSettings:
    """How ECS is to roll a service out: who controls it, the strategy, how long it bakes."""

    controller: str = "ECS"  # ECS | CODE_DEPLOY | EXTERNAL
    strategy: str = "ROLLING"  # ROLLING | BLUE_GREEN | LINEAR | CANARY
    bake_seconds: float = 0.0  # bakeTimeInMinutes plus every linear/canary step's bake
    # The lifecycle stages at which a PAUSE hook stops its deployments for the caller.
    pause_stages: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServiceState:
    """What DescribeServices says about one service."""

    cluster: str
    service: str
    task_definition: str
    deployments: tuple[Deployment, ...]
    status: str = "ACTIVE"
    launch: TaskLaunch = field(default_factory=TaskLaunch)
    rollout: RolloutSettings = field(default_factory=RolloutSettings)
    # The service's newest service deployment (the one an UpdateService just started), where
    # the answer names it.
    current_service_deployment: str | None = None
    # The settings service.json may hold (SERVICE_FIELDS), as DescribeServices gives them.
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def primary(self) -> Deployment | None:
        return next((d for d in self.deployments if d.status == "PRIMARY"), None)

    def deployment(self, deployment_id: str) -> Deployment | None:
        return next((d for d in self.deployments if d.id == deployment_id), None)

    @property
    def in_flight(self) -> bool:
        """A rolling update is still moving tasks.

        A deployment that ECS marked FAILED may stay listed for a while after a circuit-breaker
        rollback; it is history, not work in flight.
        """
        primary = self.primary
        if primary is None:
            return True
        if primary.rollout_state is None:
            others = [
                d for d in self.deployments if d is not primary and d.rollout_state != "FAILED"
            ]
            return bool(others) or primary.running_count != primary.desired_count
        return primary.rollout_state == "IN_PROGRESS"

    @property
    def previous_task_definition(self) -> str | None:
        """The task definition the service ran before its PRIMARY deployment, if still listed."""
        primary = self.primary
        for deployment in self.deployments:
            if deployment is not primary and deployment.rollout_state != "FAILED":
                return deployment.task_definition
        return None


@dataclass(frozen=True)
class Live:
    """The service as it is, with the images of its current task definition."""

    service: ServiceState
    images: Mapping[str, str]  # managed container name -> image

    @property
    def task_definition(self) -> str:
        return self.service.task_definition

    def runs(self, image: ImageRef) -> bool:
        return bool(self.images) and all(v == str(image) for v in self.images.values())

    @property
    def image(self) -> str | None:
        values = sorted(set(self.images.values()))
        return values[0] if len(values) == 1 else (", ".join(values) or None)


@dataclass(frozen=True)
class Hold:
    """A revision that failed and must not be deployed again without a reason to."""

    revision: str
    reason: str
    config_fingerprint: str
    since: datetime = field(default_factory=utcnow)
    # Set while the rollback to this task definition is still owed (survives a crash).
    rollback_to: str | None = None


@dataclass(frozen=True)
class Attempt:
    """A deploy that was started: written before UpdateService, so a pass that finds it for a
    revision that is neither live nor rolling out knows that revision failed unwatched."""

    revision: str
    task_definition: str  # the registered one UpdateService is pointed at
    previous: str | None  # what the service ran before
    config_fingerprint: str
    at: datetime = field(default_factory=utcnow)
    deployment_id: str | None = None  # set once UpdateService answered
    service_deployment: str | None = None  # ECS's record of it, once found
    host: str = ""  # the machine whose wall clock `at` is by (a rollout is timed there only)


@dataclass(frozen=True)
class ReleasePart:
    """One service of a release of several (SPEC 20): what it ran before the release
    changed it and what the release pointed it at (both None while untouched), and the
    deployment that started; `done` once its rollout succeeded (or it ran the revision
    already)."""

    service: str
    previous: str | None = None
    task_definition: str | None = None
    deployment_id: str | None = None
    service_deployment: str | None = None
    at: datetime | None = None  # when its UpdateService went out, by `host`'s wall clock
    host: str = ""
    done: bool = False


@dataclass(frozen=True)
class ScheduleMove:
    """One ECS target of a schedule a release moved (or is moving): the schedule as
    configured (`rule/x`, `schedule/g/x`), the target's id ("" for a schedule's one
    target), what it ran before and what the release gave it. Written before the write
    goes out, so a rollback (or a restart) knows what to put back."""

    schedule: str
    target: str
    previous: str
    task_definition: str


@dataclass(frozen=True)
class Release:
    """A revision going out to an app's services in order, remembered part by part, so a
    restart between two services goes on with the next (or pays the rollbacks owed)
    instead of leaving them on different revisions. `owed`: after a failure, the services
    (in the order to do it) still to be put back on their `previous`."""

    revision: str
    config_fingerprint: str
    parts: tuple[ReleasePart, ...] = ()
    owed: tuple[str, ...] = ()  # services, and schedules (those named in `schedules`)
    # The schedules' targets moved to this release, and whether every schedule was seen to.
    schedules: tuple[ScheduleMove, ...] = ()
    schedules_done: bool = False

    def part(self, service: str) -> ReleasePart:
        return next((p for p in self.parts if p.service == service), ReleasePart(service))

    def with_part(self, part: ReleasePart) -> Release:
        others = tuple(p for p in self.parts if p.service != part.service)
        return dataclasses.replace(self, parts=(*others, part))


@dataclass(frozen=True)
class Pin:
    """An operator's rollback: the app runs `revision` instead of following git, until
    `reconciler unpin` or a change of the app's config."""

    revision: str
    config_fingerprint: str
    by: str = "rollback"
    since: datetime = field(default_factory=utcnow)
    asked_by: str | None = None  # the identity that asked for it


@dataclass(frozen=True)
class PreDeployRun:
    """A pre-deploy task being started or run: written before RunTask (task unknown) and
    again once RunTask answered, so a restart awaits it rather than starting another.

    `token` is RunTask's clientToken for this attempt: sent again by a retry or by the
    daemon that takes the app over, it makes ECS answer with the task already started
    instead of starting a second. `at` is when the run began by the wall clock of `host`
    (the machine that counts its timeout); another host counts from when it took it over.
    """

    revision: str
    task: str | None = None
    at: datetime = field(default_factory=utcnow)
    token: str = ""
    host: str = ""


def run_token(app: str, revision: str, attempt: datetime) -> str:
    """RunTask's clientToken for one attempt at an app's pre-deploy task (ECS allows 64)."""
    seed = f"{app}\0{revision}\0{attempt.isoformat()}".encode()
    return hashlib.sha256(seed).hexdigest()[:32]


@dataclass(frozen=True)
class DefinitionMark:
    """The definition (by fingerprint) this daemon last saw live, and the task definition
    that carried it: a task definition never changes, so while the service runs that one,
    its fields are the definition's, whatever a comparison of the two documents says."""

    fingerprint: str
    task_definition: str


@dataclass(frozen=True)
class DefinitionState:
    """An app with `definitions`: how what runs differs from its files, in this pass."""

    fingerprint: str
    changes: tuple[Change, ...]  # empty: live is the definition
    # This very definition was live before (the mark's): a difference now is drift, made
    # without a deploy of ours, not a change of the files.
    deployed: bool
    heal: bool  # drift = "heal": deploy the definition again

    @property
    def drifted(self) -> bool:
        return self.deployed and bool(self.changes)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(change.path for change in self.changes)


@dataclass(frozen=True)
class Observation:
    """Everything the planner may look at for one app in one pass."""

    desired: Desired
    live: Live
    image_in_registry: bool | None  # None: not asked, because the live image already matches
    hold: Hold | None = None
    attempt: Attempt | None = None
    build_failures: int = 0  # failed builds of desired.revision so far
    # The app's state file could not be read or decoded: nothing is known about holds.
    state_damaged: str | None = None
    # The app's state cannot be written (disk full, read-only): no deploy may start.
    state_unwritable: str | None = None
    suspended: bool = False
    config_fingerprint: str = ""
    # With `definitions`: desired against live; None for an app without them.
    definition: DefinitionState | None = None


# Actions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class InSync:
    # Fields where live differs from the definition without a deploy of ours, shown and
    # left alone (drift = "alert").
    drift: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportOnly:
    """Suspended: observe and report, never write."""


@dataclass(frozen=True)
class Refused:
    """The service cannot be driven by this daemon at all (a human must change it)."""

    reason: str


@dataclass(frozen=True)
class Held:
    reason: str
    # Held only until something outside changes by itself (the disk has room again): look
    # again with backoff rather than at the next poll.
    transient: bool = False


@dataclass(frozen=True)
class RollBack:
    """Put the service back on the task definition it ran before a failed rollout."""

    task_definition: str


@dataclass(frozen=True)
class FailedUnwatched:
    """A deploy of the desired revision was started, and ECS no longer runs or rolls it out:
    it failed while nobody watched (the daemon was stopped or its loop restarted)."""

    reason: str


@dataclass(frozen=True)
class AwaitRollout:
    deployment_id: str
    task_definition: str
    previous_task_definition: str | None
    since: datetime | None = None  # when the deploy was started, where the daemon knows it
    service_deployment: str | None = None  # ECS's record of it, where the daemon knows it
    since_host: str = ""  # the machine whose wall clock `since` is by


@dataclass(frozen=True)
class Deploy:
    """Register a task definition with the new image and update the service."""

    image: ImageRef
    build: bool  # build and push first; False when the registry already has the tag
    heal: bool = False  # the definition again, over drift (drift = "heal")


Action = InSync | ReportOnly | Refused | Held | RollBack | FailedUnwatched | AwaitRollout | Deploy


# Status -------------------------------------------------------------------------------


class Phase(enum.StrEnum):
    PENDING = "Pending"
    IN_SYNC = "InSync"
    BUILDING = "Building"
    TESTING = "Testing"
    PUSHING = "Pushing"
    MIGRATING = "Migrating"  # the pre-deploy task runs
    DEPLOYING = "Deploying"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    FROZEN = "Frozen"  # a freeze window covers the app: no new release starts (SPEC 21)
    AWAITING_APPROVAL = "AwaitingApproval"  # pushed and registered, not yet approved


class Result(enum.StrEnum):
    DEPLOYED = "deployed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    SUPERSEDED = "superseded"
    BUILD_FAILED = "build_failed"
    TEST_FAILED = "test_failed"
    PRE_DEPLOY_FAILED = "pre_deploy_failed"
    REJECTED = "rejected"  # an approver said no (SPEC 21)
    APPROVAL_EXPIRED = "approval_expired"  # no one approved in time


@dataclass(frozen=True)
class HistoryEntry:
    revision: str
    result: Result
    started_at: datetime
    finished_at: datetime
    error: str | None = None
    by: str | None = None  # the identity whose sync, rollback or unpin started the pass
    # The release's metric analysis (SPEC 21): each check's values and verdict.
    analysis: tuple[CheckResult, ...] | None = None
    # When the revision was committed (git's committer time), for the lead time.
    committed_at: datetime | None = None
    stages: tuple[StageTime, ...] = ()  # the pass's stages, in the order they began
