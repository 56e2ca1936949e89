"""What to verify of a rendered definition before it is registered (SPEC 19), and the
one-line findings AWS's answers make of it.

A task that cannot start because its role, secret or log group is missing is found by ECS
only mid-rollout (`ResourceInitializationError`); these checks find it before anything is
written. Pure: `checks_of` says which questions to ask AWS (Lookup), the adapter asks them
(adapters/verification.py), `findings` turns the answers into lines such as
`task role arn:aws:iam::123:role/web-task does not exist`. A check that could not be made
(access denied) is a finding too: it is never passed silently.
"""

from __future__ import annotations

import enum
import fnmatch
import json
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from reconciler.decisions.definitions import DesiredDefinition

Kind = Literal[
    "cluster", "role", "parameter", "secret", "log_group", "target_group", "capacity_provider"
]
# The IAM permission each kind of lookup needs, said when it is denied.
PERMISSIONS: Mapping[Kind, str] = {
    "cluster": "ecs:DescribeClusters",
    "role": "iam:GetRole",
    "parameter": "ssm:GetParameter",
    "secret": "secretsmanager:DescribeSecret",
    "log_group": "logs:DescribeLogGroups",
    "target_group": "elasticloadbalancing:DescribeTargetGroups",
    "capacity_provider": "ecs:DescribeCapacityProviders",
}
ECS_TASKS = "ecs-tasks.amazonaws.com"
# A pusher writes the definition: past this many distinct things to look up it is refused
# unasked, so a definition cannot make the daemon send thousands of calls. ECS's own limit
# (64 KiB a task definition) keeps a real one far below.
MAX_LOOKUPS = 200
# Capacity providers every account has; DescribeCapacityProviders does not list them.
BUILT_IN_PROVIDERS = frozenset({"FARGATE", "FARGATE_SPOT"})


@dataclass(frozen=True)
class Lookup:
    """One question for AWS: does `name` of this kind exist (and what is it like)?"""

    kind: Kind
    name: str  # as the API takes it: a role's name, a parameter's name or ARN, a secret's ARN
    region: str = ""  # where it lives when not in the app's region (an ARN's or awslogs-region)


@dataclass(frozen=True)
class Check:
    """A lookup, and how a finding about it names the thing (`task role arn:...`)."""

    lookup: Lookup
    subject: str
    hint: str = ""  # said after "does not exist": how to fix it
    trusted_by: str = ""  # a role: the service principal its trust policy must allow


class State(enum.Enum):
    FOUND = "found"
    MISSING = "missing"
    UNUSABLE = "unusable"  # there, but not usable as it is (an INACTIVE cluster)
    DENIED = "denied"  # the identity may not ask: the check could not be made
    REFUSED = "refused"  # AWS refused the question itself (a malformed ARN)


@dataclass(frozen=True)
class Answer:
    state: State
    # UNUSABLE: what is wrong ("is INACTIVE"); DENIED, REFUSED: AWS's error, one line.
    detail: str = ""
    # A role found: its AssumeRolePolicyDocument, as a mapping or as (URL-encoded) JSON.
    trust_policy: Any = None


def checks_of(definition: DesiredDefinition, *, cluster: str) -> tuple[Check, ...]:
    """Every lookup verifying `definition` needs, for a service in `cluster`."""
    task, service = definition.task_definition, definition.service
    return (
        Check(Lookup("cluster", cluster), f"cluster {cluster}"),
        *_roles(task),
        *_secrets(task),
        *_log_groups(task),
        *_target_groups(service),
        *_capacity_providers(service),
    )


def too_many(checks: Sequence[Check]) -> str | None:
    """Why the checks are not made at all, if there are too many to make."""
    count = len({check.lookup for check in checks})
    if count > MAX_LOOKUPS:
        return f"the definition names {count} things to verify, more than {MAX_LOOKUPS}"
    return None


def findings(
    definition: DesiredDefinition, checks: Sequence[Check], answers: Mapping[Lookup, Answer]
) -> list[str]:
    """One line per problem: each check AWS's answer fails, then what the definition gets
    wrong on its own (a target group naming a container port it does not have)."""
    lines = [line for check in checks if (line := finding(check, answers[check.lookup]))]
    lines.extend(_unanswerable(definition))
    return list(dict.fromkeys(lines))  # a role used twice is said once


def finding(check: Check, answer: Answer) -> str | None:
    """What is wrong with `check` given AWS's `answer`; None when nothing is."""
    subject = check.subject
    match answer.state:
        case State.MISSING:
            return f"{subject} does not exist" + (f" ({check.hint})" if check.hint else "")
        case State.UNUSABLE:
            return f"{subject} {answer.detail}"
        case State.DENIED:
            permission = PERMISSIONS[check.lookup.kind]
            return (
                f"{subject} could not be checked: {answer.detail} (needs a human: allow"
                f" {permission} to the app's identity)"
            )
        case State.REFUSED:
            return f"{subject} could not be checked: {answer.detail}"
    if check.trusted_by and not trusts(answer.trust_policy, check.trusted_by):
        return f"{subject} is not trusted by {check.trusted_by}"
    return None


def trusts(document: Any, service: str) -> bool:
    """Whether a role's trust policy lets `service` assume it: an Allow statement for
    sts:AssumeRole with that service (or anyone) as principal, and no unconditional Deny
    of it. A Condition on an Allow (aws:SourceAccount, say) is taken as met: ECS's own
    calls meet the conditions AWS documents for it."""
    policy = _policy(document)
    if policy is None:
        return False
    statements = policy.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list):
        return False
    applying = [s for s in statements if isinstance(s, dict) and _assumes(s, service)]
    allowed = any(s.get("Effect") == "Allow" for s in applying)
    denied = any(s.get("Effect") == "Deny" and not s.get("Condition") for s in applying)
    return allowed and not denied


def role_name(arn: str) -> str:
    """The name GetRole takes: the last part of `arn:aws:iam::123:role/path/name`, or the
    name itself (ECS takes a task role's short name too)."""
    return arn.rsplit("/", 1)[-1] if arn.startswith("arn:") else arn


def secret_lookup(value_from: str) -> Lookup:
    """Where a `valueFrom` points: a Secrets Manager secret by ARN (a `:json-key:stage:id`
    suffix dropped: the secret is what must exist), else an SSM parameter by ARN or name.
    An ARN's region is asked there (ECS reads it there)."""
    parts = value_from.split(":")
    if parts[0] == "arn" and len(parts) >= 7 and parts[2] == "secretsmanager":
        return Lookup("secret", ":".join(parts[:7]), region=parts[3])
    if parts[0] == "arn" and len(parts) >= 6 and parts[2] == "ssm":
        return Lookup("parameter", value_from, region=parts[3])
    return Lookup("parameter", value_from)


def _roles(task: Mapping[str, Any]) -> Iterator[Check]:
    for key, what in (("taskRoleArn", "task role"), ("executionRoleArn", "execution role")):
        arn = task.get(key)
        if isinstance(arn, str) and arn:
            yield Check(Lookup("role", role_name(arn)), f"{what} {arn}", trusted_by=ECS_TASKS)


def _containers(task: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    listed = task.get("containerDefinitions") or []
    return [c for c in listed if isinstance(c, Mapping)]


def _secrets(task: Mapping[str, Any]) -> Iterator[Check]:
    for container in _containers(task):
        name = container.get("name", "?")
        log = container.get("logConfiguration") or {}
        references = [
            (secret.get("valueFrom"), secret.get("name"))
            for secret in container.get("secrets") or []
        ]
        references += [
            (option.get("valueFrom"), f"log option {option.get('name')}")
            for option in log.get("secretOptions") or []
        ]
        credentials = (container.get("repositoryCredentials") or {}).get("credentialsParameter")
        if credentials:
            references.append((credentials, "repository credentials"))
        for value_from, used_as in references:
            if isinstance(value_from, str) and value_from:
                lookup = secret_lookup(value_from)
                kind = "secret" if lookup.kind == "secret" else "parameter"
                yield Check(lookup, f"{kind} {value_from} (container {name}, {used_as})")


def _log_groups(task: Mapping[str, Any]) -> Iterator[Check]:
    for container in _containers(task):
        log = container.get("logConfiguration") or {}
        options = log.get("options") or {}
        group = options.get("awslogs-group")
        if log.get("logDriver") != "awslogs" or not group:
            continue
        if str(options.get("awslogs-create-group", "")).lower() == "true":
            continue  # ECS creates it (the execution role needs logs:CreateLogGroup)
        region = str(options.get("awslogs-region") or "")
        where = f" in {region}" if region else ""
        yield Check(
            Lookup("log_group", str(group), region=region),
            f"log group {group}{where}",
            hint="set awslogs-create-group or create it",
        )


def _target_groups(service: Mapping[str, Any]) -> Iterator[Check]:
    for balancer in service.get("loadBalancers") or []:
        arn = balancer.get("targetGroupArn")
        if isinstance(arn, str) and arn:
            yield Check(Lookup("target_group", arn), f"target group {arn}")


def _capacity_providers(service: Mapping[str, Any]) -> Iterator[Check]:
    for item in service.get("capacityProviderStrategy") or []:
        name = item.get("capacityProvider")
        if isinstance(name, str) and name and name not in BUILT_IN_PROVIDERS:
            yield Check(Lookup("capacity_provider", name), f"capacity provider {name}")


def _unanswerable(definition: DesiredDefinition) -> Iterator[str]:
    """Problems the definition has on its own, whatever AWS holds."""
    task = definition.task_definition
    ports = {
        (container.get("name"), mapping.get("containerPort"))
        for container in _containers(task)
        for mapping in container.get("portMappings") or []
    }
    for balancer in definition.service.get("loadBalancers") or []:
        name, port = balancer.get("containerName"), balancer.get("containerPort")
        if (name, port) not in ports:
            what = (
                f"target group {balancer['targetGroupArn']}"
                if balancer.get("targetGroupArn")
                else f"load balancer {balancer.get('loadBalancerName')}"
            )
            yield f"{what} names container {name}:{port}, which the task definition does not have"
    if not task.get("executionRoleArn"):
        for container in _containers(task):
            if container.get("secrets"):
                yield (
                    f"container {container.get('name')} has secrets but the task definition"
                    " has no executionRoleArn to read them with"
                )


def _policy(document: Any) -> Mapping[str, Any] | None:
    """A trust policy as a mapping: as given, or parsed from JSON, URL-encoded or not
    (IAM's query API sends it URL-encoded; botocore decodes it for GetRole, others not)."""
    if isinstance(document, Mapping):
        return document
    if not isinstance(document, str):
        return None
    for text in (document, urllib.parse.unquote(document)):
        try:
            parsed = json.loads(text)
        except ValueError:
            continue
        return parsed if isinstance(parsed, Mapping) else None
    return None


def _assumes(statement: Mapping[str, Any], service: str) -> bool:
    """Whether the statement is about `service` calling sts:AssumeRole (wildcards as IAM
    matches them: case-insensitive actions, `*` and `?`)."""
    actions = _strings(statement.get("Action"))
    if not any(fnmatch.fnmatchcase("sts:assumerole", a.lower()) for a in actions):
        return False
    principal = statement.get("Principal")
    if principal == "*":
        return True
    if not isinstance(principal, Mapping):
        return False
    return service in _strings(principal.get("Service")) or "*" in _strings(principal.get("AWS"))


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []
