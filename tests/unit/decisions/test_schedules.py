"""What a release moves in a rule or a schedule (SPEC 20), and what it sends back."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.decisions.schedules import (
    ScheduleRef,
    Target,
    ecs_targets,
    moves,
    parse_ref,
    schedule_target,
    schedule_with,
    targets_with,
)

NEW = {"web": "arn:aws:ecs:r:1:task-definition/web:9"}


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("rule/nightly-report", ScheduleRef("rule", "nightly-report")),
        ("schedule/default/cleanup", ScheduleRef("schedule", "cleanup", group="default")),
    ],
)
def test_a_schedule_is_a_rule_or_a_group_and_name(text: str, ref: ScheduleRef) -> None:
    """Both shapes parse, and print back as written."""
    assert parse_ref(text) == ref
    assert str(ref) == text


@pytest.mark.parametrize("text", ["nightly", "rule/", "schedule/cleanup", "rule/a b", "x/y"])
def test_anything_else_is_refused_naming_both_shapes(text: str) -> None:
    """A bad entry says what it is and what is expected."""
    with pytest.raises(ValueError, match=r"rule/<name> or schedule/<group>/<name>"):
        parse_ref(text)


def test_only_targets_of_the_apps_families_that_lag_are_moved() -> None:
    """A target of another family, or already on the release, is left alone."""
    targets = [
        Target("a", "arn:aws:ecs:r:1:task-definition/web:3"),
        Target("b", "arn:aws:ecs:r:1:task-definition/other:3"),
        Target("c", NEW["web"]),
    ]
    assert moves(targets, NEW) == {"a": ("arn:aws:ecs:r:1:task-definition/web:3", NEW["web"])}


def test_put_targets_sends_the_moved_targets_whole_with_only_the_arn_changed() -> None:
    """Every other field (role, input, count, network) goes back as it came; the listing
    given is not changed."""
    listed: list[dict[str, Any]] = [
        {
            "Id": "a",
            "Arn": "cluster",
            "RoleArn": "role",
            "Input": "{}",
            "EcsParameters": {"TaskDefinitionArn": "web:3", "TaskCount": 2},
        },
        {"Id": "lambda", "Arn": "fn"},
    ]
    assert [t.id for t in ecs_targets(listed)] == ["a"]
    sent = targets_with(listed, {"a": "web:9"})
    assert sent == [{**listed[0], "EcsParameters": {"TaskDefinitionArn": "web:9", "TaskCount": 2}}]
    assert listed[0]["EcsParameters"]["TaskDefinitionArn"] == "web:3"


def test_update_schedule_sends_every_field_it_takes_back() -> None:
    """Defaults AWS filled in (RetryPolicy, the timezone) go back too; read-only fields
    (Arn, CreationDate) do not."""
    got: dict[str, Any] = {
        "Arn": "arn",
        "CreationDate": "then",
        "Name": "cleanup",
        "GroupName": "default",
        "ScheduleExpression": "rate(1 day)",
        "ScheduleExpressionTimezone": "UTC",
        "FlexibleTimeWindow": {"Mode": "OFF"},
        "Target": {
            "Arn": "cluster",
            "RoleArn": "role",
            "RetryPolicy": {"MaximumRetryAttempts": 185},
            "EcsParameters": {"TaskDefinitionArn": "web:3"},
        },
    }
    assert schedule_target(got) == [Target("", "web:3")]
    fields = {"Name", "GroupName", "ScheduleExpression", "ScheduleExpressionTimezone"}
    request = schedule_with(got, "web:9", fields=fields | {"FlexibleTimeWindow", "Target"})
    assert request == {
        **{k: v for k, v in got.items() if k not in {"Arn", "CreationDate"}},
        "Target": {**got["Target"], "EcsParameters": {"TaskDefinitionArn": "web:9"}},
    }
