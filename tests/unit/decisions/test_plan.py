"""The planner, one row per reconcile rule. Pure: no I/O, no event loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from reconciler.decisions.definition_diff import Change
from reconciler.decisions.model import (
    Attempt,
    AwaitRollout,
    DefinitionState,
    Deploy,
    Deployment,
    Desired,
    FailedUnwatched,
    Held,
    Hold,
    ImageRef,
    InSync,
    Live,
    Observation,
    ReportOnly,
    RollBack,
    ServiceState,
)
from reconciler.decisions.plan import plan

OLD, NEW = "a" * 40, "b" * 40
TD_OLD, TD_NEW = (
    "arn:aws:ecs:us-east-1:1:task-definition/web:1",
    "arn:aws:ecs:us-east-1:1:task-definition/web:2",
)
FP = "fingerprint"


def image(rev: str) -> ImageRef:
    return ImageRef("127.0.0.1:5000", "web", rev)


def settled(td: str) -> tuple[Deployment, ...]:
    return (Deployment("ecs-svc/1", "PRIMARY", td, "COMPLETED", 2, 2),)


def rolling(td_new: str, td_old: str) -> tuple[Deployment, ...]:
    return (
        Deployment("ecs-svc/2", "PRIMARY", td_new, "IN_PROGRESS", 0, 2),
        Deployment("ecs-svc/1", "ACTIVE", td_old, "COMPLETED", 2, 2),
    )


@dataclass
class Case:
    desired: str
    live: str
    td: str = TD_OLD
    deployments: tuple[Deployment, ...] = field(default_factory=lambda: settled(TD_OLD))
    in_registry: bool | None = None
    hold: Hold | None = None
    build_failures: int = 0
    suspended: bool = False
    attempt: Attempt | None = None
    damaged: str | None = None
    unwritable: str | None = None
    definition: DefinitionState | None = None


def observe(case: Case) -> Observation:
    service = ServiceState("prod", "web", case.td, case.deployments)
    live = Live(service=service, images={"app": str(image(case.live))})
    return Observation(
        desired=Desired(case.desired, image(case.desired)),
        live=live,
        image_in_registry=case.in_registry,
        hold=case.hold,
        build_failures=case.build_failures,
        suspended=case.suspended,
        config_fingerprint=FP,
        attempt=case.attempt,
        state_damaged=case.damaged,
        state_unwritable=case.unwritable,
        definition=case.definition,
    )


AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def attempt(*, deployment_id: str | None = "ecs-svc/2", fingerprint: str = FP) -> Attempt:
    return Attempt(
        NEW, TD_NEW, TD_OLD, fingerprint, at=AT, deployment_id=deployment_id, host="build-1"
    )


MEMORY = Change("containerDefinitions[app].memory", 1024, 512)


def definition(*changes: Change, deployed: bool = False, heal: bool = False) -> DefinitionState:
    return DefinitionState("def-fp", changes, deployed=deployed, heal=heal)


CASES = {
    "definitions: live equal to the files is in sync": (
        Case(OLD, OLD, definition=definition()),
        InSync(),
    ),
    "definitions: a change of the files deploys without a build": (
        Case(OLD, OLD, definition=definition(MEMORY)),
        Deploy(image(OLD), build=False),
    ),
    "definitions: drift from a definition that was live is shown, not written": (
        Case(OLD, OLD, definition=definition(MEMORY, deployed=True)),
        InSync(drift=("containerDefinitions[app].memory",)),
    ),
    "definitions: drift with heal deploys the definition again": (
        Case(OLD, OLD, definition=definition(MEMORY, deployed=True, heal=True)),
        Deploy(image(OLD), build=False, heal=True),
    ),
    "definitions: an image and a definition change in one commit: one build and deploy": (
        Case(NEW, OLD, in_registry=False, definition=definition(MEMORY)),
        Deploy(image(NEW), build=True),
    ),
    "definitions: a held revision stays held though its definition differs": (
        Case(OLD, OLD, hold=Hold(OLD, "circuit breaker", FP), definition=definition(MEMORY)),
        Held("revision aaaaaaaaaaaa failed: circuit breaker"),
    ),
    "definitions: a rollout in flight is awaited, never a second started": (
        Case(
            NEW, NEW, td=TD_NEW, deployments=rolling(TD_NEW, TD_OLD), definition=definition(MEMORY)
        ),
        AwaitRollout("ecs-svc/2", TD_NEW, TD_OLD),
    ),
    "in sync: nothing to do": (Case(OLD, OLD), InSync()),
    "suspended: observe only, even when out of sync": (
        Case(NEW, OLD, in_registry=False, suspended=True),
        ReportOnly(),
    ),
    "tag already in the registry: deploy without building": (
        Case(NEW, OLD, in_registry=True),
        Deploy(image(NEW), build=False),
    ),
    "new revision not in the registry: build, push, deploy": (
        Case(NEW, OLD, in_registry=False),
        Deploy(image(NEW), build=True),
    ),
    "pin to an older revision whose image exists: a rollback by config edit": (
        Case(OLD, NEW, td=TD_NEW, deployments=settled(TD_NEW), in_registry=True),
        Deploy(image(OLD), build=False),
    ),
    "rollout of the desired image in flight: await it, do not start another": (
        Case(NEW, NEW, td=TD_NEW, deployments=rolling(TD_NEW, TD_OLD)),
        AwaitRollout("ecs-svc/2", TD_NEW, TD_OLD),
    ),
    "rollout of an older image in flight while a newer is desired: deploy the newer": (
        Case(
            NEW,
            OLD,
            deployments=rolling(TD_OLD, "arn:aws:ecs:us-east-1:1:task-definition/web:0"),
            in_registry=True,
        ),
        Deploy(image(NEW), build=False),
    ),
    "failed revision held: no redeploy": (
        Case(NEW, OLD, in_registry=True, hold=Hold(NEW, "circuit breaker", FP)),
        Held("revision bbbbbbbbbbbb failed: circuit breaker"),
    ),
    "hold of another revision does not block a new one": (
        Case(NEW, OLD, in_registry=True, hold=Hold(OLD, "circuit breaker", FP)),
        Deploy(image(NEW), build=False),
    ),
    "a config change clears the hold": (
        Case(NEW, OLD, in_registry=True, hold=Hold(NEW, "circuit breaker", "older-config")),
        Deploy(image(NEW), build=False),
    ),
    "hold with a rollback still owed: roll back": (
        Case(
            NEW,
            NEW,
            td=TD_NEW,
            deployments=rolling(TD_NEW, TD_OLD),
            hold=Hold(NEW, "timed out", FP, rollback_to=TD_OLD),
        ),
        RollBack(TD_OLD),
    ),
    "hold whose rollback is done: held": (
        Case(NEW, OLD, hold=Hold(NEW, "timed out", FP, rollback_to=TD_OLD), in_registry=True),
        Held("revision bbbbbbbbbbbb failed: timed out"),
    ),
    "build failed three times: held": (
        Case(NEW, OLD, in_registry=False, build_failures=3),
        Held("build of bbbbbbbbbbbb failed 3 times"),
    ),
    "build failed twice: try again": (
        Case(NEW, OLD, in_registry=False, build_failures=2),
        Deploy(image(NEW), build=True),
    ),
    "a failed deployment ECS keeps listing is history, not work in flight": (
        Case(
            OLD,
            OLD,
            deployments=(
                Deployment("ecs-svc/3", "PRIMARY", TD_OLD, "COMPLETED", 2, 2),
                Deployment("ecs-svc/2", "ACTIVE", TD_NEW, "FAILED", 0, 2),
            ),
        ),
        InSync(),
    ),
    "damaged state: nothing deployed, whatever git says": (
        Case(NEW, OLD, in_registry=True, damaged="state file damaged"),
        Held("state file damaged"),
    ),
    "damaged state while in sync: still held, so the operator sees it": (
        Case(OLD, OLD, damaged="state file damaged"),
        Held("state file damaged"),
    ),
    "state that cannot be written: no new deploy": (
        Case(NEW, OLD, in_registry=True, unwritable="disk full"),
        Held("disk full", transient=True),
    ),
    "state that cannot be written: an owed rollback still goes out": (
        Case(
            NEW,
            NEW,
            td=TD_NEW,
            deployments=rolling(TD_NEW, TD_OLD),
            hold=Hold(NEW, "timed out", FP, rollback_to=TD_OLD),
            unwritable="disk full",
        ),
        RollBack(TD_OLD),
    ),
    "state that cannot be written: in sync stays in sync": (
        Case(OLD, OLD, unwritable="disk full"),
        InSync(),
    ),
    "attempt of the desired revision still rolling out: await it from its start": (
        Case(NEW, NEW, td=TD_NEW, deployments=rolling(TD_NEW, TD_OLD), attempt=attempt()),
        AwaitRollout("ecs-svc/2", TD_NEW, TD_OLD, since=AT, since_host="build-1"),
    ),
    "attempt never sent (stopped before UpdateService): deploy": (
        Case(NEW, OLD, in_registry=True, attempt=attempt(deployment_id=None)),
        Deploy(image(NEW), build=False),
    ),
    "attempt under an older config: a config change allows a new deploy": (
        Case(NEW, OLD, in_registry=True, attempt=attempt(fingerprint="older-config")),
        Deploy(image(NEW), build=False),
    ),
    "attempt of another revision does not block the desired one": (
        Case(OLD, NEW, td=TD_NEW, deployments=settled(TD_NEW), in_registry=True, attempt=attempt()),
        Deploy(image(OLD), build=False),
    ),
    "no rolloutState (older ECS): in sync only when alone and fully running": (
        Case(OLD, OLD, deployments=(Deployment("ecs-svc/1", "PRIMARY", TD_OLD, None, 1, 2),)),
        AwaitRollout("ecs-svc/1", TD_OLD, None),
    ),
}


@pytest.mark.parametrize(("case", "expected"), list(CASES.values()), ids=list(CASES))
def test_plan(case: Case, expected: object) -> None:
    assert plan(observe(case)) == expected


@pytest.mark.parametrize(
    "case",
    [
        Case(NEW, OLD, in_registry=True, attempt=attempt()),
        # No deployment id recorded (stopped right after UpdateService), but ECS lists a
        # deployment of the task definition it named: it was sent.
        Case(
            NEW,
            OLD,
            in_registry=True,
            deployments=(
                Deployment("ecs-svc/3", "PRIMARY", TD_OLD, "COMPLETED", 2, 2),
                Deployment("ecs-svc/2", "ACTIVE", TD_NEW, "FAILED", 0, 2),
            ),
            attempt=attempt(deployment_id=None),
        ),
    ],
    ids=["deployment id recorded", "deployment listed by ECS"],
)
def test_an_attempt_that_is_not_live_failed_unwatched_and_is_never_redeployed(case: Case) -> None:
    """Rolled back while nobody watched: held with the reason, not deployed again."""
    action = plan(observe(case))
    assert isinstance(action, FailedUnwatched)
    assert action.reason.startswith("rolled back while not watched")
    assert TD_OLD in action.reason
