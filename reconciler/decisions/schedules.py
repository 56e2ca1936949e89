"""Scheduled tasks that follow a release (SPEC 20): which targets of an EventBridge rule or
a Scheduler schedule name a task definition of the app, and the request that moves them,
every other field kept as AWS gave it. Pure: the adapter reads and writes.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

# An EventBridge rule (default bus) or a Scheduler schedule of a group, as AWS names them.
_RULE = re.compile(r"rule/([\w.-]{1,64})")
_SCHEDULE = re.compile(r"schedule/([\w.-]{1,64})/([\w.-]{1,64})")


@dataclass(frozen=True)
class ScheduleRef:
    """One entry of an app's `schedules`: `rule/<name>` or `schedule/<group>/<name>`."""

    kind: Literal["rule", "schedule"]
    name: str
    group: str = ""

    def __str__(self) -> str:
        if self.kind == "rule":
            return f"rule/{self.name}"
        return f"schedule/{self.group}/{self.name}"


def parse_ref(text: str) -> ScheduleRef:
    """The schedule `text` names; ValueError saying the two shapes it may take."""
    if match := _RULE.fullmatch(text):
        return ScheduleRef("rule", match[1])
    if match := _SCHEDULE.fullmatch(text):
        return ScheduleRef("schedule", match[2], group=match[1])
    raise ValueError(f"not a schedule: {text!r} (expected rule/<name> or schedule/<group>/<name>)")


def family_of(task_definition: str) -> str:
    """The family of a task definition ARN (or `family:revision`)."""
    return task_definition.rsplit("/", 1)[-1].split(":", 1)[0]


@dataclass(frozen=True)
class Target:
    """One ECS target: its id within the rule ("" for a schedule's one target) and the task
    definition it runs."""

    id: str
    task_definition: str


def ecs_targets(targets: Iterable[Mapping[str, Any]]) -> list[Target]:
    """The ECS targets among a rule's targets (ListTargetsByRule's `Targets`)."""
    found = []
    for target in targets:
        arn = (target.get("EcsParameters") or {}).get("TaskDefinitionArn")
        if arn:
            found.append(Target(str(target.get("Id", "")), str(arn)))
    return found


def schedule_target(schedule: Mapping[str, Any]) -> list[Target]:
    """The schedule's ECS target (GetSchedule's answer), if it has one."""
    arn = ((schedule.get("Target") or {}).get("EcsParameters") or {}).get("TaskDefinitionArn")
    return [Target("", str(arn))] if arn else []


def moves(targets: Iterable[Target], new: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Target id -> (what it runs, what it should run) for each target whose family is in
    `new` (family -> the release's task definition) and that does not run it yet."""
    wanted: dict[str, tuple[str, str]] = {}
    for target in targets:
        arn = new.get(family_of(target.task_definition))
        if arn is not None and arn != target.task_definition:
            wanted[target.id] = (target.task_definition, arn)
    return wanted


def targets_with(
    targets: Iterable[Mapping[str, Any]], arns: Mapping[str, str]
) -> list[dict[str, Any]]:
    """PutTargets' `Targets`: each target whose id is in `arns` as ListTargetsByRule gave
    it, only its TaskDefinitionArn changed. Targets not named are not sent (PutTargets
    leaves them as they are)."""
    changed = []
    for target in targets:
        arn = arns.get(str(target.get("Id", "")))
        if arn is not None:
            copied = copy.deepcopy(dict(target))
            copied["EcsParameters"]["TaskDefinitionArn"] = arn
            changed.append(copied)
    return changed


def schedule_with(
    schedule: Mapping[str, Any], arn: str, *, fields: Collection[str]
) -> dict[str, Any]:
    """UpdateSchedule's request: every field of GetSchedule's answer that UpdateSchedule
    takes (`fields`), sent back as it came (UpdateSchedule resets what is left out), only
    the target's TaskDefinitionArn changed."""
    request = {key: copy.deepcopy(value) for key, value in schedule.items() if key in fields}
    request["Target"]["EcsParameters"]["TaskDefinitionArn"] = arn
    return request
