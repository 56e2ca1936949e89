"""Decide what one pass does: a purely computational function with no side effects.

A pass gathers an Observation (git, ECS, the registry, the app's remembered state) and this
module answers with one Action. Keeping it pure lets every reconcile rule be a table row in
tests/unit/test_plan.py. The rules, in the order they apply:

1. Suspended: report only.
   A service another deployment controller drives (CODE_DEPLOY, EXTERNAL): refused, no write.
2. Damaged state: nothing is known about holds, so nothing is deployed until `sync`.
3. In sync (the desired image live, nothing rolling out, and with `definitions` live equal
   to the files): nothing to do. Live differing from a definition that was live before is
   drift: shown and left (drift = "alert"), or deployed again (drift = "heal"); differing
   from a definition never live (the files changed) deploys it, with no build when the
   image is live or in the registry.
4. A hold on the desired revision (same config): pay a rollback still owed, else stay held.
5. A deploy of the desired revision that was started and is neither live nor rolling out:
   it failed while unwatched; hold it, never start it again.
6. The desired image rolling out: await that rollout, never start another.
7. State that cannot be written: no new deploy (it could not be held if it failed).
8. Builds failed MAX_BUILD_ATTEMPTS times: held.
9. Otherwise deploy, building first when the registry lacks the image.
"""

from __future__ import annotations

from reconciler.decisions.model import (
    Action,
    AwaitRollout,
    Deploy,
    FailedUnwatched,
    Held,
    InSync,
    Observation,
    Refused,
    ReportOnly,
    RollBack,
)

MAX_BUILD_ATTEMPTS = 3


def plan(obs: Observation) -> Action:
    if obs.suspended:
        return ReportOnly()
    controller = obs.live.service.rollout.controller
    if controller != "ECS":
        return Refused(
            reason=(
                f"service {obs.live.service.service} uses the {controller} deployment "
                "controller; only ECS-controlled services can be deployed"
            )
        )
    if obs.state_damaged:
        return Held(reason=obs.state_damaged)

    service = obs.live.service
    runs_desired = obs.live.runs(obs.desired.image)
    primary = service.primary

    settled = _in_sync(obs)
    if settled is not None:
        return settled

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

    picked_up = _attempt_of_desired(obs)
    if picked_up is not None:
        return picked_up

    if runs_desired and service.in_flight and primary is not None:
        # Found after a restart, or started by someone else: wait for it, never start another.
        return AwaitRollout(
            deployment_id=primary.id,
            task_definition=primary.task_definition,
            previous_task_definition=service.previous_task_definition,
        )

    if obs.state_unwritable:
        return Held(reason=obs.state_unwritable, transient=True)

    if obs.build_failures >= MAX_BUILD_ATTEMPTS and not obs.image_in_registry:
        return Held(
            reason=f"build of {obs.desired.revision[:12]} failed {obs.build_failures} times"
        )

    if runs_desired:
        # The task definition already names the image but the service is not settled on it
        # (a PRIMARY pointing elsewhere), or the definition changed or drifted: deploy it.
        heal = obs.definition is not None and obs.definition.drifted
        return Deploy(image=obs.desired.image, build=False, heal=heal)

    return Deploy(image=obs.desired.image, build=not obs.image_in_registry)


def _in_sync(obs: Observation) -> InSync | None:
    """InSync when the desired image is live and settled, and (with `definitions`) live is
    the definition or has drifted from it with drift = "alert"; else None."""
    service = obs.live.service
    primary = service.primary
    if not (
        obs.live.runs(obs.desired.image)
        and not service.in_flight
        and primary is not None
        and primary.task_definition == service.task_definition
    ):
        return None
    definition = obs.definition
    if definition is None or not definition.changes:
        return InSync()
    if definition.drifted and not definition.heal:
        return InSync(drift=definition.fields)
    return None


def _attempt_of_desired(obs: Observation) -> Action | None:
    """What a deploy of the desired revision that the daemon started (its attempt) means now:
    a rollout to await, a failure nobody watched, or nothing (not sent, or stale)."""
    service = obs.live.service
    runs_desired = obs.live.runs(obs.desired.image)
    primary = service.primary
    attempt = obs.attempt
    if (
        attempt is not None
        and attempt.revision == obs.desired.revision
        and attempt.config_fingerprint == obs.config_fingerprint
    ):
        if runs_desired and service.in_flight and primary is not None:
            return AwaitRollout(
                deployment_id=primary.id,
                task_definition=primary.task_definition,
                previous_task_definition=attempt.previous,
                since=attempt.at,
                service_deployment=attempt.service_deployment,
                since_host=attempt.host,
            )
        # UpdateService was sent if ECS answered it, or if ECS lists a deployment of the
        # task definition it named; else the daemon stopped before sending it.
        sent = attempt.deployment_id is not None or any(
            d.task_definition == attempt.task_definition for d in service.deployments
        )
        if sent and not runs_desired:
            return FailedUnwatched(
                reason=(
                    f"rolled back while not watched: the deploy of {attempt.revision[:12]} "
                    f"started at {attempt.at.isoformat(timespec='seconds')} is not live, and "
                    f"the service runs {service.task_definition}"
                )
            )

    return None
