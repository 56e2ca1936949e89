"""Verifying a definition on the real wire path (aiobotocore against the sandbox's moto
server): what exists passes, each missing or untrusted thing is one finding naming it, a
refused check says it could not be made, and throttling is transient, never a verdict."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from reconciler.adapters.verification import Verifier
from reconciler.app.stages.verify import verify
from reconciler.config import AppConfig
from reconciler.decisions.definitions import DesiredDefinition
from reconciler.errors import AwsUnavailable
from reconciler.sandbox.aws import SandboxAws
from tests.support.accounts import OTHER_ACCOUNT_ROLE, OTHER_REGION, assumed, in_account
from tests.support.cli import reconciler
from tests.support.passes import app_config
from tests.support.world import World


def trust(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
            ],
        }
    )


class Account:
    """Everything a good definition names, made on the sandbox under names of its own."""

    def __init__(self, aws: SandboxAws) -> None:
        self.aws = aws
        self.suffix = uuid.uuid4().hex[:8]
        self.cluster = f"verify-{self.suffix}"
        self.client("ecs").create_cluster(clusterName=self.cluster)
        self.task_role = self.role("task", "ecs-tasks.amazonaws.com")
        self.execution_role = self.role("execution", "ecs-tasks.amazonaws.com")
        self.ec2_role = self.role("ec2", "ec2.amazonaws.com")
        created = self.client("secretsmanager").create_secret(
            Name=f"web-{self.suffix}/db", SecretString='{"password": "pw"}'
        )
        self.secret = str(created["ARN"])
        self.parameter = f"/web-{self.suffix}/api-key"
        self.client("ssm").put_parameter(Name=self.parameter, Value="k", Type="SecureString")
        self.log_group = f"/ecs/web-{self.suffix}"
        # A longer name with the same prefix: only the exact name may count.
        self.client("logs").create_log_group(logGroupName=f"{self.log_group}-api")
        self.client("logs").create_log_group(logGroupName=self.log_group)
        vpc = self.client("ec2").describe_vpcs()["Vpcs"][0]["VpcId"]
        group = self.client("elbv2").create_target_group(
            Name=f"web-{self.suffix}", Protocol="HTTP", Port=80, VpcId=vpc, TargetType="ip"
        )
        self.target_group = str(group["TargetGroups"][0]["TargetGroupArn"])

    def client(self, service: str) -> Any:
        return boto3.client(  # type: ignore[call-overload]
            service, region_name=self.aws.region, endpoint_url=self.aws.endpoint_url
        )

    def role(self, name: str, service: str) -> str:
        answer = self.client("iam").create_role(
            RoleName=f"web-{name}-{self.suffix}", AssumeRolePolicyDocument=trust(service)
        )
        return str(answer["Role"]["Arn"])

    def app(self) -> AppConfig:
        return app_config(cluster=self.cluster)

    def definition(self, **changes: Any) -> DesiredDefinition:
        """A definition naming what this account has; `changes` replace top-level fields
        (`container` the web container's, `service` service.json's)."""
        container = {
            "name": "web",
            "image": "web:1",
            "portMappings": [{"containerPort": 8080}],
            "secrets": [
                {"name": "DB_PASSWORD", "valueFrom": f"{self.secret}:password::"},
                {"name": "API_KEY", "valueFrom": self.parameter},
            ],
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {"awslogs-group": self.log_group, "awslogs-stream-prefix": "web"},
            },
            **changes.pop("container", {}),
        }
        service = changes.pop(
            "service",
            {
                "loadBalancers": [
                    {
                        "targetGroupArn": self.target_group,
                        "containerName": "web",
                        "containerPort": 8080,
                    }
                ],
                "capacityProviderStrategy": [{"capacityProvider": "FARGATE", "weight": 1}],
            },
        )
        task = {
            "family": "web",
            "taskRoleArn": self.task_role,
            "executionRoleArn": self.execution_role,
            "containerDefinitions": [container],
            **changes,
        }
        return DesiredDefinition(task_definition=task, service=service, managed=("web",))

    async def findings(self, definition: DesiredDefinition) -> list[str]:
        verifier = Verifier(region=self.aws.region, endpoint_url=self.aws.endpoint_url)
        _, found = await verify(self.app(), definition, verifier)
        return found


@pytest.fixture
def account(aws: SandboxAws) -> Account:
    return Account(aws)


async def test_a_definition_naming_what_exists_verifies_with_one_call_per_thing(
    account: Account,
) -> None:
    """Seven checks (cluster, two roles, a secret by ARN with a JSON key, a SecureString
    parameter by name, the log group, the target group, FARGATE built in); no secret read."""
    before = account.aws.calls.snapshot()
    verifier = Verifier(region=account.aws.region, endpoint_url=account.aws.endpoint_url)
    count, found = await verify(account.app(), account.definition(), verifier)
    after = account.aws.calls.snapshot()
    assert (count, found) == (7, [])
    asked = {action: after[action] - before.get(action, 0) for action in after}
    asked = {action: n for action, n in asked.items() if n}
    assert asked == {
        "DescribeClusters": 1,
        "GetRole": 2,
        "DescribeSecret": 1,
        "GetParameter": 1,
        "DescribeLogGroups": 1,
        "DescribeTargetGroups": 1,
    }


async def test_each_missing_or_untrusted_thing_is_one_line_naming_it(account: Account) -> None:
    gone = account.suffix + "-gone"
    secret = f"{account.secret}{gone}"
    definition = account.definition(
        taskRoleArn=account.task_role + gone,
        executionRoleArn=account.ec2_role,
        container={
            "secrets": [{"name": "DB_PASSWORD", "valueFrom": f"{secret}:password::"}],
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {"awslogs-group": account.log_group + gone},
            },
        },
        service={
            "loadBalancers": [
                {
                    "targetGroupArn": account.target_group + "0",
                    "containerName": "api",
                    "containerPort": 8080,
                }
            ],
            "capacityProviderStrategy": [{"capacityProvider": "spot-" + gone, "weight": 1}],
        },
    )
    assert await account.findings(definition) == [
        f"task role {account.task_role}{gone} does not exist",
        f"execution role {account.ec2_role} is not trusted by ecs-tasks.amazonaws.com",
        f"secret {secret}:password:: (container web, DB_PASSWORD) does not exist",
        f"log group {account.log_group}{gone} does not exist (set awslogs-create-group or create"
        " it)",
        f"target group {account.target_group}0 does not exist",
        f"capacity provider spot-{gone} does not exist",
        f"target group {account.target_group}0 names container api:8080, which the task"
        " definition does not have",
    ]


async def test_a_missing_cluster_and_parameter_are_found(account: Account) -> None:
    definition = account.definition(
        container={"secrets": [{"name": "KEY", "valueFrom": "/nowhere/" + account.suffix}]},
        service={},
    )
    app = app_config(cluster="gone-" + account.suffix)
    verifier = Verifier(region=account.aws.region, endpoint_url=account.aws.endpoint_url)
    _, found = await verify(app, definition, verifier)
    assert found == [
        f"cluster gone-{account.suffix} does not exist",
        f"parameter /nowhere/{account.suffix} (container web, KEY) does not exist",
    ]


async def test_a_check_access_is_denied_for_is_said_to_need_a_human_never_passed(
    account: Account,
) -> None:
    try:
        account.aws.faults.inject(
            "GetRole", times=2, status=403, code="AccessDenied", message="not authorized"
        )
        found = await account.findings(account.definition())
    finally:
        account.aws.faults.clear()
    assert found == [
        f"task role {account.task_role} could not be checked: GetRole: AccessDenied: not"
        " authorized (needs a human: allow iam:GetRole to the app's identity)",
        f"execution role {account.execution_role} could not be checked: GetRole: AccessDenied:"
        " not authorized (needs a human: allow iam:GetRole to the app's identity)",
    ]


async def test_throttling_is_transient_not_a_finding(account: Account) -> None:
    """Throttled past botocore's own retry, the verification is AwsUnavailable (the pass
    retries it, with backoff), never a finding that would hold the revision."""
    try:
        account.aws.faults.inject("DescribeSecret", times=5)
        with pytest.raises(AwsUnavailable, match="DescribeSecret: ThrottlingException"):
            await account.findings(account.definition())
    finally:
        account.aws.faults.clear()
    assert await account.findings(account.definition()) == []


async def test_reconciler_verify_asks_in_the_apps_own_account_and_region(
    aws: SandboxAws, tmp_path: Path
) -> None:
    """An app in another account and region: `reconciler verify` finds its cluster and task
    role there (the daemon's own identity knows no such role) and names what is missing."""
    world = World.create(tmp_path, aws, "127.0.0.1:5000", sidecar=False)
    in_account(world)
    key, secret, token = assumed(aws, OTHER_ACCOUNT_ROLE)
    role = boto3.client(
        "iam",
        region_name=OTHER_REGION,
        endpoint_url=aws.endpoint_url,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
    ).create_role(
        RoleName=f"{world.name}-task", AssumeRolePolicyDocument=trust("ecs-tasks.amazonaws.com")
    )["Role"]["Arn"]
    group = f"/ecs/{world.name}"
    task = {
        "family": world.name,
        "taskRoleArn": role,
        "containerDefinitions": [
            {
                "name": "app",
                "image": "{{ image }}",
                "memory": 128,
                "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": group}},
            }
        ],
    }
    world.app_overrides["definitions"] = "deploy/ecs"
    world.repo.commit({"deploy/ecs/task-definition.json": json.dumps(task)}, "definitions")
    config = str(world.write_config())

    ran = await reconciler("verify", world.name, "--config", config)
    assert (ran.code, ran.stdout, ran.stderr) == (
        1,
        f"log group {group} does not exist (set awslogs-create-group or create it)\n",
        "",
    )
    task["containerDefinitions"][0]["logConfiguration"]["options"]["awslogs-create-group"] = "true"
    world.repo.commit({"deploy/ecs/task-definition.json": json.dumps(task)}, "ECS makes it")
    ran = await reconciler("verify", world.name, "--config", config)
    assert (ran.code, ran.stdout, ran.stderr) == (0, "verified (2 checks)\n", "")
