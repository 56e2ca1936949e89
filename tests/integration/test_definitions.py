"""Definitions as code on the real stack: the files read from a real git repository at the
desired revision, rendered with values looked up on the sandbox AWS (moto's server) with the
app's identity, and every problem one line naming the file."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from reconciler.adapters.git import GitMirrors
from reconciler.adapters.lookups import TemplateLookups
from reconciler.app.stages.definitions import desired_definition
from reconciler.config import AppConfig
from reconciler.decisions.definitions import DesiredDefinition
from reconciler.errors import DefinitionError
from reconciler.sandbox.aws import SandboxAws
from tests.support.gitrepo import GitRepo
from tests.support.passes import app_config

IMAGE = "127.0.0.1:5000/web:"

TASK = """{
  "family": "{{ app }}",
  "memory": "{{ ssm(memory_parameter) }}",
  "containerDefinitions": [{
    "name": "web",
    "image": "{{ image }}",
    "environment": [
      {"name": "REVISION", "value": "{{ revision }}"},
      {"name": "REGION", "value": "{{ env('DEPLOY_REGION') }}"}
    ],
    "secrets": [{"name": "DB_PASSWORD", "valueFrom": "{{ secret_arn(secret_name) }}"}]
  }]
}
"""


def template(**names: str) -> str:
    """TASK with its lookups' names filled in (each test has parameters of its own)."""
    text = TASK
    for key, value in names.items():
        text = text.replace(key, repr(value))
    return text


class World:
    def __init__(self, aws: SandboxAws, tmp_path: Path) -> None:
        self.aws = aws
        self.tmp_path = tmp_path
        self.repo = GitRepo(tmp_path / "app")
        self.mirrors = GitMirrors(tmp_path / "state")
        suffix = uuid.uuid4().hex[:8]
        self.parameter = f"/web-{suffix}/memory"
        self.secret = f"web-{suffix}/db"
        self.client("ssm").put_parameter(Name=self.parameter, Value="1024", Type="String")
        created = self.client("secretsmanager").create_secret(Name=self.secret, SecretString="pw")
        self.secret_arn = str(created["ARN"])

    def client(self, service: str) -> Any:
        return boto3.client(  # type: ignore[call-overload]
            service, region_name=self.aws.region, endpoint_url=self.aws.endpoint_url
        )

    def app(self, **keys: Any) -> AppConfig:
        return app_config(repo=self.repo.url, definitions="deploy/ecs", **keys)

    def lookups(self, *, env_allow: tuple[str, ...] = ("DEPLOY_*",)) -> TemplateLookups:
        return TemplateLookups(
            region=self.aws.region,
            endpoint_url=self.aws.endpoint_url,
            env_allow=env_allow,
            environ={"DEPLOY_REGION": "eu-west-1", "DAEMON_TOKEN": "do-not-read"},
        )

    def commit(self, files: dict[str, str]) -> str:
        return self.repo.commit({f"deploy/ecs/{k}": v for k, v in files.items()})

    async def desired(self, revision: str, **keys: Any) -> DesiredDefinition | None:
        lookups = keys.pop("lookups", None) or self.lookups()
        return await desired_definition(
            self.app(**keys),
            git=self.mirrors,
            lookups=lookups,
            revision=revision,
            image=IMAGE + revision,
        )


@pytest.fixture
def world(aws: SandboxAws, tmp_path: Path) -> World:
    return World(aws, tmp_path)


async def test_the_files_of_the_revision_render_with_values_looked_up_on_aws(world: World) -> None:
    """The task definition of exactly that commit, its managed image the deployed one, its
    ssm() value read and its secret referenced by ARN (the value never enters it)."""
    first = world.commit(
        {
            "task-definition.json": template(
                memory_parameter=world.parameter, secret_name=world.secret
            ),
            "service.json": '{"desiredCount": 5, "healthCheckGracePeriodSeconds": 30}',
        }
    )
    world.commit({"task-definition.json": "{ not json"})
    desired = await world.desired(first)
    assert desired is not None
    definition = desired.task_definition
    web = definition["containerDefinitions"][0]
    assert (definition["family"], definition["memory"], web["image"]) == (
        "web",
        "1024",
        IMAGE + first,
    )
    assert {e["name"]: e["value"] for e in web["environment"]} == {
        "REVISION": first,
        "REGION": "eu-west-1",
    }
    assert web["secrets"] == [{"name": "DB_PASSWORD", "valueFrom": world.secret_arn}]
    assert "pw" not in json.dumps(definition)
    assert desired.service == {"healthCheckGracePeriodSeconds": 30}  # desiredCount ignored
    assert desired.managed == ("web",)


async def test_without_definitions_nothing_is_read(world: World) -> None:
    revision = world.commit({"README": "x"})
    found = await desired_definition(
        app_config(repo=world.repo.url),
        git=world.mirrors,
        lookups=world.lookups(),
        revision=revision,
        image=IMAGE,
    )
    assert found is None


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, "deploy/ecs/task-definition.json: not found in commit "),
        (
            {"task-definition.json": '{"family": "web",\n "containerDefinitions": [}'},
            "deploy/ecs/task-definition.json:2:27: not valid JSON: Expecting value",
        ),
        (
            {"task-definition.json": '{"family": "web", "containerDefinitions": [], "cpus": 1}'},
            "deploy/ecs/task-definition.json: cpus: unknown field (did you mean 'cpu'?)",
        ),
        (
            {"task-definition.json": '{"family": "web", "cpu": 256, "containerDefinitions": []}'},
            "deploy/ecs/task-definition.json: cpu: expected a string, got the number 256",
        ),
        (
            {"task-definition.json": '{"family": "{{ ap }}"}'},
            "deploy/ecs/task-definition.json: template: 'ap' is undefined",
        ),
        (
            {"task-definition.json": '{"family": "{{ env("DAEMON_TOKEN") }}"}'},
            "deploy/ecs/task-definition.json: env('DAEMON_TOKEN'): not in [definitions].env_allow",
        ),
        (
            {"task-definition.json": '{"family": "{{ ssm("/nowhere/at-all") }}"}'},
            "deploy/ecs/task-definition.json: ssm('/nowhere/at-all'): GetParameter: "
            "ParameterNotFound",
        ),
        (
            {"task-definition.json": '{"family": "{{ secret_arn("no-such-secret") }}"}'},
            "deploy/ecs/task-definition.json: secret_arn('no-such-secret'): DescribeSecret: "
            "ResourceNotFoundException",
        ),
    ],
    ids=["missing", "json", "unknown", "type", "template", "env", "ssm", "secret"],
)
async def test_a_bad_definition_is_one_line_naming_the_file_and_path(
    world: World, files: dict[str, str], expected: str
) -> None:
    revision = world.commit(files) if files else world.commit({"README": "no definitions"})
    with pytest.raises(DefinitionError) as caught:
        await world.desired(revision)
    assert str(caught.value).startswith(expected), str(caught.value)
    assert "\n" not in str(caught.value)


async def test_a_secure_string_is_refused_by_ssm_so_its_value_never_enters_a_definition(
    world: World,
) -> None:
    name = f"/secure-{uuid.uuid4().hex[:8]}"
    world.client("ssm").put_parameter(Name=name, Value="hunter2", Type="SecureString")
    revision = world.commit({"task-definition.json": f'{{"family": "{{{{ ssm("{name}") }}}}"}}'})
    with pytest.raises(DefinitionError) as caught:
        await world.desired(revision)
    assert f"ssm('{name}'): a SecureString; reference it in `secrets` by its ARN" in str(
        caught.value
    )
    assert "hunter2" not in str(caught.value)
