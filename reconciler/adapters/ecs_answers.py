"""What ECS's answers mean, as the project's values (decisions/model.py), and the limits of
its calls. Pure translation: no calls are made here."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from reconciler.decisions.model import (
    Deployment,
    RolloutSettings,
    ServiceDeployment,
    ServiceState,
    TaskLaunch,
    TaskState,
)
from reconciler.decisions.service_fields import SERVICE_FIELDS

DESCRIBE_BATCH = 10  # DescribeServices accepts at most 10 services per call
DESCRIBE_TASKS_BATCH = 100  # DescribeTasks accepts at most 100 tasks per call
# DescribeServiceDeployments and DescribeServiceRevisions accept at most 20 ARNs per call.
DESCRIBE_DEPLOYMENTS_BATCH = 20
# Answers that say "this region, account or service keeps no service deployments", as
# opposed to "you may not read them" (AccessDenied, which the caller is told about).
UNSUPPORTED_CODES = frozenset(
    {"UnsupportedFeatureException", "UnknownOperationException", "InvalidAction"}
)
STOP_REASON_LIMIT = 255  # StopTask keeps at most this many characters of the reason


def deployment(raw: Mapping[str, Any]) -> Deployment:
    return Deployment(
        id=str(raw.get("id", "")),
        status=str(raw.get("status", "")),
        task_definition=str(raw.get("taskDefinition", "")),
        rollout_state=raw.get("rolloutState"),
        running_count=int(raw.get("runningCount", 0)),
        desired_count=int(raw.get("desiredCount", 0)),
        reason=str(raw.get("rolloutStateReason", "")),
    )


def task_launch(raw: Mapping[str, Any]) -> TaskLaunch:
    """How a service (a DescribeServices or UpdateService `service`) launches its tasks."""
    # Empty values count as absent: a service without awsvpc may answer `{}` for its network.
    network = raw.get("networkConfiguration") or None
    return TaskLaunch(
        launch_type=raw.get("launchType") or None,
        capacity_provider_strategy=tuple(
            copy.deepcopy(dict(s)) for s in raw.get("capacityProviderStrategy") or ()
        ),
        network_configuration=copy.deepcopy(dict(network)) if network else None,
        platform_version=raw.get("platformVersion") or None,
    )


def launch_request(launch: TaskLaunch) -> dict[str, Any]:
    """The RunTask parameters that launch a task as `launch` says."""
    request: dict[str, Any] = {}
    # RunTask refuses a launch type together with a capacity provider strategy.
    if launch.launch_type:
        request["launchType"] = launch.launch_type
    elif launch.capacity_provider_strategy:
        request["capacityProviderStrategy"] = [
            copy.deepcopy(dict(s)) for s in launch.capacity_provider_strategy
        ]
    if launch.network_configuration:
        request["networkConfiguration"] = copy.deepcopy(dict(launch.network_configuration))
    if launch.platform_version:
        request["platformVersion"] = launch.platform_version
    return request


def rollout_settings(raw: Mapping[str, Any]) -> RolloutSettings:
    """Who rolls a service (a DescribeServices `service`) out, how, and how long it bakes.

    The bake counts every wait ECS adds once the new tasks are up: bakeTimeInMinutes, plus
    each LINEAR step's bake (one per stepPercent of traffic), plus the CANARY's bake.
    """
    controller = str((raw.get("deploymentController") or {}).get("type") or "ECS")
    config = raw.get("deploymentConfiguration") or {}
    strategy = str(config.get("strategy") or "ROLLING")
    bake = 60.0 * float(config.get("bakeTimeInMinutes") or 0)
    if strategy == "LINEAR":
        linear = config.get("linearConfiguration") or {}
        step = float(linear.get("stepPercent") or 0)
        if step > 0:
            bake += 60.0 * float(linear.get("stepBakeTimeInMinutes") or 0) * math.ceil(100 / step)
    elif strategy == "CANARY":
        canary = config.get("canaryConfiguration") or {}
        bake += 60.0 * float(canary.get("canaryBakeTimeInMinutes") or 0)
    pauses = tuple(
        str(stage)
        for hook in config.get("lifecycleHooks") or ()
        if hook.get("targetType") == "PAUSE"
        for stage in hook.get("lifecycleStages") or ()
    )
    return RolloutSettings(
        controller=controller, strategy=strategy, bake_seconds=bake, pause_stages=pauses
    )


def service_state(cluster: str, raw: Mapping[str, Any]) -> ServiceState:
    # The newest service deployment; absent where the region or the deployment controller
    # keeps none (or an older API answers), so it is read where present and never required.
    current = raw.get("currentServiceDeployment")
    return ServiceState(
        cluster=cluster,
        service=str(raw.get("serviceName", "")),
        task_definition=str(raw.get("taskDefinition", "")),
        deployments=tuple(deployment(d) for d in raw.get("deployments", [])),
        status=str(raw.get("status", "")),
        launch=task_launch(raw),
        rollout=rollout_settings(raw),
        current_service_deployment=str(current) if current else None,
        settings=service_settings(raw),
    )


def service_settings(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The fields service.json may hold, as the service has them. Service Connect is told
    only on its deployments: the PRIMARY one's is the service's."""
    settings = {key: raw[key] for key in SERVICE_FIELDS if key in raw}
    if "serviceConnectConfiguration" not in settings:
        primary: Mapping[str, Any] = next(
            (d for d in raw.get("deployments") or [] if d.get("status") == "PRIMARY"), {}
        )
        if primary.get("serviceConnectConfiguration"):
            settings["serviceConnectConfiguration"] = primary["serviceConnectConfiguration"]
    return settings


def service_deployment(raw: Mapping[str, Any]) -> ServiceDeployment:
    """One DescribeServiceDeployments `serviceDeployments` entry."""
    breaker = raw.get("deploymentCircuitBreaker") or {}
    alarms = raw.get("alarms") or {}
    rollback = raw.get("rollback") or {}
    return ServiceDeployment(
        arn=str(raw.get("serviceDeploymentArn", "")),
        status=str(raw.get("status", "")),
        lifecycle_stage=str(raw.get("lifecycleStage") or ""),
        target_revision=str((raw.get("targetServiceRevision") or {}).get("arn") or ""),
        status_reason=str(raw.get("statusReason") or ""),
        created_at=moment_of(raw.get("createdAt")),
        started_at=moment_of(raw.get("startedAt")),
        # A stopped deployment has stoppedAt; ECS may leave finishedAt unset for it.
        finished_at=moment_of(raw.get("finishedAt") or raw.get("stoppedAt")),
        failed_tasks=int(breaker.get("failureCount") or 0),
        alarms_triggered=tuple(str(n) for n in alarms.get("triggeredAlarmNames") or ()),
        rollback_reason=str(rollback.get("reason") or ""),
        paused_hook=next(
            (
                str(hook["hookId"])
                for hook in raw.get("lifecycleHookDetails") or ()
                if hook.get("targetType") == "PAUSE"
                and hook.get("status") == "AWAITING_ACTION"
                and hook.get("hookId")
            ),
            None,
        ),
    )


def moment_of(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None


def unsupported(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code", "")) in UNSUPPORTED_CODES


def task_state(raw: Mapping[str, Any]) -> TaskState:
    """One DescribeTasks `task`."""
    exit_codes: dict[str, int | None] = {}
    reasons: dict[str, str] = {}
    for container in raw.get("containers") or []:
        name = str(container.get("name", ""))
        code = container.get("exitCode")
        exit_codes[name] = None if code is None else int(code)
        if container.get("reason"):
            reasons[name] = str(container["reason"])
    return TaskState(
        arn=str(raw.get("taskArn", "")),
        last_status=str(raw.get("lastStatus", "")),
        stop_code=str(raw.get("stopCode") or ""),
        stopped_reason=str(raw.get("stoppedReason") or ""),
        exit_codes=exit_codes,
        container_reasons=reasons,
    )


def one_line(text: str) -> str:
    return " ".join(text.split())


def failures_of(answer: Mapping[str, Any]) -> str:
    """The `failures` of an answer in one line: reason (detail), for each."""
    parts = []
    for failure in answer.get("failures") or []:
        reason = one_line(str(failure.get("reason") or "unknown reason"))
        detail = one_line(str(failure.get("detail") or ""))
        parts.append(f"{reason} ({detail})" if detail else reason)
    return "; ".join(parts)
