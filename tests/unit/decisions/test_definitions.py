"""Definition files: rendered in a sandbox, checked against the ECS API's own input shapes,
the managed containers' image forced; every problem one line with the file and JSON path."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reconciler.adapters.ecs_shapes import input_shapes
from reconciler.decisions.definitions import service_settings_of, task_definition_of
from reconciler.decisions.templates import NeedLookup, TemplateError, render_template
from reconciler.errors import DefinitionError

TASK_SHAPES, TASK_ROOT = input_shapes("RegisterTaskDefinition")
SERVICE_SHAPES, SERVICE_ROOT = input_shapes("UpdateService")
FILE = "deploy/ecs/task-definition.json"
IMAGE = "127.0.0.1:5000/web:" + "a" * 40


def task(document: Any, *, containers: tuple[str, ...] = ()) -> dict[str, Any]:
    definition, _ = task_definition_of(
        json.dumps(document) if not isinstance(document, str) else document,
        file=FILE,
        shapes=TASK_SHAPES,
        root=TASK_ROOT,
        image=IMAGE,
        containers=containers,
        repository="web",
    )
    return definition


def refused(document: Any) -> str:
    with pytest.raises(DefinitionError) as caught:
        task(document)
    message = str(caught.value)
    assert "\n" not in message
    return message


WEB = {"name": "web", "image": "127.0.0.1:5000/web:old", "memory": 512}
SIDECAR = {"name": "envoy", "image": "public.ecr.aws/envoy:1.29"}


def test_the_managed_container_runs_the_deployed_image_whatever_the_file_says() -> None:
    """The file may name any tag; the image the pass deploys wins, and sidecars keep theirs."""
    definition = task({"family": "web", "containerDefinitions": [WEB, SIDECAR]})
    images = {c["name"]: c["image"] for c in definition["containerDefinitions"]}
    assert images == {"web": IMAGE, "envoy": "public.ecr.aws/envoy:1.29"}


def test_containers_named_in_the_config_are_the_managed_ones() -> None:
    both = {"family": "web", "containerDefinitions": [WEB, SIDECAR]}
    definition = task(both, containers=("envoy",))
    images = {c["name"]: c["image"] for c in definition["containerDefinitions"]}
    assert images == {"web": "127.0.0.1:5000/web:old", "envoy": IMAGE}


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ('{"family": "web",', f"{FILE}:1:18: not valid JSON: Expecting property name"),
        (
            {"family": "web", "containerDefinitions": [{**WEB, "memroy": 1}]},
            f"{FILE}: containerDefinitions[0].memroy: unknown field (did you mean 'memory'?)",
        ),
        (
            {"family": "web", "containerDefinitions": [{**WEB, "memory": "512"}]},
            f"{FILE}: containerDefinitions[0].memory: expected an integer, got the string '512'",
        ),
        (
            {"family": "web", "containerDefinitions": [{**WEB, "essential": "yes"}]},
            f"{FILE}: containerDefinitions[0].essential: expected true or false",
        ),
        (
            {"family": "web", "networkMode": "vpc", "containerDefinitions": [WEB]},
            f"{FILE}: networkMode: 'vpc' is not one of bridge, host, awsvpc, none",
        ),
        ({"containerDefinitions": [WEB]}, f"{FILE}: family: missing required field"),
        (
            {"family": "web", "containerDefinitions": [{**WEB, "environment": {"A": "1"}}]},
            f"{FILE}: containerDefinitions[0].environment: expected a list, got an object",
        ),
        (
            {"family": "web", "containerDefinitions": [SIDECAR]},
            f"{FILE}: containerDefinitions: no container's image is in repository 'web'",
        ),
        ([1], f"{FILE}: .: expected an object, got a list"),
    ],
    ids=["json", "unknown", "type", "bool", "enum", "required", "list", "unmanaged", "root"],
)
def test_a_file_that_does_not_fit_the_api_is_one_line_with_file_and_path(
    document: Any, expected: str
) -> None:
    assert refused(document).startswith(expected)


def test_service_json_holds_only_the_settings_an_app_owns_and_drops_ignored_ones() -> None:
    """desiredCount is autoscaling's by default: never sent, however the file says it."""
    text = json.dumps(
        {"desiredCount": 3, "healthCheckGracePeriodSeconds": 30, "enableExecuteCommand": True}
    )
    settings = service_settings_of(
        text, file="service.json", shapes=SERVICE_SHAPES, root=SERVICE_ROOT, ignore=["desiredCount"]
    )
    assert settings == {"healthCheckGracePeriodSeconds": 30, "enableExecuteCommand": True}
    for document, expected in [
        ({"taskDefinition": "web:3"}, "service.json: taskDefinition: not a setting service.json"),
        ({"forceNewDeployment": True}, "service.json: forceNewDeployment: not a setting"),
        ({"propagateTags": "ALL"}, "service.json: propagateTags: 'ALL' is not one of"),
        ({"desiredCount": "2"}, "service.json: desiredCount: expected an integer"),
    ]:
        with pytest.raises(DefinitionError, match=expected):
            service_settings_of(
                json.dumps(document),
                file="service.json",
                shapes=SERVICE_SHAPES,
                root=SERVICE_ROOT,
                ignore=(),
            )


VALUES = {"app": "web", "revision": "a" * 40, "image": IMAGE}


def render(text: str, lookups: dict[tuple[str, str], str] | None = None) -> str:
    return render_template(text, file="t.json", values=VALUES, lookups=lookups or {})


def test_a_template_sees_the_app_revision_image_and_looked_up_values() -> None:
    text = '{{ app }} {{ revision[:7] }} {{ image }} {{ ssm("/web/url") }} {{ secret_arn("db") }}'
    lookups = {("ssm", "/web/url"): "https://x", ("secret_arn", "db"): "arn:aws:sm:db-AbC"}
    assert render(text, lookups) == f"web aaaaaaa {IMAGE} https://x arn:aws:sm:db-AbC"


def test_a_lookup_not_made_yet_is_asked_for_not_guessed() -> None:
    with pytest.raises(NeedLookup) as caught:
        render('{{ env("LOG_LEVEL") }}')
    assert (caught.value.function, caught.value.name) == ("env", "LOG_LEVEL")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ nope }}", "t.json: template: 'nope' is undefined"),
        ("{{ app.__class__ }}", "t.json: template refused: access to attribute '__class__'"),
        ("{{ range(10) }}", "t.json: template: 'range' is undefined"),
        ("{% if %}", "t.json:1: template syntax: Expected an expression"),
        ('{{ "x" * 100000000 }}', "t.json: a product longer than 1000000"),
        ("{{ 9 ** 9999 }}", "t.json: an exponent above 64"),
        ("{{ ssm(1) }}", "t.json: ssm() takes a non-empty name"),
    ],
    ids=["undefined", "internals", "no-globals", "syntax", "huge-string", "huge-number", "name"],
)
def test_a_template_error_is_one_line_naming_the_file(text: str, expected: str) -> None:
    """Strict and sandboxed: a pusher's template cannot reach Python's internals, read an
    undefined name as empty, or make the daemon build something huge."""
    with pytest.raises(TemplateError) as caught:
        render(text)
    assert str(caught.value).startswith(expected)
    assert "\n" not in str(caught.value)
