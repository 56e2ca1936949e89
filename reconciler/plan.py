"""Decide what one pass does: a purely computational function with no side effects.

The loop gathers an Observation (git, ECS, the registry, the hold kept on disk) and this
module answers with one Action. Keeping it pure lets every rule of SPEC section 3 be a
table row in tests/test_plan.py.
"""

from __future__ import annotations

from reconciler.model import (
    Action,
    AwaitRollout,
    Deploy,
    Held,
    InSync,
    Observation,
    Observe,
    RollBack,
)

MAX_BUILD_ATTEMPTS = 3


def plan(obs: Observation) -> Action:
    if obs.suspended:
        return Observe()

    service = obs.live.service
    runs_desired = obs.live.runs(obs.desired.image)
    primary = service.primary

    if (
        runs_desired
        and not service.in_flight
        and primary is not None
        and primary.task_definition == service.task_definition
    ):
        return InSync()

    # A failed revision stays failed (even if its deployment is still listed) until a new
    # revision, a config change or an explicit sync clears the hold.
    hold = obs.hold
    if (
        hold is not None
        and hold.revision == obs.desired.revision
        and hold.config_fingerprint == obs.config_fingerprint
    ):
        if hold.rollback_to and obs.live.task_definition != hold.rollback_to:
            return RollBack(task_definition=hold.rollback_to)
        return Held(reason=f"revision {hold.revision[:12]} failed: {hold.reason}")

    if runs_desired and service.in_flight and primary is not None:
        # Found after a restart, or started by someone else: wait for it, never start another.
        return AwaitRollout(
            deployment_id=primary.id,
            task_definition=primary.task_definition,
            previous_task_definition=service.previous_task_definition,
        )

    if obs.build_failures >= MAX_BUILD_ATTEMPTS and not obs.image_in_registry:
        return Held(
            reason=f"build of {obs.desired.revision[:12]} failed {obs.build_failures} times"
        )

    if runs_desired:
        # The task definition already names the image but the service is not settled on it
        # (a PRIMARY pointing elsewhere): point the service at it again.
        return Deploy(image=obs.desired.image, build=False)

    return Deploy(image=obs.desired.image, build=not obs.image_in_registry)
