"""A release of several services on the real stack (SPEC 20): one revision goes out to the
web and then the worker, each rollout awaited before the next; a worker that fails takes
the web back with it, as one release held; a daemon killed between the two goes on with
the release when it starts again.

Real git, dockerd, registry and the sandbox AWS: both services in one cluster, each with its
own task definition family, running the app's image.
"""

from __future__ import annotations

from typing import Any

from reconciler.sandbox.provision import provision_app
from reconciler.sandbox.scenario import Scenario
from tests.support.daemon_process import DaemonProcess
from tests.support.probes import eventually
from tests.support.world import World


def add_worker(world: World) -> str:
    """A second service of the app, `<app>-worker`, in a family of its own; the app's
    `services` lists the web first."""
    worker = f"{world.name}-worker"
    provision_app(
        endpoint_url=world.aws.endpoint_url,
        region=world.aws.region,
        cluster=world.cluster,
        service=worker,
        ecr_repository=world.name,
        family=worker,
        image=f"{world.registry}/{world.name}:bootstrap",
    )
    world.app_overrides["services"] = [world.name, worker]
    return worker


def image_of(world: World, service: str) -> str:
    ecs = world.ecs()
    arn = ecs.describe_services(cluster=world.cluster, services=[service])["services"][0][
        "taskDefinition"
    ]
    definition = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
    return str(next(c["image"] for c in definition["containerDefinitions"] if c["name"] == "app"))


def updates_since(world: World, seen: int) -> list[tuple[str, str]]:
    """(service, task definition) of each UpdateService of this World's cluster after the
    first `seen` of them, in the order they were sent."""
    calls = [c for c in world.aws.calls.logged("UpdateService") if c["cluster"] == world.cluster]
    return [(c["service"], c["taskDefinition"]) for c in calls[seen:]]


def family(task_definition: str) -> str:
    return task_definition.rsplit("/", 1)[-1].split(":", maxsplit=1)[0]


def parts(status: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["phase"] for p in status.get("parts", [])}


async def test_one_push_moves_web_then_worker_and_a_failing_worker_takes_the_web_back(
    world: World,
) -> None:
    """R1 reaches the web, then the worker, each in its own family, one `deployed` in
    history. R2's worker rollout fails: the web, already on R2, is put back on R1 and the
    release is held as one, one `rolled_back` for R2; nothing is deployed again."""
    worker = add_worker(world)
    first = world.first_commit
    async with world.daemon() as daemon:
        status = await daemon.wait_for(
            lambda s: s["phase"] == "InSync" and image_of(world, worker) == world.image(first),
            what="both services on the first revision",
        )
        web_updates = updates_since(world, 0)
        assert [service for service, _ in web_updates] == [world.name, worker]
        assert [family(td) for _, td in web_updates] == [world.name, worker]
        assert world.live_image() == world.image(first)
        assert parts(status) == {world.name: "InSync", worker: "InSync"}
        assert [(h["revision"], h["result"]) for h in status["history"]] == [(first, "deployed")]

        world.aws.rollouts.set_scenario(world.cluster, worker, Scenario("fail", after=0.3))
        second = world.repo.commit({"app.txt": "version 2\n"}, "second")
        await daemon.github_push()
        status = await daemon.wait_for(
            lambda s: (
                s["phase"] == "Failed"
                and s["desired"]["revision"] == second
                and bool(s["history"])
                and s["history"][0]["revision"] == second
            ),
            what="the release of the second revision failed",
        )
        sent = updates_since(world, len(web_updates))
        # The web got R2, the worker got R2 (and failed), the web was put back on R1.
        assert [service for service, _ in sent] == [world.name, worker, world.name]
        assert sent[2][1] == web_updates[0][1]
        await daemon.github_push()
        await daemon.wait_for(lambda s: s["phase"] == "Failed", what="still Failed")
        assert len(updates_since(world, 0)) == len(web_updates) + len(sent)

    assert world.live_image() == world.image(first)
    assert image_of(world, worker) == world.image(first)
    entries = [(h["revision"], h["result"]) for h in status["history"]]
    assert entries == [(second, "rolled_back"), (first, "deployed")]
    assert status["history"][0]["error"].startswith(f"release of {world.name}, {worker}: {worker}")
    assert "circuit breaker" in status["last_error"]
    assert parts(status)[worker] == "Failed"


async def test_a_worker_update_refused_for_good_fails_the_release_and_puts_the_web_back(
    world: World,
) -> None:
    """The worker's UpdateService is refused (AccessDenied): retrying does not fix that, so
    the release fails at once, the web goes back to what it ran, and the refused update is
    not sent again."""
    worker = add_worker(world)
    before = world.service()["taskDefinition"]
    world.aws.faults.inject(
        "UpdateService",
        times=1000,
        code="AccessDeniedException",
        message="not authorized to perform: ecs:UpdateService",
        where={"service": worker},
    )
    try:
        async with world.daemon() as daemon:
            status = await daemon.wait_for(
                lambda s: s["phase"] == "Failed" and bool(s["history"]),
                what="the release failed on the worker",
            )
            await daemon.github_push()
            await daemon.wait_for(lambda s: s["phase"] == "Failed", what="still Failed")
    finally:
        world.aws.faults.clear()
    assert [s for s, _ in updates_since(world, 0)] == [world.name, worker, world.name]
    assert world.service()["taskDefinition"] == before
    entry = status["history"][0]
    assert entry["result"] == "rolled_back"
    assert entry["error"].startswith(f"release of {world.name}, {worker}: {worker}: ")
    assert "AccessDenied" in entry["error"]
    assert parts(status)[worker] == "Failed"


async def test_a_daemon_killed_between_web_and_worker_goes_on_with_the_release(
    world: World, tmp_path: Any
) -> None:
    """The web runs R1 and the worker's UpdateService has not gone out (refused, then the
    daemon SIGKILLed): started again, the daemon deploys the worker, and R1 is one
    `deployed` release."""
    worker = add_worker(world)
    first = world.first_commit
    world.aws.rollouts.set_scenario(world.cluster, world.name, Scenario(after=0.5))
    config = world.write_config()
    daemon = DaemonProcess(config, tmp_path / "run1.log")
    await daemon.start()
    try:
        await eventually(
            lambda: [s for s, _ in updates_since(world, 0)] == [world.name],
            timeout=90,
            what="the web's UpdateService",
        )
        # Every UpdateService is throttled from now on: the worker's cannot go out (and,
        # throttling being what retrying fixes, the release waits rather than fails).
        world.aws.faults.inject("UpdateService", times=1000, code="ThrottlingException")
        await eventually(
            lambda: len(updates_since(world, 0)) > 1, timeout=60, what="the worker's refused"
        )
        assert world.live_image() == world.image(first)
        assert image_of(world, worker) != world.image(first)
    finally:
        daemon.kill()
        world.aws.faults.clear()

    again = DaemonProcess(config, tmp_path / "run2.log")
    await again.start()
    try:
        status = await again.wait_for(
            world.name,
            lambda s: s["phase"] == "InSync" and bool(s["history"]),
            timeout=90,
        )
    finally:
        again.stop()
    assert image_of(world, worker) == world.image(first)
    # The web's, the worker's refused (one or more), and the worker's after the restart.
    sent = [s for s, _ in updates_since(world, 0)]
    assert sent[0] == world.name and set(sent[1:]) == {worker}
    assert [(h["revision"], h["result"]) for h in status["history"]] == [(first, "deployed")]
    assert parts(status) == {world.name: "InSync", worker: "InSync"}
