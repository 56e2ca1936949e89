"""Scheduled tasks that follow a release on the real stack (SPEC 20): an EventBridge rule
and a Scheduler schedule running the worker's family move to the release's task definition
after the web and the worker, every other field of their target kept; a release that fails
leaves them, or puts them back, on the old one.

Real git, dockerd, registry and the sandbox AWS (moto's EventBridge and Scheduler).
"""

from __future__ import annotations

import json
from typing import Any

import boto3

from reconciler.sandbox.scenario import Scenario
from tests.e2e.test_release import add_worker, parts, updates_since
from tests.support.cli import reconciler
from tests.support.world import World

ROLE = "arn:aws:iam::123456789012:role/events-run-task"


def add_schedules(world: World, worker: str) -> tuple[str, str]:
    """A rule with two targets (the worker's task, and one of another family that is not
    the app's) and a schedule of the worker's task; both listed in the app's `schedules`."""
    td = world.ecs().describe_services(cluster=world.cluster, services=[worker])["services"][0][
        "taskDefinition"
    ]
    cluster_arn = f"arn:aws:ecs:{world.aws.region}:123456789012:cluster/{world.cluster}"
    rule = f"{world.name}-nightly"
    events = _client(world, "events")
    events.put_rule(Name=rule, ScheduleExpression="cron(0 3 * * ? *)")
    events.put_targets(
        Rule=rule,
        Targets=[
            {
                "Id": "report",
                "Arn": cluster_arn,
                "RoleArn": ROLE,
                "Input": '{"containerOverrides":[{"name":"app","command":["report"]}]}',
                "EcsParameters": {"TaskDefinitionArn": td, "TaskCount": 2},
            },
            {
                "Id": "other",
                "Arn": cluster_arn,
                "RoleArn": ROLE,
                "EcsParameters": {"TaskDefinitionArn": "someone-else:7", "TaskCount": 1},
            },
        ],
    )
    schedule = f"{world.name}-cleanup"
    _client(world, "scheduler").create_schedule(
        Name=schedule,
        GroupName="default",
        ScheduleExpression="rate(1 day)",
        Description=f"cleans up for {world.name}",
        FlexibleTimeWindow={"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 15},
        Target={
            "Arn": cluster_arn,
            "RoleArn": ROLE,
            "Input": "{}",
            "EcsParameters": {"TaskDefinitionArn": td, "TaskCount": 1},
        },
    )
    world.app_overrides["schedules"] = [f"rule/{rule}", f"schedule/default/{schedule}"]
    return rule, schedule


def _client(world: World, service: str) -> Any:
    return boto3.client(  # type: ignore[call-overload]
        service, region_name=world.aws.region, endpoint_url=world.aws.endpoint_url
    )


def rule_targets(world: World, rule: str) -> dict[str, dict[str, Any]]:
    targets = _client(world, "events").list_targets_by_rule(Rule=rule)["Targets"]
    return {t["Id"]: t for t in targets}


def schedule_of(world: World, name: str) -> dict[str, Any]:
    answer = dict(_client(world, "scheduler").get_schedule(GroupName="default", Name=name))
    answer.pop("ResponseMetadata", None)
    answer.pop("LastModificationDate", None)
    return answer


def worker_td(world: World, worker: str) -> str:
    services = world.ecs().describe_services(cluster=world.cluster, services=[worker])
    return str(services["services"][0]["taskDefinition"])


def order_of_writes(world: World, since: int) -> list[str]:
    """The service or schedule each write of this World went to after the first `since`
    logged requests, in the order sent."""
    named = []
    for action, params in world.aws.calls.sequence()[since:]:
        if action == "UpdateService" and params.get("cluster") == world.cluster:
            named.append(str(params["service"]))
        elif action == "PutTargets" and str(params.get("Rule", "")).startswith(world.name):
            named.append("rule")
        elif action == "UpdateSchedule" and world.name in str(params.get("Description", "")):
            named.append("schedule")
    return named


async def test_one_push_moves_web_worker_rule_and_schedule_and_a_failed_release_leaves_them(
    world: World,
) -> None:
    """R1 reaches the web, then the worker, then the rule's worker target and the schedule,
    in that order, every other field of each target as it was (the rule's other-family
    target untouched). R2's worker rollout fails: the web is put back and the rule and the
    schedule still name R1's worker task definition."""
    worker = add_worker(world)
    rule, schedule = add_schedules(world, worker)
    before_rule = rule_targets(world, rule)
    before_schedule = schedule_of(world, schedule)
    first = world.first_commit
    # `plan` says what the release will move: both services, then both schedules, each
    # with what it runs now.
    planned = await reconciler("plan", "--config", str(world.write_config()), "--json")
    assert planned.code == 0, planned
    (row,) = json.loads(planned.stdout)["apps"]
    assert row["action"] == (
        f"build, push, deploy; then services: {worker}; "
        f"then schedules: rule/{rule}, schedule/default/{schedule}"
    )
    bootstrap = f"{world.registry}/{world.name}:bootstrap"
    assert row["services"] == {world.name: bootstrap, worker: bootstrap}
    worker_now = worker_td(world, worker)
    assert row["schedules"] == {worker_now: f"named by rule/{rule}"}
    since = len(world.aws.calls.sequence())
    async with world.daemon() as daemon:
        status = await daemon.wait_for(
            lambda s: (
                s["phase"] == "InSync" and parts(s).get(f"schedule/default/{schedule}") == "InSync"
            ),
            what="web, worker, rule and schedule on the first revision",
        )
        r1 = worker_td(world, worker)
        assert order_of_writes(world, since) == [world.name, worker, "rule", "schedule"]
        after_rule = rule_targets(world, rule)
        assert after_rule["report"]["EcsParameters"]["TaskDefinitionArn"] == r1
        before_rule["report"]["EcsParameters"]["TaskDefinitionArn"] = r1
        assert after_rule == before_rule  # the other target and every other field kept
        after_schedule = schedule_of(world, schedule)
        assert after_schedule["Target"]["EcsParameters"]["TaskDefinitionArn"] == r1
        before_schedule["Target"]["EcsParameters"]["TaskDefinitionArn"] = r1
        assert after_schedule == before_schedule
        assert parts(status)[f"rule/{rule}"] == "InSync"
        assert [(h["revision"], h["result"]) for h in status["history"]] == [(first, "deployed")]

        seen = len(updates_since(world, 0))
        world.aws.rollouts.set_scenario(world.cluster, worker, Scenario("fail", after=0.3))
        second = world.repo.commit({"app.txt": "version 2\n"}, "second")
        await daemon.github_push()
        status = await daemon.wait_for(
            lambda s: (
                s["phase"] == "Failed"
                and bool(s["history"])
                and s["history"][0]["revision"] == second
            ),
            what="the release of the second revision failed",
        )
        assert [s for s, _ in updates_since(world, seen)] == [world.name, worker, world.name]
    assert rule_targets(world, rule)["report"]["EcsParameters"]["TaskDefinitionArn"] == r1
    assert schedule_of(world, schedule)["Target"]["EcsParameters"]["TaskDefinitionArn"] == r1
    assert order_of_writes(world, since).count("rule") == 1
    assert order_of_writes(world, since).count("schedule") == 1


async def test_a_schedule_that_cannot_be_updated_fails_the_release_and_takes_it_all_back(
    world: World,
) -> None:
    """UpdateSchedule refused (AccessDenied) after the rule moved: the release is Failed
    (not retried, not called deployed), the rule and the web are put back on what they ran
    before, and the schedule still names the old task definition."""
    world.aws.faults.inject(
        "UpdateSchedule", code="AccessDeniedException", message="not authorized to perform"
    )
    rule, schedule = add_schedules(world, world.name)
    since = len(world.aws.calls.sequence())
    before = world.ecs().describe_services(cluster=world.cluster, services=[world.name])[
        "services"
    ][0]["taskDefinition"]
    async with world.daemon() as daemon:
        status = await daemon.wait_for(
            lambda s: s["phase"] == "Failed" and bool(s["history"]),
            what="the release failed on the schedule",
        )
        live = world.ecs().describe_services(cluster=world.cluster, services=[world.name])
        assert live["services"][0]["taskDefinition"] == before
    entry = status["history"][0]
    assert entry["result"] == "rolled_back"
    assert "AccessDenied" in entry["error"]
    assert f"schedule/default/{schedule}" in entry["error"]
    assert rule_targets(world, rule)["report"]["EcsParameters"]["TaskDefinitionArn"] == before
    assert schedule_of(world, schedule)["Target"]["EcsParameters"]["TaskDefinitionArn"] == before
    assert order_of_writes(world, since).count("rule") == 2  # moved, then put back
    assert order_of_writes(world, since).count("schedule") == 1  # the refused one, not retried
