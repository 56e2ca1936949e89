"""Build: the desired image, within the daemon's build slots, and beside it the test stage
from the same export; a failed build counts towards the revision's limit and is recorded
with its output, an unreachable engine counts nothing.
The app's build secrets are read for each build; one that cannot be read, or an engine that
cannot mount them, needs a human."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from structlog.testing import capture_logs

from reconciler.adapters.docker import SecretsNeedBuildKit
from reconciler.app.stages.build import (
    TestStage,
    _cache_sources,
    build,
    cache_image,
    stage_image,
)
from reconciler.decisions.model import Live, Phase, TestRun
from reconciler.decisions.plan import MAX_BUILD_ATTEMPTS
from reconciler.errors import BuildContextRefused, BuildFailed, DockerUnavailable, StalledError
from tests.support.fakes import REGISTRY
from tests.support.passes import NEWER, REVISION, Pass, a_pass

BUILD_SECONDS = "reconciler_build_seconds"


async def test_a_build_tags_the_desired_image() -> None:
    run = a_pass()
    run.observe()
    await build(run.ctx)
    assert run.docker.builds == [run.image()]
    assert run.status.phase is Phase.BUILDING
    assert run.timed(BUILD_SECONDS) == 1
    assert run.memory.build_failures == {}
    assert run.results() == []


@pytest.mark.parametrize(
    ("before", "phase"),
    [(0, Phase.BUILDING), (MAX_BUILD_ATTEMPTS - 1, Phase.FAILED)],
    ids=["a first failure", "the last allowed failure"],
)
async def test_a_failed_build_is_counted_and_recorded_with_its_output(
    before: int, phase: Phase
) -> None:
    """The app turns Failed only once the revision used up its attempts; other revisions'
    counts are left alone."""
    run = a_pass()
    run.memory.build_failures.update({REVISION: before, NEWER: 1})
    run.observe()
    output = [f"step {n:02}" for n in range(15)]
    failure = BuildFailed("RUN make exited 2", log_tail=output)
    run.docker.fail_next("build", failure)
    with pytest.raises(BuildFailed) as raised:
        await build(run.ctx)
    assert raised.value is failure
    assert run.written.build_failures == {REVISION: before + 1, NEWER: 1}
    assert run.results() == [(REVISION, "build_failed")]
    error = run.status.history[0].error or ""
    assert error.startswith("RUN make exited 2\n")
    assert "step 05" in error and "step 14" in error  # the last ten lines, no more
    assert "step 04" not in error
    assert run.status.phase is phase
    assert run.timed(BUILD_SECONDS) == 0


async def test_a_context_that_cannot_be_sent_is_a_failed_build() -> None:
    """Too big, or a .dockerignore Docker would refuse: counted like any failed build (the
    revision is held after its attempts), and nothing reaches the engine."""
    run = a_pass()
    run.memory.build_failures[REVISION] = MAX_BUILD_ATTEMPTS - 1
    run.observe()
    refused = BuildContextRefused("build context over build.max_context_mb = 1: ...")
    run.git.fail_next("export_context", refused)
    with pytest.raises(BuildContextRefused):
        await build(run.ctx)
    assert run.docker.builds == []
    assert run.written.build_failures == {REVISION: MAX_BUILD_ATTEMPTS}
    assert run.results() == [(REVISION, "build_failed")]
    assert (run.status.history[0].error or "").startswith("build context over")
    assert run.status.phase is Phase.FAILED


async def test_an_unreachable_engine_counts_for_nothing() -> None:
    run = a_pass()
    run.observe()
    run.docker.fail_next("build", DockerUnavailable("docker.sock: connection refused"))
    with pytest.raises(DockerUnavailable):
        await build(run.ctx)
    assert run.memory.build_failures == {}
    assert run.results() == []
    assert run.store.saves == 0


async def test_a_build_waits_for_a_free_build_slot() -> None:
    run = a_pass(build_slots=1)
    run.observe()
    slots = run.session.build_slots
    await slots.acquire()  # another app builds
    started = asyncio.create_task(build(run.ctx))
    await asyncio.sleep(0.05)
    assert run.docker.builds == []
    assert run.status.phase is not Phase.BUILDING
    slots.release()
    await asyncio.wait_for(started, 5)
    assert run.docker.builds == [run.image()]
    assert not slots.locked()  # the slot is given back


async def test_the_build_cache_comes_from_the_images_the_app_runs_in_its_repository() -> None:
    """Only images of the app's own repository serve as cache, never the one being built;
    the build asks the engine for them."""
    run = a_pass()
    observation = run.observe()
    images = {
        "app": f"{REGISTRY}/web:{'1' * 40}",
        "worker": f"{REGISTRY}/web:{'2' * 40}",
        "edge": run.image(),
        "other": f"{REGISTRY}/api:{'3' * 40}",
    }
    live = Live(service=observation.live.service, images=images)
    run.ctx.observation = dataclasses.replace(observation, live=live)
    assert _cache_sources(run.ctx) == [images["app"], images["worker"]]
    await build(run.ctx)
    (request,) = run.docker.requests
    assert list(request.cache_from) == [images["app"], images["worker"]]
    assert request.tag == run.image()


SECRETS = {"npmrc": {"file": "/etc/reconciler/npmrc"}, "db": {"ssm": "/prod/db/password"}}


def with_secrets() -> Pass:
    run = a_pass(build_secrets=SECRETS)
    run.secrets.values.update(
        {"file /etc/reconciler/npmrc": b"npmrc-value", "ssm /prod/db/password": b"db-value"}
    )
    run.observe()
    return run


async def test_the_build_gets_the_apps_secrets_read_for_it() -> None:
    """Read afresh for each build (a rotated secret is picked up), and kept out of the
    request's repr."""
    run = with_secrets()
    await build(run.ctx)
    await build(run.ctx)
    assert run.secrets.reads == [["db", "npmrc"], ["db", "npmrc"]]
    request = run.docker.requests[-1]
    assert dict(request.secrets) == {"npmrc": b"npmrc-value", "db": b"db-value"}
    assert "npmrc-value" not in repr(request)


async def test_an_app_without_build_secrets_reads_none() -> None:
    run = a_pass()
    run.observe()
    await build(run.ctx)
    assert run.secrets.reads == []
    assert dict(run.docker.requests[0].secrets) == {}


async def test_a_secret_that_cannot_be_read_stops_the_build_before_it_starts() -> None:
    """Needs a human: no build (the app never turns Building), no failed build counted."""
    run = with_secrets()
    del run.secrets.values["ssm /prod/db/password"]
    with pytest.raises(StalledError, match=r"build secret db \(ssm /prod/db/password\)"):
        await build(run.ctx)
    assert run.docker.builds == []
    assert run.status.phase is not Phase.BUILDING
    assert run.memory.build_failures == {}
    assert run.results() == []


async def test_secrets_on_a_classic_builder_need_a_human_and_name_the_app() -> None:
    run = with_secrets()
    refused = SecretsNeedBuildKit(
        "build_secrets (db, npmrc) need BuildKit, and builds use the classic builder"
        ' ([build].builder = "classic")'
    )
    run.docker.fail_next("build", refused)
    with pytest.raises(StalledError) as raised:
        await build(run.ctx)
    assert str(raised.value) == f"app web: {refused}"
    assert run.memory.build_failures == {}
    assert run.results() == []


def with_test_stage() -> Pass:
    run = a_pass(test={"command": ["npm", "test"], "target": "test"})
    run.observe()
    return run


def both_at_once(run: Pass) -> asyncio.Event:
    """Builds wait, once started, until both are under way (the event is set then)."""
    both = asyncio.Event()

    async def during(tag: str) -> None:
        if len(run.docker.builds) == 2:
            both.set()
        await asyncio.wait_for(both.wait(), 5)

    run.docker.during_build = during
    return both


async def test_the_test_stage_is_built_beside_the_production_image_from_one_export() -> None:
    """Both builds run at once from one export of the commit, each reading all of it; the
    test stage gets its own log line, like the production build's."""
    run = with_test_stage()
    both = both_at_once(run)
    with capture_logs() as logged:
        stage = await build(run.ctx)
    assert both.is_set()
    local = stage_image("web", REVISION)
    assert stage == TestStage(image=local)
    assert run.git.exports == 1
    assert run.docker.context_of == {run.image(): b"tar of " + REVISION.encode()} | {
        local: b"tar of " + REVISION.encode()
    }
    tested, production = run.docker.requests
    assert (production.tag, production.target) == (run.image(), "")
    assert (tested.tag, tested.target) == (local, "test")
    events = {e["event"]: e for e in logged}
    assert events["test_build_finished"]["image"] == local
    assert {"cached_steps", "seconds"} <= events["test_build_finished"].keys()
    assert {"cached_steps", "seconds"} <= events["build_finished"].keys()
    assert run.timed(BUILD_SECONDS) == 1


async def test_the_production_build_starts_once_the_test_stages_first_step_has() -> None:
    """The test stage leads, so the steps both share are looked up in its cache sources."""
    run = with_test_stage()
    local = stage_image("web", REVISION)
    first_step = run.docker.first_step_after[local] = asyncio.Event()
    building = asyncio.create_task(build(run.ctx))
    for _ in range(20):
        await asyncio.sleep(0)
    assert run.docker.builds == [local]
    first_step.set()
    assert await asyncio.wait_for(building, 5) == TestStage(image=local)
    assert run.docker.builds == [local, run.image()]


async def test_both_builds_take_one_build_slot() -> None:
    run = a_pass(build_slots=1, test={"command": ["npm", "test"], "target": "test"})
    run.observe()
    both_at_once(run)
    assert await asyncio.wait_for(build(run.ctx), 5) is not None


async def test_a_failed_production_build_stops_the_test_stage_and_is_counted() -> None:
    """As when the test stage came after it: the production build's failure is the pass's."""
    run = with_test_stage()
    started, stopped = asyncio.Event(), asyncio.Event()

    async def during(tag: str) -> None:
        if tag == run.image():
            await started.wait()  # fails once the test stage is under way
            return
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            stopped.set()
            raise

    run.docker.during_build = during
    run.docker.fail_next("build", BuildFailed("RUN npm ci exited 1", log_tail=["npm ERR!"]))
    with pytest.raises(BuildFailed, match="npm ci"):
        await asyncio.wait_for(build(run.ctx), 5)
    assert stopped.is_set()
    assert run.written.build_failures == {REVISION: 1}
    assert run.results() == [(REVISION, "build_failed")]


async def test_a_test_stage_that_does_not_build_is_its_outcome_not_a_failed_build() -> None:
    """The production image is built; the test (test.py) holds the revision for it."""
    run = with_test_stage()
    failure = BuildFailed("RUN npm ci exited 1", log_tail=["npm ERR!"])
    run.docker.fail_next("build test", failure)
    stage = await build(run.ctx)
    assert stage == TestStage(image=stage_image("web", REVISION), failure=failure)
    assert run.memory.build_failures == {}
    assert run.results() == []
    assert run.timed(BUILD_SECONDS) == 1


async def test_an_engine_gone_during_the_test_stage_is_the_passs_error_and_counts_nothing() -> None:
    run = with_test_stage()
    run.docker.fail_next("build test", DockerUnavailable("docker.sock: connection refused"))
    with pytest.raises(DockerUnavailable):
        await build(run.ctx)
    assert run.memory.build_failures == {}
    assert run.results() == []


async def test_without_a_test_target_only_the_production_image_is_built() -> None:
    run = a_pass(test={"command": ["npm", "test"]})
    run.observe()
    assert await build(run.ctx) is None
    assert run.docker.builds == [run.image()]


async def test_both_builds_take_the_test_stages_cache_image_as_cache_too() -> None:
    run = with_test_stage()
    await build(run.ctx)
    cache = f"{REGISTRY}/web:cache-test"
    assert [list(r.cache_from)[-1] for r in run.docker.requests] == [cache, cache]


async def test_a_test_target_no_tag_can_be_named_after_gets_no_cache_image() -> None:
    run = a_pass(test={"command": ["npm", "test"], "target": "Test Stage!"})
    run.observe()
    assert cache_image(run.ctx) is None
    await build(run.ctx)
    assert all(not r.cache_from or "cache-" not in r.cache_from[-1] for r in run.docker.requests)


async def test_what_is_done_with_the_test_stage_runs_while_the_production_build_goes_on() -> None:
    """`then` gets the stage as soon as it is built; its result is the build's outcome."""
    run = with_test_stage()
    local = stage_image("web", REVISION)
    production_started, done_with_stage = asyncio.Event(), asyncio.Event()

    async def during(tag: str) -> None:
        if tag == run.image():
            production_started.set()
            await asyncio.wait_for(done_with_stage.wait(), 5)  # still building meanwhile

    async def then(stage: TestStage) -> TestStage:
        await asyncio.wait_for(production_started.wait(), 5)
        done_with_stage.set()
        return dataclasses.replace(stage, run=TestRun(exit_code=0, timed_out=False, tail=()))

    run.docker.during_build = during
    stage = await build(run.ctx, then=then)
    assert stage == TestStage(image=local, run=TestRun(exit_code=0, timed_out=False, tail=()))


async def test_a_failed_production_build_stops_what_is_done_with_the_test_stage() -> None:
    run = with_test_stage()
    stopped = asyncio.Event()

    async def then(stage: TestStage) -> TestStage:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            stopped.set()
            raise
        return stage

    async def during(tag: str) -> None:
        if tag == run.image():
            await asyncio.sleep(0.05)  # the test stage is done with by now
            raise BuildFailed("COPY failed")

    run.docker.during_build = during
    with pytest.raises(BuildFailed, match="COPY failed"):
        await asyncio.wait_for(build(run.ctx, then=then), 5)
    assert stopped.is_set()
    assert run.written.build_failures == {REVISION: 1}


async def test_the_build_slot_is_given_back_once_both_images_are_built() -> None:
    """The test stage's test run beside the build needs no build slot: another app's build
    may start while it runs."""
    run = a_pass(build_slots=1, test={"command": ["npm", "test"], "target": "test"})
    run.observe()
    slots, testing, tested = run.session.build_slots, asyncio.Event(), asyncio.Event()

    async def then(stage: TestStage) -> TestStage:
        testing.set()
        await tested.wait()
        return stage

    building = asyncio.create_task(build(run.ctx, then=then))
    await asyncio.wait_for(testing.wait(), 5)
    await asyncio.wait_for(slots.acquire(), 5)  # free while the test runs
    slots.release()
    tested.set()
    assert await asyncio.wait_for(building, 5) == TestStage(image=stage_image("web", REVISION))
    assert not slots.locked()
