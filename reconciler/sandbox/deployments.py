"""Service deployment records for moto's ECS: ListServiceDeployments,
DescribeServiceDeployments, DescribeServiceRevisions and StopServiceDeployment.

moto has none of these calls. ECS keeps a service deployment for every CreateService and every
UpdateService that starts a deployment; each deploys a service revision, an immutable record of
the task definition and launch settings. Here one `Record` per deployment follows the
`Scenario` of its service through the lifecycle stages of the service's strategy
(`deploymentConfiguration.strategy`, ROLLING when unset):

    ROLLING     RECONCILE_SERVICE, SCALE_UP, BAKE_TIME, CLEAN_UP
    BLUE_GREEN  SCALE_UP, TEST_TRAFFIC_SHIFT, PRODUCTION_TRAFFIC_SHIFT, BAKE_TIME, CLEAN_UP
    LINEAR      SCALE_UP, TEST_TRAFFIC_SHIFT, PRODUCTION_TRAFFIC_SHIFT once per step of
                stepPercent (the production weight rising to 100), BAKE_TIME, CLEAN_UP
    CANARY      SCALE_UP, TEST_TRAFFIC_SHIFT, PRODUCTION_TRAFFIC_SHIFT at canaryPercent and
                then at 100, BAKE_TIME, CLEAN_UP

The stages before BAKE_TIME share the scenario's `after` seconds equally (a traffic-shift step
includes its step bake); BAKE_TIME lasts the scenario's `bake` seconds, whatever the service's
bakeTimeInMinutes says, so tests stay short. What happens then is the scenario's outcome:

    complete       IN_PROGRESS through every stage, then SUCCESSFUL (stage CLEAN_UP)
    fail           the circuit breaker trips at `after`, in SCALE_UP: ROLLBACK_IN_PROGRESS for
                   `rollback` seconds, then ROLLBACK_SUCCESSFUL, the service back on the
                   previous revision (STOPPED at once, the service left on the failed one,
                   when the service enables the breaker without rollback)
    alarm          halfway through BAKE_TIME the deployment's CloudWatch alarms go off (those
                   `deploymentConfiguration.alarms` names, else DEFAULT_ALARM):
                   ROLLBACK_IN_PROGRESS for `rollback` seconds, then ROLLBACK_SUCCESSFUL, the
                   service back on the previous revision
    rollback_fail  the breaker trips as for `fail`, the rollback fails: ROLLBACK_IN_PROGRESS,
                   then ROLLBACK_FAILED. The service is left on neither cleanly: it still
                   points at the failed task definition, whose deployment stays PRIMARY and
                   FAILED, while the previous deployment's tasks run on beside it (ACTIVE)
    stick          IN_PROGRESS for ever, its tasks never leaving SCALE_UP

StopServiceDeployment stops a deployment in flight as someone else would: stopType ABORT (also
when no stopType is given, so a plain stop ends STOPPED) makes it STOP_REQUESTED for `rollback`
seconds, then STOPPED, the service left as it is (the new deployment PRIMARY and FAILED, the
old one's tasks running beside it); ROLLBACK makes it ROLLBACK_REQUESTED, then
ROLLBACK_IN_PROGRESS (`rollback` seconds from the first to the last), then
ROLLBACK_SUCCESSFUL, the service back on the previous revision. A stop of a deployment that is
already stopping or rolling back changes nothing; of one that ended, a ConflictException. A
newer UpdateService stops the one in flight at once (STOPPED, superseded).

Records advance lazily with the rollout controller's clock, like the rollouts in rollout.py,
whose progression drives them and applies the same decisions to the service's `deployments` list.
A decision that changed that list (a failure, an alarm, a stop) is kept even if the scenario
changes later; until then the scenario is read afresh at every look.

Records live on moto's Service objects, so moto's reset drops them. Services with a
deployment controller other than ECS get no visible records, as in ECS. A service names its
newest visible record as `currentServiceDeployment`, so UpdateService's answer names the
deployment it started.
"""

from __future__ import annotations

import base64
import copy
import math
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult
from moto.ecs.exceptions import InvalidParameterException
from moto.ecs.models import EC2ContainerServiceBackend, Service, ecs_backends
from moto.ecs.responses import EC2ContainerServiceResponse

from reconciler.sandbox.hooks import HookAction, Pause, PauseHook, pause_hooks, stop_points

if TYPE_CHECKING:
    from reconciler.sandbox.scenario import Scenario

DESCRIBE_LIMIT = 20  # DescribeServiceDeployments and DescribeServiceRevisions take 20 ARNs
LIST_DEFAULT = 20  # ListServiceDeployments answers this many when maxResults is not given
LIST_LIMIT = 100
DEFAULT_ALARM = "sandbox-deployment-alarm"  # when the service names no alarms of its own
DEFAULT_LINEAR_STEP = 10.0
DEFAULT_CANARY_PERCENT = 5.0
BREAKER_REASON = "ECS deployment circuit breaker: tasks failed to start."

Cause = Literal["breaker", "alarm", "request"]
# rollback: back on the previous revision; halt: left as it is; rollback_fails: tried, failed.
Action = Literal["rollback", "halt", "rollback_fails"]
StopType = Literal["ABORT", "ROLLBACK"]


class ServiceDeploymentNotFoundException(ServiceException):
    code = "ServiceDeploymentNotFoundException"


class ConflictException(ServiceException):
    code = "ConflictException"


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- revisions ---


@dataclass(frozen=True)
class Revision:
    """One service revision: what a deployment puts in place, never changed afterwards."""

    arn: str
    service_arn: str
    cluster_arn: str
    task_definition: str | None
    launch_type: str | None
    platform_version: str | None
    network_configuration: Mapping[str, Any] | None
    container_images: tuple[Mapping[str, str], ...]
    created: datetime

    def describe(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "serviceRevisionArn": self.arn,
            "serviceArn": self.service_arn,
            "clusterArn": self.cluster_arn,
            "taskDefinition": self.task_definition,
            "launchType": self.launch_type,
            "platformVersion": self.platform_version,
            "platformFamily": "EC2" if self.launch_type == "EC2" else "FARGATE",
            "networkConfiguration": copy.deepcopy(dict(self.network_configuration))
            if self.network_configuration
            else None,
            "containerImages": [dict(image) for image in self.container_images],
            "createdAt": self.created,
        }
        return _drop_none(answer)


def _arn(service: Service, kind: str, ident: str) -> str:
    # arn:aws:ecs:<region>:<account>:service/... -> ...:<kind>/<cluster>/<service>/<id>
    prefix = service.arn.split(":service/", 1)[0]
    return f"{prefix}:{kind}/{service.cluster_name}/{service.name}/{ident}"


def _revision(backend: EC2ContainerServiceBackend, service: Service) -> Revision:
    images: tuple[Mapping[str, str], ...] = ()
    if service.task_definition:
        definition = backend.describe_task_definition(service.task_definition)
        images = tuple(
            {"containerName": str(c.get("name")), "image": str(c.get("image"))}
            for c in definition.container_definitions
        )
    return Revision(
        arn=_arn(service, "service-revision", f"{secrets.randbelow(10**19):019d}"),
        service_arn=service.arn,
        cluster_arn=service.cluster_arn,
        task_definition=service.task_definition,
        launch_type=service.launch_type,
        platform_version=service.platform_version,
        network_configuration=copy.deepcopy(service.network_configuration) or None,
        container_images=images,
        created=utcnow(),
    )


# --- the lifecycle ---


@dataclass(frozen=True)
class Phase:
    """A lifecycle stage, with the traffic weights the target revision has asked for in it."""

    stage: str
    test_weight: float | None = None
    production_weight: float | None = None


def strategy_phases(configuration: Mapping[str, Any]) -> tuple[Phase, ...]:
    """The stages a deployment with this configuration goes through before BAKE_TIME."""
    strategy = configuration.get("strategy") or "ROLLING"
    scale_up = Phase("SCALE_UP")
    test = Phase("TEST_TRAFFIC_SHIFT", 100.0, 0.0)
    if strategy == "BLUE_GREEN":
        return (scale_up, test, Phase("PRODUCTION_TRAFFIC_SHIFT", 100.0, 100.0))
    if strategy == "LINEAR":
        linear = configuration.get("linearConfiguration") or {}
        step = float(linear.get("stepPercent") or 0) or DEFAULT_LINEAR_STEP
        steps = math.ceil(100 / step)
        shifts = tuple(
            Phase("PRODUCTION_TRAFFIC_SHIFT", 100.0, min(round(step * k, 6), 100.0))
            for k in range(1, steps + 1)
        )
        return (scale_up, test, *shifts)
    if strategy == "CANARY":
        canary = configuration.get("canaryConfiguration") or {}
        percent = float(canary.get("canaryPercent") or 0) or DEFAULT_CANARY_PERCENT
        return (
            scale_up,
            test,
            Phase("PRODUCTION_TRAFFIC_SHIFT", 100.0, min(percent, 100.0)),
            Phase("PRODUCTION_TRAFFIC_SHIFT", 100.0, 100.0),
        )
    return (Phase("RECONCILE_SERVICE"), scale_up)


@dataclass(frozen=True)
class Ending:
    """How a deployment that will not complete ends, decided `at` seconds after it started."""

    cause: Cause
    action: Action
    at: float
    takes: float  # seconds from `at` to the final status
    phase: Phase  # the stage it was in
    alarms: tuple[str, ...] = ()  # the alarms that went off (cause "alarm")
    stop_type: StopType | None = None  # cause "request"


def _configured_alarms(configuration: Mapping[str, Any]) -> tuple[str, ...]:
    alarms = configuration.get("alarms") or {}
    if alarms.get("enable") is False:
        return ()
    return tuple(str(name) for name in alarms.get("alarmNames") or ())


def _breaker_enabled(configuration: Mapping[str, Any]) -> bool:
    return bool((configuration.get("deploymentCircuitBreaker") or {}).get("enable"))


@dataclass
class Record:
    """One service deployment, advanced lazily by `advance`."""

    arn: str
    service_arn: str
    cluster_arn: str
    target: Revision
    sources: tuple[Revision, ...]
    rollback_to: Revision | None  # the revision a rollback goes back to
    configuration: dict[str, Any]  # the service's deploymentConfiguration when it started
    desired: int
    threshold: int  # failed tasks that trip the circuit breaker
    visible: bool  # ECS keeps service deployments for the ECS deployment controller only
    clock: float  # the rollout controller's clock when it started
    created: datetime = field(default_factory=utcnow)
    status: str = "IN_PROGRESS"
    phase: Phase = field(default_factory=lambda: Phase("RECONCILE_SERVICE"))
    ending: Ending | None = None
    finished: float | None = None  # seconds after `clock` when it reached its final status
    updated: float = 0.0
    reason: str = ""
    # It goes back to the revision the service last completed (a rollback by UpdateService).
    reverts: bool = False
    hooks: tuple[PauseHook, ...] = ()  # its PAUSE lifecycle hooks (hooks.py)
    pause: Pause | None = None  # stopped at one of them now
    passed: set[tuple[str, str]] = field(default_factory=set)  # (hook id, stage) continued
    held: float = 0.0  # seconds it spent stopped at hooks: every later stage starts later

    @property
    def done(self) -> bool:
        return self.finished is not None

    @property
    def phases(self) -> tuple[Phase, ...]:
        return strategy_phases(self.configuration)

    def _scale_up(self) -> Phase:
        return next(p for p in self.phases if p.stage == "SCALE_UP")

    def _schedule(self, scenario: Scenario) -> list[tuple[float, Phase]]:
        """(start, phase) for each stage it will be in under `scenario`, in order."""
        phases = list(self.phases)
        if scenario.outcome not in ("complete", "alarm"):
            # Its tasks never get healthy: nothing after SCALE_UP is reached.
            phases = phases[: phases.index(self._scale_up()) + 1]
        share = scenario.after / len(phases)
        schedule = [(share * i, phase) for i, phase in enumerate(phases)]
        if scenario.outcome in ("complete", "alarm"):
            last = phases[-1]
            bake = Phase("BAKE_TIME", last.test_weight, last.production_weight)
            schedule.append((scenario.after, bake))
        return schedule

    def _ending_for(self, scenario: Scenario, *, breaker_rolls_back: bool) -> Ending | None:
        can_roll_back = self.rollback_to is not None
        if scenario.outcome == "fail":
            if breaker_rolls_back and can_roll_back:
                return Ending(
                    "breaker", "rollback", scenario.after, scenario.rollback, self._scale_up()
                )
            return Ending("breaker", "halt", scenario.after, 0.0, self._scale_up())
        if scenario.outcome == "rollback_fail":
            return Ending(
                "breaker", "rollback_fails", scenario.after, scenario.rollback, self._scale_up()
            )
        if scenario.outcome == "alarm":
            names = _configured_alarms(self.configuration) or (DEFAULT_ALARM,)
            bake = self._schedule(scenario)[-1][1]
            return Ending(
                "alarm",
                "rollback" if can_roll_back else "halt",
                scenario.after + scenario.bake / 2,
                scenario.rollback if can_roll_back else 0.0,
                bake,
                alarms=names,
            )
        return None

    def advance(self, scenario: Scenario, now: float, *, breaker_rolls_back: bool) -> None:
        """Bring the record up to `now`, reading `scenario` until its ending is decided."""
        if self.done:
            return
        if self.pause is not None:
            if not self.pause.expired(now):
                return  # it waits where the hook stopped it
            hook = self.pause.point.hook
            self.resume(hook.id, self.pause.since + (hook.timeout or 0.0))
            if hook.timeout_action == "ROLLBACK":
                self.stop("ROLLBACK", now, scenario.rollback)
        elapsed = self._elapsed(now)
        if self.ending is None:
            ending = self._ending_for(scenario, breaker_rolls_back=breaker_rolls_back)
            if self._stops_at_hook(scenario, elapsed, before=ending.at if ending else None):
                return
            if ending is not None and elapsed >= ending.at:
                self._decide(ending)
            elif scenario.outcome == "complete" and elapsed >= scenario.after + scenario.bake:
                last = self._schedule(scenario)[-1][1]
                self.phase = Phase("CLEAN_UP", last.test_weight, last.production_weight)
                self._finish("SUCCESSFUL", scenario.after + scenario.bake)
                return
            else:
                started, self.phase = [s for s in self._schedule(scenario) if s[0] <= elapsed][-1]
                self.updated = max(self.updated, started)
                return
        assert self.ending is not None
        ending = self.ending
        if elapsed >= ending.at + ending.takes:
            final = {"rollback": "ROLLBACK_SUCCESSFUL", "halt": "STOPPED"}
            self._finish(final.get(ending.action, "ROLLBACK_FAILED"), ending.at + ending.takes)
        elif self.status == "ROLLBACK_REQUESTED" and elapsed - ending.at >= ending.takes / 2:
            # A rollback someone asked for is ROLLBACK_REQUESTED for its first half.
            self.status = "ROLLBACK_IN_PROGRESS"
            self.updated = ending.at + ending.takes / 2

    def stop(self, stop_type: StopType, now: float, takes: float) -> None:
        """StopServiceDeployment, `takes` seconds to its final status (after `advance` brought
        it up to `now`)."""
        if self.done:
            raise ConflictException(
                f"The service deployment {self.arn} has ended ({self.status}): "
                "there is nothing to stop."
            )
        if self.ending is not None:
            return  # already stopping or rolling back: it goes on doing so
        if self.pause is not None:
            self.resume(self.pause.point.hook.id, now)
        action: Action = "rollback" if stop_type == "ROLLBACK" and self.rollback_to else "halt"
        at = self._elapsed(now)
        self._decide(Ending("request", action, at, takes, self.phase, stop_type=stop_type))
        if takes == 0:
            self._finish("ROLLBACK_SUCCESSFUL" if action == "rollback" else "STOPPED", at)

    def supersede(self, by: str, now: float) -> None:
        """A newer deployment of the service started: this one stops where it is."""
        if self.done:
            return
        if self.pause is not None:
            self.resume(self.pause.point.hook.id, now)
        self._finish("STOPPED", self._elapsed(now))
        self.reason = f"Superseded by service deployment {by}."

    def resume(self, hook_id: str, now: float) -> None:
        """ContinueServiceDeployment with CONTINUE (or a hook's timeout): it goes on where
        the hook `hook_id` stopped it; ConflictException when it is not stopped there."""
        pause = self.pause
        if self.done or pause is None or pause.point.hook.id != hook_id:
            where = f"at hook {pause.point.hook.id}" if pause is not None else "at no hook"
            raise ConflictException(
                f"The service deployment {self.arn} is not paused at hook {hook_id} "
                f"(it is {self.status}, {where})."
            )
        self.held += max(now - pause.since, 0.0)
        self.passed.add((pause.point.hook.id, pause.point.stage))
        self.pause = None

    def _elapsed(self, now: float) -> float:
        """Seconds into its schedule: since it started, less the time it waited at hooks."""
        return max(now - self.clock - self.held, 0.0)

    def _stops_at_hook(self, scenario: Scenario, elapsed: float, *, before: float | None) -> bool:
        """Stop at the first hook reached and not passed (before an ending decided at
        `before`); True when it is stopped there now."""
        schedule = self._schedule(scenario)
        stages = [(start, phase.stage) for start, phase in schedule]
        for point in stop_points(stages, self.hooks):
            if (point.hook.id, point.stage) in self.passed:
                continue
            if point.offset > elapsed or (before is not None and point.offset >= before):
                return False
            self.pause = Pause(point, since=self.clock + self.held + point.offset)
            shown = schedule[point.traffic][1]
            self.phase = Phase(point.stage, shown.test_weight, shown.production_weight)
            self.updated = max(self.updated, point.offset)
            return True
        return False

    def _decide(self, ending: Ending) -> None:
        self.ending = ending
        self.phase = ending.phase
        self.updated = ending.at
        if ending.cause == "breaker":
            self.reason = BREAKER_REASON
            if ending.action == "rollback_fails":
                self.reason += " The rollback to the previous revision failed as well."
        elif ending.cause == "alarm":
            names = ", ".join(ending.alarms)
            self.reason = f"CloudWatch alarm(s) {names} went off during bake time."
        elif ending.action == "rollback":
            self.reason = "Stopped on request and rolled back (StopServiceDeployment, ROLLBACK)."
        else:
            self.reason = f"Stopped on request (StopServiceDeployment, {ending.stop_type})."
        if ending.action == "halt":
            self.status = "STOP_REQUESTED"
        elif ending.cause == "request":
            self.status = "ROLLBACK_REQUESTED"
        else:
            self.status = "ROLLBACK_IN_PROGRESS"

    def _finish(self, status: str, at: float) -> None:
        self.status = status
        self.finished = self.updated = at

    # --- answers ---

    def _at(self, offset: float) -> datetime:
        return self.created + timedelta(seconds=offset + self.held)

    def brief(self) -> dict[str, Any]:
        """A ListServiceDeployments entry."""
        return _drop_none(
            {
                "serviceDeploymentArn": self.arn,
                "serviceArn": self.service_arn,
                "clusterArn": self.cluster_arn,
                "createdAt": self.created,
                "startedAt": self.created,
                "finishedAt": self._at(self.finished) if self.finished is not None else None,
                "targetServiceRevisionArn": self.target.arn,
                "status": self.status,
                "statusReason": self.reason or None,
            }
        )

    def describe(self) -> dict[str, Any]:
        """A DescribeServiceDeployments entry."""
        answer = self.brief()
        del answer["targetServiceRevisionArn"]
        ending = self.ending
        succeeded = self.status == "SUCCESSFUL"
        moving = not self.done and ending is None
        scaled = moving and self.phase.stage not in ("RECONCILE_SERVICE", "SCALE_UP")
        target: dict[str, Any] = {
            "arn": self.target.arn,
            "requestedTaskCount": self.desired,
            "runningTaskCount": self.desired if succeeded or scaled else 0,
            "pendingTaskCount": self.desired if moving and self.phase.stage == "SCALE_UP" else 0,
            "requestedTestTrafficWeight": self.phase.test_weight,
            "requestedProductionTrafficWeight": self.phase.production_weight,
        }
        answer["targetServiceRevision"] = _drop_none(target)
        answer["sourceServiceRevisions"] = [
            {
                "arn": source.arn,
                "requestedTaskCount": 0 if succeeded else self.desired,
                "runningTaskCount": 0 if succeeded else self.desired,
                "pendingTaskCount": 0,
            }
            for source in self.sources
        ]
        answer["updatedAt"] = self._at(self.updated)
        if self.status == "STOPPED" and self.finished is not None:
            answer["stoppedAt"] = self._at(self.finished)
        answer["lifecycleStage"] = self.phase.stage
        if self.pause is not None:
            started = self._at(self.pause.point.offset)
            answer["lifecycleHookDetails"] = [self.pause.details(started)]
        answer["deploymentConfiguration"] = copy.deepcopy(self.configuration)
        tripped = ending is not None and ending.cause == "breaker"
        if tripped:
            breaker_status = "TRIGGERED"
        elif _breaker_enabled(self.configuration):
            breaker_status = "MONITORING" if moving else "MONITORING_COMPLETE"
        else:
            breaker_status = "DISABLED"
        answer["deploymentCircuitBreaker"] = {
            "status": breaker_status,
            "failureCount": self.threshold if tripped else 0,
            "threshold": self.threshold,
        }
        configured = _configured_alarms(self.configuration)
        alarms: dict[str, Any]
        if ending is not None and ending.cause == "alarm":
            names = list(dict.fromkeys((*configured, *ending.alarms)))
            alarms = {
                "status": "TRIGGERED",
                "alarmNames": names,
                "triggeredAlarmNames": list(ending.alarms),
            }
        elif configured:
            alarms = {
                "status": "MONITORING" if moving else "MONITORING_COMPLETE",
                "alarmNames": list(configured),
            }
        else:
            alarms = {"status": "DISABLED"}
        answer["alarms"] = alarms
        if ending is not None and ending.action != "halt" and self.rollback_to is not None:
            answer["rollback"] = {
                "reason": self.reason,
                "startedAt": self._at(ending.at),
                "serviceRevisionArn": self.rollback_to.arn,
            }
        return answer


def _drop_none(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if v is not None}


# --- per-service history, kept on moto's Service objects ---


@dataclass
class History:
    records: list[Record] = field(default_factory=list)  # oldest first
    revisions: dict[str, Revision] = field(default_factory=dict)
    stable: Revision | None = None  # the revision it runs when no deployment is in flight

    def add_revision(self, revision: Revision) -> Revision:
        self.revisions[revision.arn] = revision
        return revision


def history(backend: EC2ContainerServiceBackend, service: Service) -> History:
    found = getattr(service, "sandbox_deployments", None)
    if found is None:  # a service created outside the sandbox: take it as steady
        found = History()
        if service.task_definition:
            found.stable = found.add_revision(_revision(backend, service))
        setattr(service, "sandbox_deployments", found)  # noqa: B010
    assert isinstance(found, History)
    return found


def _visible(service: Service) -> bool:
    controller = getattr(service, "deployment_controller", None) or {}
    return (controller.get("type") or "ECS") == "ECS"


def record_creation(backend: EC2ContainerServiceBackend, service: Service, clock: float) -> None:
    """CreateService: one SUCCESSFUL deployment of the first revision (it settles at once)."""
    found = History()
    setattr(service, "sandbox_deployments", found)  # noqa: B010
    if not service.task_definition:
        return
    revision = found.stable = found.add_revision(_revision(backend, service))
    record = Record(
        arn=_arn(service, "service-deployment", secrets.token_urlsafe(16)[:22]),
        service_arn=service.arn,
        cluster_arn=service.cluster_arn,
        target=revision,
        sources=(),
        rollback_to=None,
        configuration=copy.deepcopy(getattr(service, "deployment_configuration", None) or {}),
        desired=service.desired_count,
        threshold=failed_task_threshold(service.desired_count),
        visible=_visible(service),
        clock=clock,
    )
    last = record.phases[-1]
    record.phase = Phase("CLEAN_UP", last.test_weight, last.production_weight)
    record._finish("SUCCESSFUL", 0.0)
    found.records.append(record)
    _name_current(service, record)


def start_deployment(
    backend: EC2ContainerServiceBackend, service: Service, clock: float, *, previous: str | None
) -> Record:
    """UpdateService started a deployment of what the service now says (it said `previous`
    before); older ones in flight stop (superseded)."""
    found = history(backend, service)
    target = found.add_revision(_revision(backend, service))
    in_flight = [r for r in found.records if not r.done]
    sources: dict[str, Revision] = {}
    for revision in (found.stable, *(r.target for r in in_flight)):
        if revision is not None:
            sources.setdefault(revision.arn, revision)
    record = Record(
        arn=_arn(service, "service-deployment", secrets.token_urlsafe(16)[:22]),
        service_arn=service.arn,
        cluster_arn=service.cluster_arn,
        target=target,
        sources=tuple(sources.values()),
        rollback_to=found.stable,
        configuration=copy.deepcopy(getattr(service, "deployment_configuration", None) or {}),
        desired=service.desired_count,
        threshold=failed_task_threshold(service.desired_count),
        visible=_visible(service),
        clock=clock,
        phase=strategy_phases(getattr(service, "deployment_configuration", None) or {})[0],
        hooks=pause_hooks(getattr(service, "deployment_configuration", None) or {}),
        reverts=(
            found.stable is not None
            and service.task_definition == found.stable.task_definition != previous
        ),
    )
    for older in in_flight:
        older.supersede(record.arn, clock)
    found.records.append(record)
    _name_current(service, record)
    return record


def _name_current(service: Service, record: Record) -> None:
    """The service names its newest service deployment (`currentServiceDeployment` in the
    answers of CreateService, UpdateService and DescribeServices), as ECS does; moto's
    serializer reads the attribute by the model's field name."""
    if record.visible:
        setattr(service, "current_service_deployment", record.arn)  # noqa: B010


def failed_task_threshold(desired: int) -> int:
    # ECS trips the circuit breaker after max(3, ceil(desired / 2)) failures, capped at 200.
    return min(max(3, math.ceil(desired / 2)), 200)


# --- the API ---


class Host(Protocol):
    """What the handlers need from the rollout controller serving the request."""

    def look(self, backend: EC2ContainerServiceBackend, service: Service) -> None:
        """Advance the service's rollout (and so its records) to now."""

    def stop_deployment(
        self, backend: EC2ContainerServiceBackend, service: Service, record: Record, how: StopType
    ) -> None:
        """StopServiceDeployment of one of the service's records."""

    def continue_deployment(
        self,
        backend: EC2ContainerServiceBackend,
        service: Service,
        record: Record,
        hook_id: str,
        action: HookAction,
    ) -> None:
        """ContinueServiceDeployment of one of the service's records."""


def _parse_arn(arn: str, kind: str) -> tuple[str, str, str, str] | None:
    """(account, region, cluster, service) of a service-deployment or service-revision ARN."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "ecs":
        return None
    resource = parts[5].split("/")
    if len(resource) != 4 or resource[0] != kind:
        return None
    return parts[4], parts[3], resource[1], resource[2]


def _service_of(arn: str, kind: str) -> tuple[EC2ContainerServiceBackend, Service] | None:
    parsed = _parse_arn(arn, kind)
    if parsed is None:
        return None
    account, region, cluster, name = parsed
    if account not in ecs_backends or region not in ecs_backends[account]:
        return None
    backend = ecs_backends[account][region]
    service = backend.services.get(f"{cluster}:{name}")
    return None if service is None else (backend, service)


def _arns(response: EC2ContainerServiceResponse, param: str) -> list[str]:
    arns = [str(a) for a in response._get_param(param) or []]
    if len(arns) > DESCRIBE_LIMIT:
        raise InvalidParameterException(
            f"{param} can have at most {DESCRIBE_LIMIT} items, got {len(arns)}."
        )
    return arns


def _grouped(
    host: Host, arns: Iterable[str], kind: str
) -> dict[str, tuple[EC2ContainerServiceBackend, Service] | None]:
    """Each ARN's service, every service advanced to now once."""
    found: dict[str, tuple[EC2ContainerServiceBackend, Service] | None] = {}
    looked: set[int] = set()
    for arn in arns:
        owner = found[arn] = _service_of(arn, kind)
        if owner is not None and id(owner[1]) not in looked:
            looked.add(id(owner[1]))
            host.look(*owner)
    return found


def _find_record(
    owner: tuple[EC2ContainerServiceBackend, Service] | None, arn: str
) -> Record | None:
    if owner is None:
        return None
    records = history(*owner).records
    return next((r for r in records if r.arn == arn and r.visible), None)


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return _as_datetime(datetime.fromisoformat(str(value)))


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"sandbox:{offset}".encode()).decode()


def _offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        kind, _, number = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if kind == "sandbox" and number.isdigit():
            return int(number)
    except (ValueError, UnicodeDecodeError):
        pass
    raise InvalidParameterException("Invalid nextToken.")


def list_service_deployments(host: Host, response: EC2ContainerServiceResponse) -> ActionResult:
    backend = response.ecs_backend
    cluster = backend._get_cluster(response._get_param("cluster") or "default")
    service = backend._get_service(cluster.name, str(response._get_param("service") or ""))
    host.look(backend, service)
    statuses = set(response._get_param("status") or ())
    window = response._get_param("createdAt") or {}
    after = _as_datetime(window["after"]) if window.get("after") is not None else None
    before = _as_datetime(window["before"]) if window.get("before") is not None else None
    limit = response._get_param("maxResults")
    limit = LIST_DEFAULT if limit is None else int(limit)
    if not 1 <= limit <= LIST_LIMIT:
        raise InvalidParameterException(f"maxResults must be between 1 and {LIST_LIMIT}.")
    offset = _offset(response._get_param("nextToken"))
    # Newest first; among equal times the later-made record first.
    found = [
        record
        for record in reversed(history(backend, service).records)
        if record.visible
        and (not statuses or record.status in statuses)
        and (after is None or record.created >= after)
        and (before is None or record.created <= before)
    ]
    found.sort(key=lambda r: r.created, reverse=True)
    page = found[offset : offset + limit]
    answer: dict[str, Any] = {"serviceDeployments": [r.brief() for r in page]}
    if offset + limit < len(found):
        answer["nextToken"] = _token(offset + limit)
    return ActionResult(answer)


def describe_service_deployments(host: Host, response: EC2ContainerServiceResponse) -> ActionResult:
    arns = _arns(response, "serviceDeploymentArns")
    owners = _grouped(host, arns, "service-deployment")
    deployments: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    for arn in arns:
        record = _find_record(owners[arn], arn)
        if record is None:
            failures.append({"arn": arn, "reason": "MISSING"})
        else:
            deployments.append(record.describe())
    return ActionResult({"serviceDeployments": deployments, "failures": failures})


def describe_service_revisions(host: Host, response: EC2ContainerServiceResponse) -> ActionResult:
    arns = _arns(response, "serviceRevisionArns")
    revisions: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    for arn in arns:
        owner = _service_of(arn, "service-revision")
        revision = None
        if owner is not None and _visible(owner[1]):
            revision = history(*owner).revisions.get(arn)
        if revision is None:
            failures.append({"arn": arn, "reason": "MISSING"})
        else:
            revisions.append(revision.describe())
    return ActionResult({"serviceRevisions": revisions, "failures": failures})


def stop_service_deployment(host: Host, response: EC2ContainerServiceResponse) -> ActionResult:
    arn = str(response._get_param("serviceDeploymentArn") or "")
    requested = response._get_param("stopType") or "ABORT"
    if requested not in get_args(StopType):
        raise InvalidParameterException(f"stopType must be ABORT or ROLLBACK, not {requested!r}.")
    how: StopType = "ABORT" if requested == "ABORT" else "ROLLBACK"
    owner = _grouped(host, [arn], "service-deployment")[arn]
    record = _find_record(owner, arn)
    if owner is None or record is None:
        raise ServiceDeploymentNotFoundException(f"Service deployment {arn} not found.")
    host.stop_deployment(*owner, record, how)
    return ActionResult({"serviceDeploymentArn": arn})


def continue_service_deployment(host: Host, response: EC2ContainerServiceResponse) -> ActionResult:
    arn = str(response._get_param("serviceDeploymentArn") or "")
    hook_id = str(response._get_param("hookId") or "")
    requested = response._get_param("action") or "CONTINUE"
    if requested not in get_args(HookAction):
        raise InvalidParameterException(f"action must be CONTINUE or ROLLBACK, not {requested!r}.")
    action: HookAction = "CONTINUE" if requested == "CONTINUE" else "ROLLBACK"
    owner = _grouped(host, [arn], "service-deployment")[arn]
    record = _find_record(owner, arn)
    if owner is None or record is None:
        raise ServiceDeploymentNotFoundException(f"Service deployment {arn} not found.")
    host.continue_deployment(*owner, record, hook_id, action)
    return ActionResult({"serviceDeploymentArn": arn})


# The calls moto lacks, by response method name; rollout.py adds them to moto's ECS responses,
# where they run for the controller serving the request, under its lock.
HANDLERS: dict[str, Callable[[Host, EC2ContainerServiceResponse], ActionResult]] = {
    "list_service_deployments": list_service_deployments,
    "describe_service_deployments": describe_service_deployments,
    "describe_service_revisions": describe_service_revisions,
    "stop_service_deployment": stop_service_deployment,
    "continue_service_deployment": continue_service_deployment,
}


__all__ = [
    "DEFAULT_ALARM",
    "HANDLERS",
    "Ending",
    "History",
    "Phase",
    "Record",
    "Revision",
    "history",
    "record_creation",
    "start_deployment",
    "strategy_phases",
]
