"""Desired against live: what ECS adds or fills in is never a difference, unordered lists
compare as sets, and a real change is named by a readable path."""

from __future__ import annotations

import copy
from typing import Any

from reconciler.adapters.ecs_shapes import input_shapes
from reconciler.decisions.definition_diff import service_changes, task_definition_changes
from reconciler.decisions.definitions import starting_files

SHAPES, ROOT = input_shapes("RegisterTaskDefinition")
FIELDS = SHAPES[ROOT]["members"]
ROLE = "arn:aws:iam::123456789012:role/"
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:web/db-AbCdEf"

# As written in the repository: only what the team decided.
DESIRED: dict[str, Any] = {
    "family": "web",
    "taskRoleArn": ROLE + "web-task",
    "executionRoleArn": ROLE + "web-exec",
    "networkMode": "awsvpc",
    "requiresCompatibilities": ["FARGATE"],
    "cpu": "256",
    "memory": "512",
    "containerDefinitions": [
        {
            "name": "web",
            "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/web:" + "a" * 40,
            "portMappings": [{"containerPort": 8080}, {"containerPort": 9090, "name": "admin"}],
            "environment": [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}],
            "secrets": [{"name": "DB_PASSWORD", "valueFrom": SECRET}],
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {"awslogs-group": "/ecs/web", "awslogs-region": "us-east-1"},
            },
            "healthCheck": {"command": ["CMD-SHELL", "curl -f localhost:8080/ || exit 1"]},
        },
        {"name": "log-router", "image": "public.ecr.aws/aws-observability/aws-for-fluent-bit"},
    ],
}


def described() -> dict[str, Any]:
    """DESIRED as DescribeTaskDefinition gives it back: every field ECS adds or fills in,
    and its own order for lists."""
    live = copy.deepcopy(DESIRED)
    web, router = live["containerDefinitions"]
    web.update(
        cpu=0,
        essential=True,
        portMappings=[
            {"containerPort": 9090, "hostPort": 9090, "protocol": "tcp", "name": "admin"},
            {"containerPort": 8080, "hostPort": 8080, "protocol": "tcp"},
        ],
        environment=[{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        mountPoints=[],
        volumesFrom=[],
        systemControls=[],
        versionConsistency="enabled",
    )
    web["logConfiguration"]["secretOptions"] = []
    web["healthCheck"].update(interval=30, timeout=5, retries=3)
    router.update(
        cpu=0,
        essential=True,
        portMappings=[],
        environment=[],
        mountPoints=[],
        volumesFrom=[],
        systemControls=[],
    )
    live.update(
        taskDefinitionArn="arn:aws:ecs:us-east-1:123456789012:task-definition/web:42",
        revision=42,
        status="ACTIVE",
        volumes=[],
        placementConstraints=[],
        requiresAttributes=[
            {"name": "com.amazonaws.ecs.capability.logging-driver.awslogs"},
            {"name": "ecs.capability.execution-role-awslogs"},
            {"name": "com.amazonaws.ecs.capability.docker-remote-api.1.19"},
            {"name": "ecs.capability.secrets.asm.environment-variables"},
            {"name": "com.amazonaws.ecs.capability.task-iam-role"},
            {"name": "ecs.capability.container-health-check"},
            {"name": "ecs.capability.task-eni"},
        ],
        compatibilities=["EC2", "FARGATE"],
        registeredAt="2026-01-02T03:04:05.678000+00:00",
        registeredBy="arn:aws:sts::123456789012:assumed-role/deployer/reconciler",
        enableFaultInjection=False,
    )
    return live


def changes(desired: dict[str, Any], live: dict[str, Any]) -> list[str]:
    found = task_definition_changes(
        desired, live, live_tags=[{"key": "reconciler:app", "value": "web"}], fields=FIELDS
    )
    return [change.describe() for change in found]


def test_a_definition_as_ecs_gives_it_back_is_no_change() -> None:
    """The bar of `reconciler diff`: nothing to print for an unchanged service."""
    assert changes(DESIRED, described()) == []


def test_a_changed_value_is_named_by_its_path_with_both_sides() -> None:
    live = described()
    live["memory"] = "1024"
    live["containerDefinitions"][0]["environment"][0]["value"] = "one"
    live["containerDefinitions"][0]["portMappings"][1]["protocol"] = "udp"
    assert changes(DESIRED, live) == [
        'containerDefinitions[web].environment[A].value: "one" -> "1"',
        'containerDefinitions[web].portMappings[8080/tcp]: (absent) -> {"containerPort": 8080}',
        'containerDefinitions[web].portMappings[8080/udp]: {"containerPort": 8080, "protocol":'
        ' "udp"} -> (absent)',
        'memory: "1024" -> "512"',
    ]


def test_a_value_equal_to_a_default_but_set_on_purpose_differs_from_another_one() -> None:
    """`essential: false` written in the file is a decision, not a default."""
    desired = copy.deepcopy(DESIRED)
    desired["containerDefinitions"][1]["essential"] = False
    assert changes(desired, described()) == [
        "containerDefinitions[log-router].essential: (absent) -> false"
    ]


def test_a_removed_secret_and_an_added_variable_are_changes() -> None:
    live = described()
    del live["containerDefinitions"][0]["secrets"]
    live["containerDefinitions"][0]["environment"].append({"name": "DEBUG", "value": "1"})
    assert changes(DESIRED, live) == [
        'containerDefinitions[web].environment[DEBUG]: {"name": "DEBUG", "value": "1"} -> (absent)',
        "containerDefinitions[web].secrets: (absent) -> "
        f'{{"[DB_PASSWORD]": {{"name": "DB_PASSWORD", "valueFrom": "{SECRET}"}}}}',
    ]


def test_bridge_networking_publishes_a_dynamic_host_port_by_default() -> None:
    desired: dict[str, Any] = {
        "family": "w",
        "containerDefinitions": [
            {"name": "w", "image": "x", "portMappings": [{"containerPort": 80}]}
        ],
    }
    live = copy.deepcopy(desired)
    live["networkMode"] = "bridge"
    live["containerDefinitions"][0]["portMappings"] = [
        {"containerPort": 80, "hostPort": 0, "protocol": "tcp"}
    ]
    assert changes(desired, live) == []
    live["containerDefinitions"][0]["portMappings"][0]["hostPort"] = 80
    assert changes(desired, live) == [  # a static port is a decision
        "containerDefinitions[w].portMappings[80/tcp].hostPort: 80 -> (absent)"
    ]


def test_tags_compare_only_when_the_file_has_them_and_never_the_daemons_own() -> None:
    desired = {**DESIRED, "tags": [{"key": "team", "value": "payments"}]}
    live_tags = [{"key": "reconciler:app", "value": "web"}, {"key": "team", "value": "search"}]
    found = task_definition_changes(desired, described(), live_tags=live_tags, fields=FIELDS)
    assert [c.path for c in found] == ["tags[team].value"]


def test_service_settings_compare_only_what_service_json_says() -> None:
    """ECS's defaults and fields left to others are not differences; lists are sets."""
    live = {
        "deploymentConfiguration": {
            "maximumPercent": 200,
            "minimumHealthyPercent": 100,
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
            "strategy": "ROLLING",
        },
        "networkConfiguration": {
            "awsvpcConfiguration": {
                "subnets": ["subnet-b", "subnet-a"],
                "securityGroups": ["sg-1"],
                "assignPublicIp": "DISABLED",
            }
        },
        "desiredCount": 7,
        "healthCheckGracePeriodSeconds": 0,
        "enableExecuteCommand": False,
    }
    desired = {
        "deploymentConfiguration": {"deploymentCircuitBreaker": {"enable": True, "rollback": True}},
        "networkConfiguration": {
            "awsvpcConfiguration": {"subnets": ["subnet-a", "subnet-b"], "securityGroups": ["sg-1"]}
        },
    }
    assert service_changes(desired, live) == []
    desired["healthCheckGracePeriodSeconds"] = 60
    assert [c.describe() for c in service_changes(desired, live)] == [
        "healthCheckGracePeriodSeconds: 0 -> 60"
    ]


def test_starting_files_from_live_would_deploy_as_no_change() -> None:
    """`render --from-live`: only what RegisterTaskDefinition takes, the managed image a
    template, the daemon's tag left out; rendered back, they equal what runs."""
    live = described()
    tags = [{"key": "reconciler:app", "value": "web"}, {"key": "team", "value": "payments"}]
    task, service = starting_files(
        live,
        tags=tags,
        managed={"web"},
        settings={"desiredCount": 4, "enableExecuteCommand": False, "loadBalancers": []},
        fields=FIELDS,
        ignore=("desiredCount",),
    )
    assert task["containerDefinitions"][0]["image"] == "{{ image }}"
    assert not {"taskDefinitionArn", "revision", "status", "compatibilities"} & set(task)
    assert task["tags"] == [{"key": "team", "value": "payments"}]
    assert service == {"enableExecuteCommand": False}
    task["containerDefinitions"][0]["image"] = live["containerDefinitions"][0]["image"]
    found = task_definition_changes(task, live, live_tags=tags, fields=FIELDS)
    assert found == []
