"""Is the rollout done? A pure verdict on one DescribeServices answer.

Success is narrow on purpose: the deployment UpdateService started (by its id) is PRIMARY and
COMPLETED, and the service still points at the new task definition. botocore's
services-stable waiter also says "stable" after a circuit-breaker rollback; it is not used.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.model import ServiceState


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
