"""Config reload: edit the file under a running daemon and watch what changes.

Added apps start, removed apps stop, changed apps restart their loop; the other apps' loops are
not touched (the same AppLoop object goes on with its passes). An invalid edit is logged
and reported in /status while the last good config keeps running.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import structlog

from reconciler.daemon import reload as reload_module
from tests.support.multiapp import combined_config, daemon_for
from tests.support.probes import eventually
from tests.support.probes import passes as count_passes
from tests.support.world import RunningDaemon, World


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def as_world(daemon: RunningDaemon, world: World) -> RunningDaemon:
    """The same daemon, with status and webhook helpers aimed at another world's app."""
    return RunningDaemon(world, daemon.daemon, daemon.url, daemon.http, daemon.config_path)


async def status_code(daemon: RunningDaemon, name: str) -> int:
    async with daemon.http.get(f"{daemon.url}/status/{name}") as answer:
        return answer.status


async def gone(daemon: RunningDaemon, name: str) -> bool:
    return await status_code(daemon, name) == 404


async def known(daemon: RunningDaemon, name: str) -> bool:
    return await status_code(daemon, name) == 200


async def document(daemon: RunningDaemon) -> dict[str, Any]:
    async with daemon.http.get(f"{daemon.url}/status") as answer:
        assert answer.status == 200
        return dict(await answer.json())


async def test_an_added_app_starts_and_converges_and_the_other_is_not_disturbed(
    world: World, other: World
) -> None:
    """Appending an app to the file deploys it; the app already running keeps its loop."""
    async with daemon_for([world]) as (daemon,):
        await daemon.wait_phase("InSync", revision=world.first_commit)
        loop = daemon.loop()
        passes = count_passes(daemon)

        path = daemon.config_path
        path.write_text(combined_config([world, other]))
        await eventually(lambda: known(daemon, other.name), what="the added app's status")
        await as_world(daemon, other).wait_phase("InSync", revision=other.first_commit)

        assert daemon.supervisor.apps.loops[world.name] is loop
        await daemon.github_push()
        await eventually(
            lambda: count_passes(daemon) > passes, what="another pass of the first app"
        )
        assert (await document(daemon))["config"]["sha256"] == sha256(path.read_text())
    assert other.live_image() == other.image(other.first_commit)
    assert world.updates() == 1


async def test_a_removed_app_stops_and_the_other_keeps_its_loop(world: World, other: World) -> None:
    """The removed app's status is gone and pushes to it nudge nothing; the other app's loop
    is the same object and its pass count carries on."""
    async with daemon_for([world, other]) as (daemon, removed):
        await daemon.wait_phase("InSync", revision=world.first_commit)
        await removed.wait_phase("InSync", revision=other.first_commit)
        loop = daemon.loop()
        passes = count_passes(daemon)

        daemon.config_path.write_text(world.config_text())
        await eventually(lambda: gone(daemon, other.name), what="the removed app's 404")

        assert other.name not in daemon.supervisor.apps.loops
        other.repo.commit({"app.txt": "version 2\n"}, "second")
        answer = await removed.github_push()
        assert (answer.status, await answer.json()) == (202, {"nudged": []})

        assert daemon.supervisor.apps.loops[world.name] is loop
        await daemon.github_push()
        await eventually(lambda: count_passes(daemon) > passes, what="another pass of the kept app")
        assert (await daemon.status())["phase"] == "InSync"
        async with daemon.http.get(f"{daemon.url}/metrics") as metrics:
            assert other.name not in await metrics.text()
        async with daemon.http.get(f"{daemon.url}/readyz") as ready:
            assert ready.status == 200
    assert other.updates() == 1
    assert other.live_image() == other.image(other.first_commit)


async def test_a_changed_app_restarts_and_the_unchanged_one_is_not_disturbed(
    world: World, other: World
) -> None:
    """Suspending one app restarts only its loop, which then reports Suspended."""
    async with daemon_for([world, other]) as (daemon, changed):
        await daemon.wait_phase("InSync", revision=world.first_commit)
        await changed.wait_phase("InSync", revision=other.first_commit)
        kept, restarted = (
            daemon.supervisor.apps.loops[world.name],
            daemon.supervisor.apps.loops[other.name],
        )

        other.app_overrides["suspended"] = True
        daemon.config_path.write_text(combined_config([world, other]))
        status = await changed.wait_phase("Suspended")

        assert daemon.supervisor.apps.loops[other.name] is not restarted
        assert daemon.supervisor.apps.loops[world.name] is kept
        # The restarted app keeps its history and its live state; only its loop is new.
        assert status["history"][0]["revision"] == other.first_commit
        assert status["live"]["image"] == other.image(other.first_commit)
        assert (await daemon.status())["phase"] == "InSync"


async def test_invalid_edits_are_logged_and_the_last_good_config_keeps_running(
    world: World,
) -> None:
    """A deleted file, garbage, an empty file, a bad value: each is logged as one error naming
    the problem and shown in /status; the app goes on deploying under the last good config,
    and putting the good file back clears the error."""
    good = world.config_text()
    world.app_overrides["rollout_timeout"] = "soon"
    bad_value = world.config_text()
    world.app_overrides.pop("rollout_timeout")

    async with world.daemon() as daemon:
        path = daemon.config_path
        await daemon.wait_phase("InSync", revision=world.first_commit)
        loop = daemon.loop()
        config = (await document(daemon))["config"]
        assert (config["path"], config["sha256"], config["last_error"]) == (
            str(path),
            sha256(good),
            None,
        )

        async def edit(text: str | None, problem: str | None) -> None:
            """Make the edit; wait for /status to show `problem` (None: no error)."""

            async def shown() -> bool:
                error = (await document(daemon))["config"]["last_error"]
                return error is None if problem is None else problem in (error or "")

            with structlog.testing.capture_logs() as logs:
                if text is None:
                    path.unlink()
                else:
                    path.write_text(text)
                await eventually(shown, what=f"config error {problem!r} in /status")
            errors = [e for e in logs if e["log_level"] == "error"]
            if problem is None:
                assert errors == []
            else:
                assert len(errors) == 1, errors
                assert errors[0]["event"] == "config_invalid_keeping_last_good"
                assert any(problem in line for line in errors[0]["problems"]), errors
            assert (await document(daemon))["config"]["sha256"] == sha256(good)
            assert daemon.supervisor.apps.loops[world.name] is loop

        # Deleted, then put back as it was (an editor's save by rename, a config management
        # run): the error must clear even though the content is unchanged.
        await edit(None, "file not found")
        await edit(good, None)
        await edit("[[apps]\nname = ", "not valid TOML")
        await edit("", "file is empty")
        await edit(bad_value, f"apps[{world.name}].rollout_timeout")

        # Still working on the last good config: a new commit is deployed.
        second = world.repo.commit({"app.txt": "version 2\n"}, "second")
        await daemon.github_push()
        await daemon.wait_phase("InSync", revision=second)

        await edit(good, None)
    assert world.updates() == 2


async def test_request_reload_applies_an_edit_at_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGHUP's effect: with the file check all but switched off, only the request explains
    that the edit is applied."""
    monkeypatch.setattr(reload_module, "CONFIG_CHECK_INTERVAL", 3600.0)
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.first_commit)
        loop = daemon.loop()

        world.app_overrides["suspended"] = True
        path = daemon.config_path
        path.write_text(world.config_text())
        daemon.daemon.request_reload()
        await daemon.wait_phase("Suspended", timeout=30)

        assert daemon.supervisor.apps.loops[world.name] is not loop
        assert (await document(daemon))["config"]["sha256"] == sha256(path.read_text())
