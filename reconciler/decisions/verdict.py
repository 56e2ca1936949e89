"""Is the rollout done? Pure verdicts, on a service deployment record where ECS keeps one,
else on one DescribeServices answer.

Success is narrow on purpose. With a service deployment: its status is SUCCESSFUL, nothing
else; ROLLBACK_SUCCESSFUL, STOPPED and ROLLBACK_FAILED are failures (the last one louder: the
service may be serving neither revision). Without one: the deployment UpdateService started
(by its id) is PRIMARY and COMPLETED, and the service still points at the new task
definition. botocore's services-stable waiter also says "stable" after a circuit-breaker
rollback; it is not used.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.decisions.model import ServiceDeployment, ServiceState


@dataclass(frozen=True)
class RolloutPending:
    pass


@dataclass(frozen=True)
class RolloutSucceeded:
    pass


@dataclass(frozen=True)
class RolloutFailed:
    reason: str
    rolled_back_by_ecs: bool
    # ECS tried to roll back and that failed too: the service may run neither revision.
    rollback_failed: bool = False


Verdict = RolloutPending | RolloutSucceeded | RolloutFailed


def judge(state: ServiceState, *, deployment_id: str, task_definition: str) -> Verdict:
    ours = state.deployment(deployment_id)
    moved_away = state.task_definition != task_definition
    if ours is None:
        return RolloutFailed(
            reason=f"deployment {deployment_id} is gone; service runs {state.task_definition}",
            rolled_back_by_ecs=moved_away,
        )
    if ours.rollout_state == "FAILED":
        reason = ours.reason or "rollout failed"
        return RolloutFailed(
            reason=f"deployment {deployment_id} failed: {reason}", rolled_back_by_ecs=moved_away
        )
    if moved_away:
        return RolloutFailed(
            reason=f"service was moved to {state.task_definition} during the rollout",
            rolled_back_by_ecs=True,
        )
    if ours.status != "PRIMARY":
        return RolloutFailed(
            reason=f"deployment {deployment_id} was superseded ({ours.status})",
            rolled_back_by_ecs=False,
        )
    if ours.rollout_state == "COMPLETED":
        return RolloutSucceeded()
    if ours.rollout_state is None:
        others = [d for d in state.deployments if d.id != deployment_id]
        if not others and ours.running_count == ours.desired_count:
            return RolloutSucceeded()
    return RolloutPending()


IN_FLIGHT = frozenset(
    {"PENDING", "IN_PROGRESS", "STOP_REQUESTED", "ROLLBACK_REQUESTED", "ROLLBACK_IN_PROGRESS"}
)


def judge_service_deployment(record: ServiceDeployment, *, service_moved_away: bool) -> Verdict:
    """The verdict of one service deployment record; `service_moved_away` when the service
    no longer points at the task definition the deployment was started for."""
    if record.status == "SUCCESSFUL":
        return RolloutSucceeded()
    if record.status in IN_FLIGHT:
        return RolloutPending()
    why = _why(record)
    if record.status == "ROLLBACK_SUCCESSFUL":
        return RolloutFailed(
            reason=f"ECS rolled the deployment back: {why}", rolled_back_by_ecs=True
        )
    if record.status == "ROLLBACK_FAILED":
        return RolloutFailed(
            reason=f"ECS could not roll the deployment back: {why}",
            rolled_back_by_ecs=False,
            rollback_failed=True,
        )
    if record.status == "STOPPED":
        return RolloutFailed(
            reason=f"the deployment was stopped: {why}", rolled_back_by_ecs=service_moved_away
        )
    return RolloutFailed(
        reason=f"the deployment ended {record.status}: {why}",
        rolled_back_by_ecs=service_moved_away,
    )


def _why(record: ServiceDeployment) -> str:
    parts = []
    if record.alarms_triggered:
        parts.append(f"alarms {', '.join(record.alarms_triggered)} went off")
    if record.failed_tasks:
        parts.append(f"{record.failed_tasks} tasks failed (circuit breaker)")
    for text in (record.rollback_reason, record.status_reason):
        if text and text not in parts:
            parts.append(text)
    return "; ".join(parts) or record.status
