"""Definitions as code, the whole daemon on the real stack (git, dockerd, the registry, the
sandbox AWS): a change of the files deploys once, a console edit is shown as drift and
nothing written with drift = "alert", and reverted with "heal"; desiredCount is never sent."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3

from tests.support.cli import reconciler
from tests.support.metrics import passes_of
from tests.support.world import DOCKERFILE, RunningDaemon, World


def task_file(world: World, *, memory: int = 256, level: str = "info") -> str:
    return json.dumps(
        {
            "family": world.name,
            "containerDefinitions": [
                {
                    "name": "app",
                    "image": "{{ image }}",
                    "memory": memory,
                    "essential": True,
                    "environment": [
                        {"name": "LOG_LEVEL", "value": level},
                        {"name": "REVISION", "value": "{{ revision }}"},
                    ],
                }
            ],
        },
        indent=1,
    )


def defined(world: World, **overrides: Any) -> World:
    world.app_overrides.update(definitions="deploy/ecs", **overrides)
    world.repo.commit(
        {
            "deploy/ecs/task-definition.json": task_file(world),
            "deploy/ecs/service.json": '{"desiredCount": 1, "healthCheckGracePeriodSeconds": 15}',
        },
        "definitions",
    )
    return world


def app_container(world: World) -> dict[str, Any]:
    definition, _ = world.task_definition()
    return dict(next(c for c in definition["containerDefinitions"] if c["name"] == "app"))


async def another_pass(daemon: RunningDaemon) -> None:
    """Nudge the app and wait until that pass has finished."""
    before = passes_of(daemon.daemon.metrics, daemon.world.name)
    daemon.loop().nudge()
    await daemon.wait_for(
        lambda _: passes_of(daemon.daemon.metrics, daemon.world.name) > before,
        what="another pass",
    )


def console_edit(world: World, **changes: Any) -> str:
    """What an edit in the console does: a new revision of the live task definition, and
    the service pointed at it."""
    definition, _ = world.task_definition()
    edited: dict[str, Any] = {
        k: v
        for k, v in definition.items()
        if k in {"family", "containerDefinitions", "networkMode", "cpu", "memory", "volumes"}
    }
    for container in edited["containerDefinitions"]:
        if container["name"] == "app":
            container.update(changes)
    registered = world.ecs().register_task_definition(**edited)
    arn = registered["taskDefinition"]["taskDefinitionArn"]
    world.ecs().update_service(cluster=world.cluster, service=world.name, taskDefinition=arn)
    return str(arn)


async def test_a_definition_change_deploys_once_and_desired_count_is_never_sent(
    world: World,
) -> None:
    defined(world)
    async with world.daemon() as daemon:
        head = world.repo.head()
        await daemon.wait_phase("InSync", revision=head)
        assert world.updates() == 1
        assert app_container(world)["memory"] == 256
        assert world.service()["healthCheckGracePeriodSeconds"] == 15

        world.ecs().update_service(cluster=world.cluster, service=world.name, desiredCount=3)
        change = world.repo.commit(
            {
                "deploy/ecs/task-definition.json": task_file(world, memory=512, level="debug"),
                "Dockerfile": DOCKERFILE + "LABEL also=changed\n",
            },
            "more memory, debug logs and a new image in one commit",
        )
        await daemon.github_push()
        await daemon.wait_phase("InSync", revision=change)
        await another_pass(daemon)

    assert world.updates() == 2  # one deploy for the image and the definition together
    container = app_container(world)
    assert container["memory"] == 512
    assert {"name": "LOG_LEVEL", "value": "debug"} in container["environment"]
    assert {"name": "REVISION", "value": change} in container["environment"]
    assert world.service()["desiredCount"] == 3  # autoscaling's, never reset


async def test_a_console_edit_is_drift_shown_and_left_with_alert_and_reverted_with_heal(
    world: World,
) -> None:
    defined(world)
    async with world.daemon() as daemon:
        head = world.repo.head()
        await daemon.wait_phase("InSync", revision=head)
        updates = world.updates()
        edited = console_edit(world, memory=1024)
        await another_pass(daemon)
        status = await daemon.wait_for(lambda s: "drift" in s, what="drift shown")
        assert status["phase"] == "InSync"
        assert status["drift"]["fields"] == ["containerDefinitions[app].memory"]
        assert status["drift"]["changes"] == ["containerDefinitions[app].memory: 1024 -> 256"]
        assert world.service()["taskDefinition"] == edited  # nothing written
        assert world.updates() == updates + 1  # the console's own update only

        world.app_overrides["drift"] = "heal"
        daemon.config_path.write_text(world.config_text())
        await daemon.wait_for(lambda s: "drift" not in s, what="drift healed", timeout=120)
    assert app_container(world)["memory"] == 256
    assert world.service()["taskDefinition"] != edited


async def test_diff_is_silent_in_sync_and_names_a_console_edit_and_render_shows_the_files(
    world: World,
) -> None:
    """`reconciler diff` on an unchanged service prints nothing and exits 0 (no noise from
    what ECS fills in); after a console edit it prints the path with both values and exits 1.
    `render` prints what would be deployed; `render --from-live` writes starting files that,
    deployed as they are, would change nothing."""
    defined(world)
    async with world.daemon() as daemon:
        head = world.repo.head()
        await daemon.wait_phase("InSync", revision=head)
        config = str(daemon.config_path)

        same = await reconciler("diff", world.name, "--config", config)
        assert (same.code, same.stdout, same.stderr) == (0, "", "")

        rendered = await reconciler("render", world.name, "--config", config)
        assert rendered.code == 0, rendered.stderr
        files = json.loads(rendered.stdout)
        assert set(files) == {"deploy/ecs/task-definition.json", "deploy/ecs/service.json"}
        app = files["deploy/ecs/task-definition.json"]["containerDefinitions"][0]
        assert app["image"] == world.image(head)
        assert files["deploy/ecs/service.json"] == {"healthCheckGracePeriodSeconds": 15}

        out = world.root / "from-live"
        written = await reconciler(
            "render", "--from-live", world.name, "--config", config, "--out", str(out)
        )
        assert written.code == 0, written.stderr
        start = json.loads((out / "task-definition.json").read_text())
        assert start["containerDefinitions"][0]["image"] == "{{ image }}"
        assert "taskDefinitionArn" not in start and "revision" not in start
        again = await reconciler(
            "render", "--from-live", world.name, "--config", config, "--out", str(out)
        )
        assert again.code == 1 and "exists; not overwritten" in again.stderr

        console_edit(world, memory=2048)
        edited = await reconciler("diff", world.name, "--config", config)
    assert edited.code == 1
    assert edited.stdout.splitlines() == ["containerDefinitions[app].memory: 2048 -> 256"]


class Named:
    """What a definition of `world` may name, made on the sandbox: two roles ECS tasks may
    assume and one only EC2 may, a secret and one deleted, a log group, a target group."""

    def __init__(self, world: World) -> None:
        self.world = world
        name = world.name
        self.task_role = self.role(f"{name}-task", "ecs-tasks.amazonaws.com")
        self.execution_role = self.role(f"{name}-execution", "ecs-tasks.amazonaws.com")
        self.ec2_role = self.role(f"{name}-ec2", "ec2.amazonaws.com")
        secrets = self.client("secretsmanager")
        self.secret = str(secrets.create_secret(Name=f"{name}/db", SecretString="pw")["ARN"])
        self.deleted = str(secrets.create_secret(Name=f"{name}/old", SecretString="pw")["ARN"])
        secrets.delete_secret(SecretId=self.deleted, ForceDeleteWithoutRecovery=True)
        self.log_group = f"/ecs/{name}"
        self.client("logs").create_log_group(logGroupName=self.log_group)
        vpc = self.client("ec2").describe_vpcs()["Vpcs"][0]["VpcId"]
        group = self.client("elbv2").create_target_group(
            Name=name, Protocol="HTTP", Port=8080, VpcId=vpc, TargetType="ip"
        )
        self.target_group = str(group["TargetGroups"][0]["TargetGroupArn"])

    def client(self, service: str) -> Any:
        world = self.world
        return boto3.client(  # type: ignore[call-overload]
            service, region_name=world.aws.region, endpoint_url=world.aws.endpoint_url
        )

    def role(self, name: str, service: str) -> str:
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
            ],
        }
        answer = self.client("iam").create_role(
            RoleName=name, AssumeRolePolicyDocument=json.dumps(trust)
        )
        return str(answer["Role"]["Arn"])

    def files(self, **changes: Any) -> dict[str, str]:
        """task-definition.json and service.json naming all of the above; `changes` replace
        the task's fields, the container's (`container`) and the load balancer's (`balancer`)."""
        container = {
            "name": "app",
            "image": "{{ image }}",
            "memory": 256,
            "portMappings": [{"containerPort": 8080}],
            "secrets": [{"name": "DB_PASSWORD", "valueFrom": self.secret}],
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {"awslogs-group": self.log_group, "awslogs-stream-prefix": "app"},
            },
            **changes.pop("container", {}),
        }
        balancer = {
            "targetGroupArn": self.target_group,
            "containerName": "app",
            "containerPort": 8080,
            **changes.pop("balancer", {}),
        }
        task = {
            "family": self.world.name,
            "taskRoleArn": self.task_role,
            "executionRoleArn": self.execution_role,
            "containerDefinitions": [container],
            **changes,
        }
        return {
            "deploy/ecs/task-definition.json": json.dumps(task, indent=1),
            "deploy/ecs/service.json": json.dumps({"loadBalancers": [balancer]}),
        }


async def pushed(daemon: RunningDaemon) -> list[str]:
    """The tags of the app's repository in the registry."""
    world = daemon.world
    async with daemon.http.get(f"http://{world.registry}/v2/{world.name}/tags/list") as answer:
        if answer.status == 404:
            return []
        return list((await answer.json()).get("tags") or [])


def showing(revision: str, finding: str) -> Callable[[dict[str, Any]], bool]:
    """A status that wants `revision` and says `finding` in `last_error`."""
    return lambda status: (
        status["desired"]["revision"] == revision and finding in (status.get("last_error") or "")
    )


def registered(world: World) -> int:
    """RegisterTaskDefinition calls for the app's family, whoever made them."""
    calls = world.aws.calls.logged("RegisterTaskDefinition")
    return sum(1 for call in calls if call.get("family") == world.name)


async def test_a_definition_naming_what_does_not_exist_is_held_before_anything_is_written(
    world: World,
) -> None:
    """Each of a missing role, a role ECS tasks may not assume, a missing secret, a missing
    log group and a target group naming another container holds the revision with one line
    naming it in `last_error`: nothing built, pushed or registered, the service untouched.
    `reconciler verify` prints the same lines (exit 1), or `verified` (exit 0) once the
    definition names what exists, and that revision then deploys."""
    named = Named(world)
    world.app_overrides.update(definitions="deploy/ecs")
    gone = f"{named.task_role}-gone"
    steps: list[tuple[dict[str, Any], str]] = [
        ({"taskRoleArn": gone}, f"task role {gone} does not exist"),
        (
            {"executionRoleArn": named.ec2_role},
            f"execution role {named.ec2_role} is not trusted by ecs-tasks.amazonaws.com",
        ),
        (
            {"container": {"secrets": [{"name": "DB_PASSWORD", "valueFrom": named.deleted}]}},
            f"secret {named.deleted} (container app, DB_PASSWORD) does not exist",
        ),
        (
            {"container": {"logConfiguration": {"logDriver": "awslogs",
                                                "options": {"awslogs-group": "/ecs/nowhere"}}}},
            "log group /ecs/nowhere does not exist (set awslogs-create-group or create it)",
        ),
        (
            {"balancer": {"containerName": "api"}},
            f"target group {named.target_group} names container api:8080, which the task"
            " definition does not have",
        ),
    ]  # fmt: skip
    world.repo.commit(named.files(**steps[0][0]), "a task role that does not exist")
    before, updates = registered(world), world.updates()
    async with world.daemon() as daemon:
        config = str(daemon.config_path)
        for number, (changes, finding) in enumerate(steps):
            if number:
                world.repo.commit(named.files(**changes), finding)
                await daemon.github_push()
            head = world.repo.head()
            status = await daemon.wait_for(showing(head, finding), what=finding)
            assert status["last_error"] == f"not deploying {head[:12]}: {finding}"
            assert (registered(world), world.updates()) == (before, updates)
            assert await pushed(daemon) == []
            if number == len(steps) - 1:
                found = await reconciler("verify", world.name, "--config", config)
                assert (found.code, found.stdout, found.stderr) == (1, finding + "\n", "")

        good = world.repo.commit(named.files(), "everything it names exists")
        await daemon.github_push()
        await daemon.wait_phase("InSync", revision=good)
        verified = await reconciler("verify", world.name, "--config", config)
    assert (verified.code, verified.stderr) == (0, "")
    assert verified.stdout.startswith("verified")
    assert registered(world) == before + 1
    container = app_container(world)
    assert container["secrets"] == [{"name": "DB_PASSWORD", "valueFrom": named.secret}]


async def test_render_diff_and_verify_speak_of_every_service_of_a_release(world: World) -> None:
    """web and worker: `render --from-live` writes one folder per service (as the daemon
    reads them), `render` and `diff` cover both (diff lines named by service), `--service`
    narrows to one, and a service the app does not have is one line and exit 2."""
    from tests.e2e.test_release import add_worker

    worker = add_worker(world)
    world.app_overrides.update(definitions="deploy/ecs")
    config = str(world.write_config())
    out = world.root / "from-live"
    written = await reconciler(
        "render", "--from-live", world.name, "--config", config, "--out", str(out)
    )
    assert written.code == 0, written.stderr
    assert {str(p.relative_to(out)) for p in out.rglob("*.json")} == {
        f"{world.name}/service.json",
        f"{world.name}/task-definition.json",
        f"{worker}/service.json",
        f"{worker}/task-definition.json",
    }
    files = {f"deploy/ecs/{p.relative_to(out)}": p.read_text() for p in out.rglob("*.json")}
    worker_task = json.loads(files[f"deploy/ecs/{worker}/task-definition.json"])
    worker_task["containerDefinitions"][0]["memory"] = 300
    files[f"deploy/ecs/{worker}/task-definition.json"] = json.dumps(worker_task)
    world.repo.commit(files, "definitions from live, the worker's memory changed")

    rendered = await reconciler("render", world.name, "--config", config)
    assert rendered.code == 0, rendered.stderr
    assert sorted(json.loads(rendered.stdout)) == sorted(files)
    changed = await reconciler("diff", world.name, "--config", config)
    assert changed.code == 1, changed.stderr
    lines = changed.stdout.splitlines()
    assert f"{worker}: containerDefinitions[app].memory: 256 -> 300" in lines, (lines, files)
    assert any(line.startswith(f"{worker}: containerDefinitions[app].image: ") for line in lines), (
        lines,
        files,
    )
    assert all(line.startswith((f"{world.name}: ", f"{worker}: ")) for line in lines)
    web_only = await reconciler("diff", world.name, "--service", world.name, "--config", config)
    assert "memory" not in web_only.stdout
    assert not any(line.startswith(f"{world.name}: ") for line in web_only.stdout.splitlines())
    unknown = await reconciler("diff", world.name, "--service", "nope", "--config", config)
    assert unknown.code == 2
    assert unknown.stderr.strip().endswith(
        f"app {world.name!r} has no service 'nope' (it has {world.name}, {worker})"
    )


async def test_a_console_edit_of_a_later_service_is_shown_as_its_drift(world: World) -> None:
    """web and worker from their folders: after the release, an edit of the worker's task
    definition in the console is drift named by the worker, and nothing is written."""
    from tests.e2e.test_release import add_worker

    worker = add_worker(world)
    world.app_overrides.update(definitions="deploy/ecs")
    files = {}
    for service in (world.name, worker):
        task = json.loads(task_file(world))
        task["family"] = service
        files[f"deploy/ecs/{service}/task-definition.json"] = json.dumps(task)
    world.repo.commit(files, "definitions of both services")
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.repo.head())
        assert "drift" not in await daemon.status()
        ecs = world.ecs()
        live = ecs.describe_services(cluster=world.cluster, services=[worker])["services"][0]
        definition = ecs.describe_task_definition(taskDefinition=live["taskDefinition"])[
            "taskDefinition"
        ]
        containers = list(definition["containerDefinitions"])
        containers[0] = {**containers[0], "memory": 1024}
        registered = ecs.register_task_definition(
            family=definition["family"], containerDefinitions=containers
        )
        arn = registered["taskDefinition"]["taskDefinitionArn"]
        ecs.update_service(cluster=world.cluster, service=worker, taskDefinition=arn)
        updates = len(world.aws.calls.logged("UpdateService"))
        await another_pass(daemon)
        status = await daemon.wait_for(lambda s: "drift" in s, what="the worker's drift shown")
    assert status["phase"] == "InSync"
    assert status["drift"]["changes"] == [
        f"{worker}: containerDefinitions[app].memory: 1024 -> 256"
    ]
    assert len(world.aws.calls.logged("UpdateService")) == updates  # nothing written
