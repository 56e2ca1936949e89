"""Local images after a rollout the pass built for: the app's images of older revisions go,
the live and the previous revision's stay, as do the cache image and every other app's
images; nothing here fails a deploy."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from reconciler.app.stages.local_images import remove_old_local_images
from reconciler.app.stages.pipeline import Next, run_pass
from reconciler.decisions.local_images import APP_LABEL
from reconciler.errors import DockerUnavailable
from tests.support.fakes import REGISTRY
from tests.support.passes import REVISION, Pass, a_pass

PREVIOUS, OLD = "b" * 40, "c" * 40


def with_images(run: Pass) -> dict[str, str]:
    """The engine holds the app's images of three revisions (and a test stage's), its cache
    image, another app's old image and one made by hand."""
    images = {
        "live": f"{REGISTRY}/web:{REVISION}",
        "previous": f"{REGISTRY}/web:{PREVIOUS}",
        "old": f"{REGISTRY}/web:{OLD}",
        "old test stage": f"reconciler-test/web:{OLD}",
        "cache": f"{REGISTRY}/web:cache-test",
        "other app": f"{REGISTRY}/api:{OLD}",
        "by hand": f"{REGISTRY}/web:{'d' * 40}",
    }
    for name, tag in images.items():
        labels = {} if name == "by hand" else {APP_LABEL: "api" if name == "other app" else "web"}
        run.docker.images[tag] = (f"sha256:{name}", labels)
    return images


async def test_images_of_older_revisions_go_and_the_rest_stay() -> None:
    run = a_pass()
    run.observe()
    images = with_images(run)
    with capture_logs() as logged:
        await remove_old_local_images(run.ctx, previous=[images["previous"], "public.test/x:1"])
    assert sorted(run.docker.removed) == sorted([images["old"], images["old test stage"]])
    assert set(run.docker.images) == set(images.values()) - set(run.docker.removed)
    [said] = [e for e in logged if e["event"] == "local_images_removed"]
    assert (said["removed"], said["failed"]) == (2, 0)


async def test_an_engine_that_cannot_list_or_remove_fails_nothing() -> None:
    run = a_pass()
    run.observe()
    images = with_images(run)
    run.docker.fail_next(f"remove_image {images['old']}", DockerUnavailable("in use"))
    with capture_logs() as logged:
        await remove_old_local_images(run.ctx, previous=[images["previous"]])
    assert run.docker.removed == [images["old test stage"]]
    assert [e["image"] for e in logged if e["event"] == "local_image_not_removed"] == [
        images["old"]
    ]
    run.docker.fail_next("local_images", DockerUnavailable("docker.sock: connection refused"))
    with capture_logs() as logged:
        await remove_old_local_images(run.ctx, previous=[])
    assert [e["event"] for e in logged] == ["local_images_not_listed"]


@pytest.mark.parametrize("built", [True, False], ids=["built", "image already pushed"])
async def test_a_deploy_removes_older_local_images_only_when_it_built(built: bool) -> None:
    """The previous revision is what the service ran when the pass looked."""
    run = a_pass()
    live = run.live_task_definition()
    run.ecs.definitions[live]["containerDefinitions"][0]["image"] = f"{REGISTRY}/web:{PREVIOUS}"
    images = with_images(run)
    if not built:
        await run.docker.push(run.image(), auth=None)
    assert await run_pass(run.session, woken=True) is Next.WAIT
    assert run.status.live_image == run.image()
    removed = [images["old"], images["old test stage"]] if built else []
    assert sorted(run.docker.removed) == sorted(removed)
    new_image = run.docker.images[run.image()]
    assert new_image[1][APP_LABEL] == "web"  # what the build made is labelled for the app
