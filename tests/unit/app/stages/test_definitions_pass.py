"""Whole passes of an app with `definitions`, on the fakes: a change of the files deploys
without a rebuild, drift is shown (alert) or deployed over (heal), ignored service fields
are never sent, and a bad file writes nothing."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import replace
from typing import Any

from reconciler.app.stages.pipeline import Next, run_pass
from reconciler.decisions.verification import Answer, Lookup, State
from reconciler.errors import DefinitionError
from tests.support.passes import Pass, a_pass

FOLDER = "deploy/ecs"


def task_file(*, memory: int = 512, level: str = "info") -> bytes:
    return json.dumps(
        {
            "family": "web",
            "containerDefinitions": [
                {
                    "name": "app",
                    "image": "{{ image }}",
                    "memory": memory,
                    "environment": [{"name": "LOG_LEVEL", "value": level}],
                },
                {"name": "sidecar", "image": "public.test/sidecar:1"},
            ],
        }
    ).encode()


def with_files(*, service: dict[str, Any] | None = None, **task: Any) -> Pass:
    run = a_pass(definitions=FOLDER, drift=task.pop("drift", "alert"))
    run.git.files[f"{FOLDER}/task-definition.json"] = task_file(**task)
    if service is not None:
        run.git.files[f"{FOLDER}/service.json"] = json.dumps(service).encode()
    return run


def live(run: Pass) -> dict[str, Any]:
    return run.ecs.definitions[run.live_task_definition()]


def live_app(run: Pass) -> dict[str, Any]:
    container: dict[str, Any] = live(run)["containerDefinitions"][0]
    return container


async def console_edit(run: Pass, **changes: Any) -> None:
    """What an edit in the console does: a new revision of the live one, the service on it."""
    edited = json.loads(json.dumps(live(run)))
    edited["containerDefinitions"][0].update(changes)
    arn = await run.ecs.register_task_definition(edited, [])
    await run.ecs.update_service(cluster="cluster", service="web", task_definition=arn)
    await run.ecs.describe_service("cluster", "web")  # its rollout completes


async def test_the_first_pass_registers_the_files_not_a_copy_of_live() -> None:
    run = with_files(memory=1024)
    assert await run_pass(run.session, woken=True) is Next.WAIT
    assert len(run.ecs.registered) == 1
    assert live_app(run)["memory"] == 1024
    assert live_app(run)["image"] == run.image()
    assert run.memory.definition is not None


async def test_a_definition_change_deploys_once_without_a_rebuild() -> None:
    """Memory and environment changed in a commit whose image is already built: one
    registration and one service update, no build."""
    run = with_files()
    await run_pass(run.session, woken=True)
    builds = len(run.docker.builds)
    run.git.files[f"{FOLDER}/task-definition.json"] = task_file(memory=2048, level="debug")
    await run_pass(run.session, woken=True)
    await run_pass(run.session, woken=True)
    assert len(run.docker.builds) == builds
    assert len(run.ecs.registered) == 2
    assert live_app(run)["memory"] == 2048
    assert live_app(run)["environment"] == [{"name": "LOG_LEVEL", "value": "debug"}]


async def test_an_unchanged_definition_writes_nothing_on_later_passes() -> None:
    run = with_files(service={"healthCheckGracePeriodSeconds": 30})
    await run_pass(run.session, woken=True)
    registered, updates = list(run.ecs.registered), list(run.ecs.updates)
    for _ in range(3):
        await run_pass(run.session, woken=True)
    assert (run.ecs.registered, run.ecs.updates) == (registered, updates)


async def test_a_console_edit_is_shown_as_drift_and_nothing_is_written_with_alert() -> None:
    run = with_files()
    await run_pass(run.session, woken=True)
    await console_edit(run, memory=4096)
    registered = list(run.ecs.registered)
    await run_pass(run.session, woken=True)
    assert run.ecs.registered == registered
    assert live_app(run)["memory"] == 4096
    assert run.status.drift is not None
    assert run.status.drift.fields == ("containerDefinitions[app].memory",)
    assert run.status.drift.changes == ("containerDefinitions[app].memory: 4096 -> 512",)
    assert run.status.to_json()["drift"]["fields"] == ["containerDefinitions[app].memory"]
    assert run.sample("reconciler_drift", app="web") == 1
    since = run.status.drift.since
    await run_pass(run.session, woken=True)
    assert run.status.drift.since == since  # the same drift, seen since then


async def test_a_console_edit_is_reverted_with_heal() -> None:
    run = with_files(drift="heal")
    await run_pass(run.session, woken=True)
    await console_edit(run, memory=4096)
    await run_pass(run.session, woken=True)
    assert live_app(run)["memory"] == 512
    assert len(run.ecs.registered) == 3  # ours, the console's, ours again
    await run_pass(run.session, woken=True)
    assert run.status.drift is None
    assert run.sample("reconciler_drift", app="web") == 0


async def test_ignored_service_fields_are_never_sent() -> None:
    """desiredCount belongs to autoscaling by default: an autoscaled service is never reset."""
    run = with_files(service={"desiredCount": 1, "healthCheckGracePeriodSeconds": 30})
    await run_pass(run.session, woken=True)
    assert run.ecs.settings_sent == [{"healthCheckGracePeriodSeconds": 30}]
    assert run.ecs.state is not None
    run.ecs.state = replace(
        run.ecs.state, settings={**run.ecs.state.settings, "desiredCount": 7}
    )  # autoscaling scaled it out
    await run_pass(run.session, woken=True)
    assert run.ecs.settings_sent == [{"healthCheckGracePeriodSeconds": 30}]


async def test_a_service_setting_changed_behind_our_back_is_drift() -> None:
    run = with_files(service={"healthCheckGracePeriodSeconds": 30}, drift="heal")
    await run_pass(run.session, woken=True)
    assert run.ecs.state is not None
    run.ecs.state = replace(run.ecs.state, settings={"healthCheckGracePeriodSeconds": 0})
    await run_pass(run.session, woken=True)
    assert run.ecs.settings_sent[-1] == {"healthCheckGracePeriodSeconds": 30}
    assert len(run.ecs.updates) == 2


async def test_a_bad_file_writes_nothing() -> None:
    run = with_files()
    run.git.files[f"{FOLDER}/task-definition.json"] = b'{"family": "web", "cpu": 1}'
    try:
        await run_pass(run.session, woken=True)
    except DefinitionError as exc:
        assert str(exc) == (
            "deploy/ecs/task-definition.json: cpu: expected a string, got the number 1"
        )
    else:  # pragma: no cover
        raise AssertionError("a bad definition was accepted")
    assert (run.ecs.registered, run.ecs.updates, run.docker.builds) == ([], [], [])


class Verifier:
    """AWS as the verification sees it: everything found, roles trusting ecs-tasks, but
    for what `missing` names; every question kept."""

    def __init__(self, *missing: str) -> None:
        self.missing = set(missing)
        self.asked: list[Lookup] = []

    async def answers(self, lookups: Collection[Lookup]) -> dict[Lookup, Answer]:
        self.asked.extend(lookups)
        trust = {
            "Statement": {
                "Effect": "Allow",
                "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        }
        return {
            lookup: Answer(State.MISSING)
            if lookup.name in self.missing
            else Answer(State.FOUND, trust_policy=trust)
            for lookup in lookups
        }


async def test_a_definition_that_does_not_verify_builds_registers_and_updates_nothing() -> None:
    run = with_files()
    verifier = Verifier("cluster")
    run.session.io = replace(run.session.io, verifier=verifier)
    try:
        await run_pass(run.session, woken=True)
    except DefinitionError as exc:
        assert str(exc) == f"not deploying {run.ctx.revision[:12]}: cluster cluster does not exist"
    else:  # pragma: no cover
        raise AssertionError("a definition naming a missing cluster was deployed")
    assert (run.ecs.registered, run.ecs.updates, run.docker.builds) == ([], [], [])
    assert run.memory.attempt is None

    verifier.missing.clear()  # the cluster made
    assert await run_pass(run.session, woken=True) is Next.WAIT
    assert len(run.ecs.registered) == 1


async def test_only_a_deploy_is_verified_not_a_pass_in_sync() -> None:
    run = with_files()
    verifier = Verifier()
    run.session.io = replace(run.session.io, verifier=verifier)
    await run_pass(run.session, woken=True)
    asked = len(verifier.asked)
    assert asked == 1  # the cluster: the files name nothing else
    await run_pass(run.session, woken=True)
    assert len(verifier.asked) == asked


async def test_a_release_verifies_every_service_before_its_first_moves() -> None:
    """web and worker, each with its folder: the worker's names a missing role, so the
    release stops before anything is built, registered or updated, with the service named;
    a worker file that does not render stops it the same way."""
    run = a_pass(definitions=FOLDER, services=["web", "worker"])
    run.git.files[f"{FOLDER}/web/task-definition.json"] = task_file()
    worker = json.loads(task_file())
    worker["family"] = "worker"
    worker["executionRoleArn"] = "arn:aws:iam::123456789012:role/worker-exec"
    run.git.files[f"{FOLDER}/worker/task-definition.json"] = json.dumps(worker).encode()
    run.session.io = replace(run.session.io, verifier=Verifier("worker-exec"))
    try:
        await run_pass(run.session, woken=True)
    except DefinitionError as exc:
        assert str(exc) == (
            f"not deploying {run.ctx.revision[:12]}: worker: execution role "
            "arn:aws:iam::123456789012:role/worker-exec does not exist"
        )
    else:  # pragma: no cover
        raise AssertionError("a release whose worker names a missing role was deployed")
    assert (run.ecs.registered, run.ecs.updates, run.docker.builds) == ([], [], [])

    run.git.files[f"{FOLDER}/worker/task-definition.json"] = b'{"family": "worker", "cpu": 1}'
    try:
        await run_pass(run.session, woken=True)
    except DefinitionError as exc:
        assert str(exc).startswith(f"{FOLDER}/worker/task-definition.json: cpu:"), str(exc)
    else:  # pragma: no cover
        raise AssertionError("a release whose worker file is bad was deployed")
    assert (run.ecs.registered, run.ecs.updates, run.docker.builds) == ([], [], [])
