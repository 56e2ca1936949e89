"""Verification of a definition, the pure half: which lookups a rendered definition needs,
and the one-line finding each answer makes (or none)."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import pytest

from reconciler.decisions.definitions import DesiredDefinition
from reconciler.decisions.verification import (
    ECS_TASKS,
    MAX_LOOKUPS,
    Answer,
    Check,
    Lookup,
    State,
    checks_of,
    findings,
    role_name,
    secret_lookup,
    too_many,
    trusts,
)

ACCOUNT = "123456789012"
TASK_ROLE = f"arn:aws:iam::{ACCOUNT}:role/web-task"
EXECUTION_ROLE = f"arn:aws:iam::{ACCOUNT}:role/ecs/web-execution"
SECRET = f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:web/db-AbCdEf"
PARAMETER = f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/web/api-key"
TARGET_GROUP = f"arn:aws:elasticloadbalancing:us-east-1:{ACCOUNT}:targetgroup/web/0123456789abcdef"
TRUSTED: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": ECS_TASKS},
            "Action": "sts:AssumeRole",
        }
    ],
}


def definition(
    *, task: dict[str, Any] | None = None, service: dict[str, Any] | None = None
) -> DesiredDefinition:
    container = {
        "name": "web",
        "image": "web:1",
        "portMappings": [{"containerPort": 8080}],
        "secrets": [
            {"name": "DB_PASSWORD", "valueFrom": f"{SECRET}:password::"},
            {"name": "API_KEY", "valueFrom": PARAMETER},
            {"name": "PLAIN", "valueFrom": "/web/plain"},
        ],
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {"awslogs-group": "/ecs/web", "awslogs-stream-prefix": "web"},
        },
    }
    base = {
        "family": "web",
        "taskRoleArn": TASK_ROLE,
        "executionRoleArn": EXECUTION_ROLE,
        "containerDefinitions": [container],
    }
    settings = {
        "loadBalancers": [
            {"targetGroupArn": TARGET_GROUP, "containerName": "web", "containerPort": 8080}
        ],
        "capacityProviderStrategy": [
            {"capacityProvider": "FARGATE", "weight": 1},
            {"capacityProvider": "spot-fleet", "weight": 1},
        ],
    }
    return DesiredDefinition(
        task_definition=task if task is not None else base,
        service=service if service is not None else settings,
        managed=("web",),
    )


def all_found(checks: tuple[Check, ...], **by_kind: Answer) -> dict[Lookup, Answer]:
    """Every lookup found (roles trusting ecs-tasks), but for the kinds given."""
    return {
        check.lookup: by_kind.get(check.lookup.kind, Answer(State.FOUND, trust_policy=TRUSTED))
        for check in checks
    }


def test_a_full_definition_asks_for_each_thing_it_names_once() -> None:
    """The cluster, both roles by name, the secret without its JSON key suffix and in its
    ARN's region, parameters by ARN or name, the log group, the target group and the
    capacity provider that is not built in."""
    checks = checks_of(definition(), cluster="prod")
    assert [(c.lookup, c.subject) for c in checks] == [
        (Lookup("cluster", "prod"), "cluster prod"),
        (Lookup("role", "web-task"), f"task role {TASK_ROLE}"),
        (Lookup("role", "web-execution"), f"execution role {EXECUTION_ROLE}"),
        (
            Lookup("secret", SECRET, region="eu-west-1"),
            f"secret {SECRET}:password:: (container web, DB_PASSWORD)",
        ),
        (
            Lookup("parameter", PARAMETER, region="us-east-1"),
            f"parameter {PARAMETER} (container web, API_KEY)",
        ),
        (Lookup("parameter", "/web/plain"), "parameter /web/plain (container web, PLAIN)"),
        (Lookup("log_group", "/ecs/web"), "log group /ecs/web"),
        (Lookup("target_group", TARGET_GROUP), f"target group {TARGET_GROUP}"),
        (Lookup("capacity_provider", "spot-fleet"), "capacity provider spot-fleet"),
    ]


def test_everything_there_and_trusted_is_verified() -> None:
    wanted = definition()
    checks = checks_of(wanted, cluster="prod")
    assert findings(wanted, checks, all_found(checks)) == []


@pytest.mark.parametrize(
    ("kind", "answer", "expected"),
    [
        ("cluster", Answer(State.MISSING), "cluster prod does not exist"),
        ("cluster", Answer(State.UNUSABLE, "is INACTIVE"), "cluster prod is INACTIVE"),
        (
            "secret",
            Answer(State.MISSING),
            f"secret {SECRET}:password:: (container web, DB_PASSWORD) does not exist",
        ),
        (
            "log_group",
            Answer(State.MISSING),
            "log group /ecs/web does not exist (set awslogs-create-group or create it)",
        ),
        (
            "target_group",
            Answer(State.DENIED, "DescribeTargetGroups: AccessDenied: no"),
            f"target group {TARGET_GROUP} could not be checked: DescribeTargetGroups:"
            " AccessDenied: no (needs a human: allow elasticloadbalancing:DescribeTargetGroups"
            " to the app's identity)",
        ),
        (
            "capacity_provider",
            Answer(State.MISSING),
            "capacity provider spot-fleet does not exist",
        ),
    ],
    ids=["cluster", "inactive", "secret", "log-group", "denied", "capacity-provider"],
)
def test_each_failed_answer_is_one_line_naming_the_thing(
    kind: str, answer: Answer, expected: str
) -> None:
    wanted = definition()
    checks = checks_of(wanted, cluster="prod")
    assert findings(wanted, checks, all_found(checks, **{kind: answer})) == [expected]


def test_a_missing_role_and_an_untrusted_one_are_told_apart() -> None:
    wanted = definition()
    checks = checks_of(wanted, cluster="prod")
    answers = all_found(checks)
    answers[Lookup("role", "web-task")] = Answer(State.MISSING)
    statement = {**TRUSTED["Statement"][0], "Principal": {"Service": "ec2.amazonaws.com"}}
    ec2_only = {**TRUSTED, "Statement": [statement]}
    answers[Lookup("role", "web-execution")] = Answer(State.FOUND, trust_policy=ec2_only)
    assert findings(wanted, checks, answers) == [
        f"task role {TASK_ROLE} does not exist",
        f"execution role {EXECUTION_ROLE} is not trusted by ecs-tasks.amazonaws.com",
    ]


def test_a_target_group_naming_a_container_port_the_definition_lacks_is_found_without_aws() -> None:
    wanted = definition(
        service={
            "loadBalancers": [
                {"targetGroupArn": TARGET_GROUP, "containerName": "api", "containerPort": 8080},
                {"targetGroupArn": TARGET_GROUP, "containerName": "web", "containerPort": 9090},
            ]
        }
    )
    checks = checks_of(wanted, cluster="prod")
    assert findings(wanted, checks, all_found(checks)) == [
        f"target group {TARGET_GROUP} names container api:8080, which the task definition does"
        " not have",
        f"target group {TARGET_GROUP} names container web:9090, which the task definition does"
        " not have",
    ]


def test_a_log_group_ecs_creates_is_not_asked_for_and_another_region_is_asked_there() -> None:
    def logging(options: dict[str, str]) -> DesiredDefinition:
        container = {"name": "web", "logConfiguration": {"logDriver": "awslogs"}}
        container["logConfiguration"]["options"] = {"awslogs-group": "/ecs/web", **options}  # type: ignore[index]
        return definition(task={"containerDefinitions": [container]}, service={})

    created = checks_of(logging({"awslogs-create-group": "true"}), cluster="c")
    assert [c.lookup.kind for c in created] == ["cluster"]
    elsewhere = checks_of(logging({"awslogs-region": "eu-west-1"}), cluster="c")
    assert elsewhere[1].lookup == Lookup("log_group", "/ecs/web", region="eu-west-1")
    assert elsewhere[1].subject == "log group /ecs/web in eu-west-1"


def test_secrets_without_an_execution_role_are_a_finding_of_their_own() -> None:
    wanted = definition()
    task = {k: v for k, v in wanted.task_definition.items() if k != "executionRoleArn"}
    wanted = definition(task=task, service={})
    checks = checks_of(wanted, cluster="prod")
    assert findings(wanted, checks, all_found(checks)) == [
        "container web has secrets but the task definition has no executionRoleArn to read"
        " them with"
    ]


def test_log_secret_options_and_repository_credentials_are_checked_like_secrets() -> None:
    container = {
        "name": "web",
        "repositoryCredentials": {"credentialsParameter": SECRET},
        "logConfiguration": {
            "logDriver": "splunk",
            "secretOptions": [{"name": "splunk-token", "valueFrom": "/web/splunk"}],
        },
    }
    checks = checks_of(definition(task={"containerDefinitions": [container]}), cluster="c")
    assert [c.subject for c in checks if c.lookup.kind in {"secret", "parameter"}] == [
        "parameter /web/splunk (container web, log option splunk-token)",
        f"secret {SECRET} (container web, repository credentials)",
    ]


@pytest.mark.parametrize(
    ("value_from", "expected"),
    [
        (SECRET, Lookup("secret", SECRET, region="eu-west-1")),
        (f"{SECRET}:password:AWSCURRENT:", Lookup("secret", SECRET, region="eu-west-1")),
        (PARAMETER, Lookup("parameter", PARAMETER, region="us-east-1")),
        ("web-db", Lookup("parameter", "web-db")),
        ("/web/db", Lookup("parameter", "/web/db")),
    ],
)
def test_a_value_from_points_at_a_secret_or_a_parameter(value_from: str, expected: Lookup) -> None:
    assert secret_lookup(value_from) == expected


def test_a_role_is_asked_for_by_its_name_whatever_its_path() -> None:
    assert role_name(EXECUTION_ROLE) == "web-execution"
    assert role_name("web-task") == "web-task"


@pytest.mark.parametrize(
    "document",
    [
        TRUSTED,
        json.dumps(TRUSTED),
        urllib.parse.quote(json.dumps(TRUSTED)),
        {
            "Statement": {
                "Effect": "Allow",
                "Principal": {"Service": ["ec2.amazonaws.com", ECS_TASKS]},
                "Action": ["sts:TagSession", "sts:*"],
                "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}},
            }
        },
        {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "sts:AssumeRole"}]},
    ],
    ids=["mapping", "json", "url-encoded", "list-wildcard-condition", "anyone"],
)
def test_a_trust_policy_that_lets_ecs_tasks_assume_the_role(document: Any) -> None:
    assert trusts(document, ECS_TASKS)


@pytest.mark.parametrize(
    "document",
    [
        None,
        "not json",
        {
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "ec2.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ]
        },
        {
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": ECS_TASKS}, "Action": "sts:TagSession"}
            ]
        },
        {
            "Statement": [
                *TRUSTED["Statement"],
                {"Effect": "Deny", "Principal": {"Service": ECS_TASKS}, "Action": "sts:*"},
            ]
        },
    ],
    ids=["none", "garbage", "other-service", "other-action", "denied"],
)
def test_a_trust_policy_that_does_not(document: Any) -> None:
    assert not trusts(document, ECS_TASKS)


def test_a_definition_naming_too_many_things_is_refused_unasked() -> None:
    """A pusher cannot make one verification send thousands of calls."""
    secrets = [{"name": f"S{n}", "valueFrom": f"/web/{n}"} for n in range(MAX_LOOKUPS)]
    task = {"containerDefinitions": [{"name": "web", "secrets": secrets}]}
    checks = checks_of(definition(task=task, service={}), cluster="prod")
    assert too_many(checks) == f"the definition names 201 things to verify, more than {MAX_LOOKUPS}"
    assert too_many(checks[:MAX_LOOKUPS]) is None
