"""Create what one app needs in the sandbox: cluster, ECR repository, task definition, service.

This talks to the endpoint over HTTP like any client would, so it works against any moto
server, not only an embedded `SandboxAws`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_ecr import ECRClient
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_ecs.type_defs import (
        ContainerDefinitionTypeDef,
        CreateServiceRequestTypeDef,
        DeploymentConfigurationTypeDef,
        NetworkConfigurationTypeDef,
    )

SIDECAR_IMAGE = "public.ecr.aws/aws-observability/aws-for-fluent-bit:stable"
DEFAULT_TAGS = {"team": "sandbox"}

Strategy = Literal["ROLLING", "BLUE_GREEN", "LINEAR", "CANARY"]
Controller = Literal["ECS", "CODE_DEPLOY", "EXTERNAL"]


@dataclass(frozen=True)
class ProvisionedApp:
    cluster_arn: str
    service_arn: str
    task_definition_arn: str
    repository_uri: str


def provision_app(
    *,
    endpoint_url: str,
    region: str,
    cluster: str,
    service: str,
    ecr_repository: str,
    family: str,
    image: str,
    sidecar: bool = True,
    tags: dict[str, str] | None = None,
    desired_count: int = 1,
    strategy: Strategy | None = None,
    bake_minutes: int | None = None,
    alarms: Sequence[str] = (),
    controller: Controller | None = None,
    step_percent: float | None = None,
    step_bake_minutes: int | None = None,
    credentials: tuple[str, str, str] | None = None,
    lifecycle_hooks: Sequence[dict[str, Any]] = (),
) -> ProvisionedApp:
    """Create the app's AWS resources that are missing; running it again changes nothing.

    An existing service is left as it is, task definition included: it may already run a
    revision the daemon deployed. A new service deploys with `strategy` (ECS's default,
    ROLLING, when None), baking `bake_minutes`, rolled back by the CloudWatch `alarms` named,
    under the deployment `controller` given; `step_percent` and `step_bake_minutes` are a
    LINEAR strategy's steps or a CANARY's canary. `credentials` (access key, secret, token,
    e.g. of an assumed role) put everything in that account. `lifecycle_hooks` are its
    deploymentConfiguration.lifecycleHooks (a PAUSE hook stops its deployments: hooks.py).
    """
    session = _session(credentials)
    config = Config(retries={"mode": "standard", "max_attempts": 5})
    ecs: ECSClient = session.client(
        "ecs", region_name=region, endpoint_url=endpoint_url, config=config
    )
    ecr: ECRClient = session.client(
        "ecr", region_name=region, endpoint_url=endpoint_url, config=config
    )

    cluster_arn = _ensure_cluster(ecs, cluster)
    repository_uri = _ensure_repository(ecr, ecr_repository)
    live = ecs.describe_services(cluster=cluster, services=[service])["services"]
    live = [s for s in live if s.get("status") == "ACTIVE"]
    if live:
        return ProvisionedApp(
            cluster_arn, live[0]["serviceArn"], live[0]["taskDefinition"], repository_uri
        )

    registered = ecs.register_task_definition(
        family=family,
        containerDefinitions=_containers(image, sidecar=sidecar),
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="256",
        memory="512",
        tags=[{"key": k, "value": v} for k, v in (tags or DEFAULT_TAGS).items()],
    )
    task_definition_arn = registered["taskDefinition"]["taskDefinitionArn"]
    ec2 = session.client("ec2", region_name=region, endpoint_url=endpoint_url, config=config)
    network = _default_network(ec2)
    request: CreateServiceRequestTypeDef = {
        "cluster": cluster,
        "serviceName": service,
        "taskDefinition": task_definition_arn,
        "desiredCount": desired_count,
        "launchType": "FARGATE",
        "deploymentConfiguration": _deployment_configuration(
            strategy, bake_minutes, alarms, step_percent, step_bake_minutes
        ),
    }
    if lifecycle_hooks:
        hooks: Any = [dict(hook) for hook in lifecycle_hooks]
        request["deploymentConfiguration"]["lifecycleHooks"] = hooks
    if controller is not None:
        request["deploymentController"] = {"type": controller}
    if network is not None:
        request["networkConfiguration"] = network
    created = ecs.create_service(**request)
    return ProvisionedApp(
        cluster_arn, created["service"]["serviceArn"], task_definition_arn, repository_uri
    )


def _deployment_configuration(
    strategy: Strategy | None,
    bake_minutes: int | None,
    alarms: Sequence[str],
    step_percent: float | None,
    step_bake_minutes: int | None,
) -> DeploymentConfigurationTypeDef:
    config: DeploymentConfigurationTypeDef = {
        "deploymentCircuitBreaker": {"enable": True, "rollback": True},
        "maximumPercent": 200,
        "minimumHealthyPercent": 100,
    }
    if strategy is not None:
        config["strategy"] = strategy
    if bake_minutes is not None:
        config["bakeTimeInMinutes"] = bake_minutes
    if alarms:
        config["alarms"] = {"alarmNames": list(alarms), "enable": True, "rollback": True}
    if strategy == "LINEAR" and (step_percent is not None or step_bake_minutes is not None):
        config["linearConfiguration"] = {}
        if step_percent is not None:
            config["linearConfiguration"]["stepPercent"] = step_percent
        if step_bake_minutes is not None:
            config["linearConfiguration"]["stepBakeTimeInMinutes"] = step_bake_minutes
    if strategy == "CANARY" and (step_percent is not None or step_bake_minutes is not None):
        config["canaryConfiguration"] = {}
        if step_percent is not None:
            config["canaryConfiguration"]["canaryPercent"] = step_percent
        if step_bake_minutes is not None:
            config["canaryConfiguration"]["canaryBakeTimeInMinutes"] = step_bake_minutes
    return config


@functools.cache
def _session(credentials: tuple[str, str, str] | None = None) -> boto3.session.Session:
    # One session for every call: building a client parses the service model, and a fresh
    # session would parse it again each time. moto accepts any credentials, and files what
    # an assumed role's credentials create under the role's account.
    key, secret, token = credentials or ("testing", "testing", "testing")
    return boto3.session.Session(
        aws_access_key_id=key, aws_secret_access_key=secret, aws_session_token=token
    )


def _ensure_cluster(ecs: ECSClient, name: str) -> str:
    for found in ecs.describe_clusters(clusters=[name])["clusters"]:
        if found.get("status") == "ACTIVE":
            return found["clusterArn"]
    return ecs.create_cluster(clusterName=name)["cluster"]["clusterArn"]


def _ensure_repository(ecr: ECRClient, name: str) -> str:
    try:
        found = ecr.describe_repositories(repositoryNames=[name])["repositories"]
    except ecr.exceptions.RepositoryNotFoundException:
        found = []
    if found:
        return found[0]["repositoryUri"]
    return ecr.create_repository(repositoryName=name)["repository"]["repositoryUri"]


def _containers(image: str, *, sidecar: bool) -> list[ContainerDefinitionTypeDef]:
    containers: list[ContainerDefinitionTypeDef] = [
        {
            "name": "app",
            "image": image,
            "essential": True,
            "cpu": 128,
            "memory": 256,
            "environment": [{"name": "MODE", "value": "sandbox"}],
            "portMappings": [{"containerPort": 8080, "protocol": "tcp"}],
        }
    ]
    if sidecar:
        # A container the daemon must leave alone when it swaps the app's image.
        containers.append(
            {
                "name": "log-router",
                "image": SIDECAR_IMAGE,
                "essential": False,
                "memoryReservation": 64,
                "firelensConfiguration": {"type": "fluentbit"},
            }
        )
    return containers


def _default_network(ec2: Any) -> NetworkConfigurationTypeDef | None:
    """awsvpc tasks need a subnet and security group: moto's default VPC has both.

    (`ec2` is untyped: the EC2 stubs are not among the project's dev dependencies.)
    """
    subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])
    if not subnets["Subnets"]:
        return None
    subnet = min(subnets["Subnets"], key=lambda s: s["AvailabilityZone"])
    groups = ec2.describe_security_groups(
        Filters=[
            {"Name": "vpc-id", "Values": [subnet["VpcId"]]},
            {"Name": "group-name", "Values": ["default"]},
        ]
    )["SecurityGroups"]
    return {
        "awsvpcConfiguration": {
            "subnets": [subnet["SubnetId"]],
            "securityGroups": [g["GroupId"] for g in groups[:1]],
            "assignPublicIp": "DISABLED",
        }
    }


# The role scheduled targets run with in the sandbox (moto does not check it).
SCHEDULE_ROLE = "arn:aws:iam::123456789012:role/sandbox-scheduled-task"


def provision_schedule(
    *,
    endpoint_url: str,
    region: str,
    schedule: str,
    cluster_arn: str,
    task_definition: str,
) -> bool:
    """Create the EventBridge rule (`rule/<name>`, nightly) or Scheduler schedule
    (`schedule/<group>/<name>`, daily) `schedule` names, with one ECS target running
    `task_definition`, unless it exists; True when it was created."""
    from reconciler.decisions.schedules import parse_ref

    ref = parse_ref(schedule)
    session = _session()
    config = Config(retries={"mode": "standard", "max_attempts": 5})
    target = {
        "Arn": cluster_arn,
        "RoleArn": SCHEDULE_ROLE,
        "EcsParameters": {"TaskDefinitionArn": task_definition, "TaskCount": 1},
    }
    if ref.kind == "rule":
        events = session.client(
            "events", region_name=region, endpoint_url=endpoint_url, config=config
        )
        if events.list_rules(NamePrefix=ref.name).get("Rules"):
            return False
        events.put_rule(Name=ref.name, ScheduleExpression="cron(0 3 * * ? *)")
        events.put_targets(Rule=ref.name, Targets=[{"Id": "task", **target}])
        return True
    scheduler = session.client(
        "scheduler", region_name=region, endpoint_url=endpoint_url, config=config
    )
    try:
        scheduler.get_schedule(GroupName=ref.group, Name=ref.name)
        return False
    except scheduler.exceptions.ResourceNotFoundException:
        pass
    if ref.group != "default":
        with contextlib.suppress(scheduler.exceptions.ConflictException):
            scheduler.create_schedule_group(Name=ref.group)
    scheduler.create_schedule(
        Name=ref.name,
        GroupName=ref.group,
        ScheduleExpression="rate(1 day)",
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={**target, "Input": "{}"},
    )
    return True
