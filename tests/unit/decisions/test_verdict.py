"""The rollout verdict: success is narrow, everything else is pending or a failure."""

from __future__ import annotations

import pytest

from reconciler.decisions.model import Deployment, ServiceDeployment, ServiceState
from reconciler.decisions.verdict import (
    RolloutFailed,
    RolloutPending,
    RolloutSucceeded,
    judge,
    judge_service_deployment,
)

OLD, NEW = "td/web:1", "td/web:2"


def state(td: str, *deployments: Deployment) -> ServiceState:
    return ServiceState("prod", "web", td, deployments)


def test_completed_primary_with_new_task_definition_succeeds() -> None:
    """Our deployment, PRIMARY and COMPLETED, service on the new task definition: success."""
    s = state(NEW, Deployment("d2", "PRIMARY", NEW, "COMPLETED", 2, 2))
    assert judge(s, deployment_id="d2", task_definition=NEW) == RolloutSucceeded()


def test_in_progress_is_pending() -> None:
    s = state(
        NEW,
        Deployment("d2", "PRIMARY", NEW, "IN_PROGRESS", 1, 2),
        Deployment("d1", "ACTIVE", OLD, "COMPLETED", 1, 2),
    )
    assert judge(s, deployment_id="d2", task_definition=NEW) == RolloutPending()


def test_circuit_breaker_rollback_is_a_failure_even_though_the_service_is_stable() -> None:
    """The case botocore's services-stable waiter reports as success."""
    s = state(
        OLD,
        Deployment("d3", "PRIMARY", OLD, "COMPLETED", 2, 2),
        Deployment("d2", "ACTIVE", NEW, "FAILED", 0, 2, reason="circuit breaker"),
    )
    verdict = judge(s, deployment_id="d2", task_definition=NEW)
    assert isinstance(verdict, RolloutFailed)
    assert verdict.rolled_back_by_ecs


def test_deployment_gone_is_a_failure() -> None:
    s = state(OLD, Deployment("d9", "PRIMARY", OLD, "COMPLETED", 2, 2))
    assert isinstance(judge(s, deployment_id="d2", task_definition=NEW), RolloutFailed)


def test_superseded_by_someone_else_is_a_failure() -> None:
    s = state(
        NEW,
        Deployment("d3", "PRIMARY", NEW, "IN_PROGRESS", 0, 2),
        Deployment("d2", "ACTIVE", NEW, "IN_PROGRESS", 1, 2),
    )
    assert isinstance(judge(s, deployment_id="d2", task_definition=NEW), RolloutFailed)


def test_without_rollout_state_success_needs_a_lone_fully_running_deployment() -> None:
    lone = state(NEW, Deployment("d2", "PRIMARY", NEW, None, 2, 2))
    draining = state(
        NEW,
        Deployment("d2", "PRIMARY", NEW, None, 2, 2),
        Deployment("d1", "ACTIVE", OLD, None, 1, 2),
    )
    assert judge(lone, deployment_id="d2", task_definition=NEW) == RolloutSucceeded()
    assert judge(draining, deployment_id="d2", task_definition=NEW) == RolloutPending()


# --- service deployment records ----------------------------------------------------------

ARN = "arn:aws:ecs:us-east-1:1:service-deployment/prod/web/abc"
SERVICE_DEPLOYMENT_CASES = {
    "SUCCESSFUL is success": ("SUCCESSFUL", {}, RolloutSucceeded()),
    "PENDING is in flight": ("PENDING", {}, RolloutPending()),
    "IN_PROGRESS (baking) is in flight": (
        "IN_PROGRESS",
        {"lifecycle_stage": "BAKE_TIME"},
        RolloutPending(),
    ),
    "STOP_REQUESTED is in flight": ("STOP_REQUESTED", {}, RolloutPending()),
    "ROLLBACK_REQUESTED is in flight": ("ROLLBACK_REQUESTED", {}, RolloutPending()),
    "ROLLBACK_IN_PROGRESS is in flight": ("ROLLBACK_IN_PROGRESS", {}, RolloutPending()),
}


@pytest.mark.parametrize(
    ("status", "extra", "expected"),
    list(SERVICE_DEPLOYMENT_CASES.values()),
    ids=list(SERVICE_DEPLOYMENT_CASES),
)
def test_service_deployment_statuses_in_flight_or_success(
    status: str, extra: dict[str, str], expected: object
) -> None:
    record = ServiceDeployment(ARN, status, lifecycle_stage=extra.get("lifecycle_stage", ""))
    assert judge_service_deployment(record, service_moved_away=False) == expected


def test_a_rollback_by_alarms_is_a_failure_naming_them() -> None:
    record = ServiceDeployment(
        ARN, "ROLLBACK_SUCCESSFUL", alarms_triggered=("web-5xx", "web-latency")
    )
    verdict = judge_service_deployment(record, service_moved_away=True)
    assert isinstance(verdict, RolloutFailed)
    assert verdict.rolled_back_by_ecs and not verdict.rollback_failed
    assert "web-5xx, web-latency" in verdict.reason


def test_a_circuit_breaker_rollback_is_a_failure_with_the_count() -> None:
    record = ServiceDeployment(ARN, "ROLLBACK_SUCCESSFUL", failed_tasks=3, status_reason="x")
    verdict = judge_service_deployment(record, service_moved_away=True)
    assert isinstance(verdict, RolloutFailed) and verdict.rolled_back_by_ecs
    assert "3 tasks failed (circuit breaker)" in verdict.reason


def test_rollback_failed_is_the_loud_failure() -> None:
    verdict = judge_service_deployment(
        ServiceDeployment(ARN, "ROLLBACK_FAILED", status_reason="no capacity"),
        service_moved_away=False,
    )
    assert isinstance(verdict, RolloutFailed)
    assert verdict.rollback_failed and not verdict.rolled_back_by_ecs
    assert "no capacity" in verdict.reason


@pytest.mark.parametrize("moved_away", [True, False])
def test_stopped_by_someone_else_is_a_failure(moved_away: bool) -> None:
    verdict = judge_service_deployment(
        ServiceDeployment(ARN, "STOPPED", status_reason="stopped by user"),
        service_moved_away=moved_away,
    )
    assert isinstance(verdict, RolloutFailed)
    assert verdict.rolled_back_by_ecs is moved_away
    assert "stopped" in verdict.reason
