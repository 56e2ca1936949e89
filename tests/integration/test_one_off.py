"""`reconciler run APP -- COMMAND`: a one-off task of the live task definition, run by an
operator with their own AWS credentials, against the sandbox's task lifecycles.

The command runs as a subprocess, as an operator runs it; every AWS call goes over HTTP
through aiobotocore to the moto server. The sandbox's TaskScenario decides how the task
ends; its records show what RunTask was asked for.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from reconciler.sandbox import SandboxAws, provision_app
from reconciler.sandbox.tasks import TaskScenario
from tests.support.cli import Ran, reconciler
from tests.support.config import app_table, config_text

REGION = "us-east-1"


@dataclass
class OneOffApp:
    aws: SandboxAws
    cluster: str
    config: Path
    task_definition: str  # what the service runs now: with CloudWatch logs on `app`

    async def run(self, *args: str) -> Ran:
        return await reconciler("run", "--config", str(self.config), *args)


@pytest.fixture
def app(aws: SandboxAws, tmp_path: Path) -> OneOffApp:
    cluster = f"oo-{uuid.uuid4().hex[:10]}"
    provision_app(
        endpoint_url=aws.endpoint_url,
        region=REGION,
        cluster=cluster,
        service="web",
        ecr_repository="web",
        family=f"{cluster}-web",
        image="registry.local/web:v1",
    )
    ecs = boto3.client("ecs", region_name=REGION, endpoint_url=aws.endpoint_url)
    live = ecs.describe_services(cluster=cluster, services=["web"])["services"][0]
    definition = ecs.describe_task_definition(taskDefinition=live["taskDefinition"])
    fields = definition["taskDefinition"]
    for container in fields["containerDefinitions"]:
        if container["name"] == "app":
            container["logConfiguration"] = {
                "logDriver": "awslogs",
                "options": {"awslogs-group": f"/ecs/{cluster}", "awslogs-stream-prefix": "web"},
            }
    arn = ecs.register_task_definition(
        family=fields["family"],
        containerDefinitions=fields["containerDefinitions"],
        requiresCompatibilities=fields["requiresCompatibilities"],
        networkMode=fields["networkMode"],
        cpu=fields["cpu"],
        memory=fields["memory"],
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.update_service(cluster=cluster, service="web", taskDefinition=arn)
    config = tmp_path / "reconciler.toml"
    config.write_text(
        config_text(
            daemon={"state_dir": tmp_path / "state"},
            aws={"region": REGION, "endpoint_url": aws.endpoint_url},
            apps=[app_table("web", "https://github.com/acme/web.git", cluster=cluster)],
        )
    )
    return OneOffApp(aws, cluster, config, arn)


async def test_the_containers_exit_code_is_the_commands_and_the_log_stream_is_named(
    app: OneOffApp,
) -> None:
    """A task of the task definition the service runs now, launched like the service, with
    COMMAND in the managed container; its exit code is the CLI's, its stream is named."""
    app.aws.tasks.set_scenario(app.cluster, TaskScenario(exit_code=3, after=0.3))
    before = app.aws.calls.snapshot()
    ran = await app.run("web", "--", "sh", "-c", "exit 3 # --service not ours")
    after = app.aws.calls.snapshot()

    assert ran.code == 3, ran
    [record] = app.aws.tasks.started(app.cluster)
    [task] = record.task_arns
    assert record.task_definition == app.task_definition
    assert record.commands == {"app": ("sh", "-c", "exit 3 # --service not ours")}
    assert record.started_by == "reconciler-run/web"
    assert record.launch_type == "FARGATE"
    assert record.network_configuration is not None
    assert record.network_configuration["awsvpcConfiguration"]["subnets"]
    [call] = app.aws.calls.logged("RunTask")[-1:]
    assert len(call["clientToken"]) == 32
    task_id = task.rsplit("/", 1)[-1]
    assert f"started {task} of {app.task_definition}" in ran.stdout
    assert f"CloudWatch group /ecs/{app.cluster}, stream web/app/{task_id}" in ran.stdout
    assert f"error: task {task}: app exited 3" in ran.stderr
    # Nothing else was written: no task definition, no service update, one RunTask.
    writes = {
        action: after[action] - before.get(action, 0)
        for action in after
        if not action.startswith(("Describe", "List")) and after[action] != before.get(action)
    }
    assert writes == {"RunTask": 1}


async def test_a_task_that_exits_0_exits_0(app: OneOffApp) -> None:
    app.aws.tasks.set_scenario(app.cluster, TaskScenario(exit_code=0, after=0.2))
    ran = await app.run("web", "--container", "app", "--", "true")
    assert ran.code == 0, ran
    assert ran.stderr == ""
    assert ran.stdout.rstrip().endswith("exit 0")


async def test_a_task_that_never_starts_exits_1_saying_why(app: OneOffApp) -> None:
    app.aws.tasks.set_scenario(app.cluster, TaskScenario(never_starts=True, after=0.2))
    ran = await app.run("web", "--", "migrate")
    assert ran.code == 1, ran
    assert "stopped before app ran: TaskFailedToStart: CannotPullContainerError" in ran.stderr


async def test_a_task_past_its_timeout_is_stopped(app: OneOffApp) -> None:
    app.aws.tasks.set_scenario(app.cluster, TaskScenario(hang=True))
    ran = await app.run("web", "--timeout", "1s", "--", "sleep", "600")
    assert ran.code == 1, ran
    assert "did not finish within 1s and was stopped" in ran.stderr
    assert app.aws.tasks.started(app.cluster)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("web", "--service", "worker", "--", "true"), "app 'web' has no service 'worker'"),
        (("web", "--container", "nope", "--", "true"), "'nope' is not a container of"),
        (("web",), "no command: reconciler run web -- COMMAND"),
        (("nope", "--", "true"), "unknown app 'nope'"),
        (("--service", "web"), "--service needs an APP"),
        (("web", "--timeout", "soon", "--", "true"), "--timeout"),
    ],
)
async def test_bad_input_is_one_line_and_starts_nothing(
    app: OneOffApp, args: tuple[str, ...], says: str
) -> None:
    ran = await app.run(*args)
    assert ran.code in (1, 2), ran
    assert says in ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1
    assert app.aws.tasks.started(app.cluster) == []
