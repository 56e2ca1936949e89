"""The rollout verdict: success is narrow, everything else is pending or a failure."""

from __future__ import annotations

from reconciler.model import Deployment, ServiceState
from reconciler.verdict import RolloutFailed, RolloutPending, RolloutSucceeded, judge

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
