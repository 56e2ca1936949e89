"""A push cannot harm the host (SPEC 17), on the real stack: a commit written to stall the
daemon stalls nothing, a `.dockerignore` Docker would refuse holds only its app, and a build
that never ends gives its build slot back at `build.timeout`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from reconciler.sandbox.aws import SandboxAws
from tests.support.daemon_process import DaemonProcess
from tests.support.multiapp import combined_config, daemon_for
from tests.support.probes import eventually
from tests.support.world import RunningDaemon, World

pytestmark = [pytest.mark.slow]

# `a*a*...a*b` against a long name of a's: a backtracking matcher tries every split of the
# name between the stars, which is minutes of CPU with the GIL held.
PATHOLOGICAL = "a*" * 40 + "b"
LONG_NAME = "a" * 255
# /healthz must answer each probe within this. A bound on a freeze, not a speed claim: an
# answer takes a few milliseconds; a stalled event loop takes seconds.
ANSWER_WITHIN = 0.1
# A shared 2-core host may hold the daemon off the CPU for a moment now and then; a stalled
# event loop holds every probe for seconds. One probe in twenty may take up to this long.
STRAGGLER_WITHIN = 0.5
PROBES = 50
MAX_PROBES = 200  # about ten seconds of probing: bounds the test, whatever the build takes
PROBE_EVERY = 0.05


async def healthz_latencies(url: str, *, until: Callable[[], bool]) -> list[float]:
    """GETs of /healthz one after another, PROBES of them and on until `until()` holds (at
    most MAX_PROBES): the seconds each took to answer 200."""
    latencies: list[float] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        while len(latencies) < PROBES or not (until() or len(latencies) >= MAX_PROBES):
            began = time.monotonic()
            async with http.get(f"{url}/healthz") as answer:
                await answer.read()
                assert answer.status == 200
            latencies.append(time.monotonic() - began)
            await asyncio.sleep(PROBE_EVERY)
    return latencies


def logged(daemon: DaemonProcess, event: str, app: str) -> bool:
    """Whether the daemon has logged `event` for `app`."""
    return any(e.get("event") == event and e.get("app") == app for e in daemon.events())


async def test_a_pathological_dockerignore_stalls_nothing_while_it_builds(
    world: World, other: World, tmp_path: Path
) -> None:
    """A commit whose `.dockerignore` backtracks in a regex engine, with a 255-character
    name to backtrack over: while the daemon (`reconciler run`) builds and deploys it,
    every /healthz probe answers within 100 ms and a second app deploys beside it."""
    hostile = world.repo.commit(
        {
            ".dockerignore": PATHOLOGICAL + "\n",
            LONG_NAME: "kept: the pattern needs a final b\n",
            LONG_NAME[:-1] + "b": "left out\n",
        },
        "a .dockerignore written to stall",
    )
    config = tmp_path / "reconciler.toml"
    config.write_text(combined_config([world, other]))
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    await daemon.start()
    try:
        # From the start of the hostile commit's build (its context is exported first)
        # until the build is over; the other app builds at the same time.
        await eventually(lambda: logged(daemon, "build_started", world.name), what="the build")
        building_at_first_probe = not logged(daemon, "build_finished", world.name)
        latencies = await healthz_latencies(
            daemon.url, until=lambda: logged(daemon, "build_finished", world.name)
        )
        await daemon.wait_for(
            world.name,
            lambda s: s["phase"] == "InSync" and s["desired"]["revision"] == hostile,
            what="the hostile commit live",
        )
        await daemon.wait_for(
            other.name, lambda s: s["phase"] == "InSync", what="the other app live"
        )
        building = [e for e in daemon.events() if e.get("event") == "build_started"]
    finally:
        daemon.stop()

    print(f"/healthz: {len(latencies)} probes, the slowest {max(latencies) * 1000:.1f} ms")
    assert building_at_first_probe
    assert logged(daemon, "build_finished", world.name), f"the build outlasted {MAX_PROBES} probes"
    slow = [f"{t * 1000:.0f} ms" for t in latencies if t >= ANSWER_WITHIN]
    stalled = [t for t in latencies if t >= STRAGGLER_WITHIN]
    assert not stalled and len(slow) <= len(latencies) // 20, (
        f"/healthz answered slower than {ANSWER_WITHIN * 1000:.0f} ms: {slow}"
    )
    assert {e["app"] for e in building} == {world.name, other.name}
    assert world.live_image() == world.image(hostile)
    assert other.live_image() == other.image(other.first_commit)


async def test_a_dockerignore_pattern_over_1024_characters_holds_the_app_naming_its_line(
    world: World,
) -> None:
    """A pattern Docker would refuse fails the build, counted like any failed build: after
    the attempts the app is held with one line naming the line and the limit, and nothing
    is pushed or deployed."""
    refused = world.repo.commit({".dockerignore": "*.log\n" + "x" * 1025 + "\n"}, "too long")
    held = f"build of {refused[:12]} failed 3 times"

    async with world.daemon() as daemon:
        status = await daemon.wait_for(
            lambda s: s["phase"] == "Failed" and s["last_error"].startswith(held),
            what="the held revision",
        )

    assert status["desired"]["revision"] == refused
    assert (
        ".dockerignore line 2: the pattern is 1025 characters long, over the limit of 1024"
        in status["last_error"]
    )
    assert [h["result"] for h in status["history"]] == ["build_failed"] * 3
    assert world.updates() == 0


async def test_a_build_past_its_timeout_frees_the_only_build_slot_for_another_app(
    world: World, other: World, base_image: str
) -> None:
    """`RUN sleep 600` with `build.timeout = "5s"` and one build at a time: the build is
    stopped and counted as a failed build naming the timeout, and an app that was waiting
    for the slot builds and deploys in it."""
    world.sections["build"] = {"network": "none", "timeout": "5s"}
    world.daemon_overrides["max_concurrent_builds"] = 1
    endless = world.repo.commit(
        {"Dockerfile": f"FROM {base_image}\nRUN sleep 600\nCOPY app.txt /app.txt\n"},
        "a build that never ends",
    )

    async with daemon_for([world]) as (daemon,):
        await daemon.wait_phase("Building")
        # Added while the endless build holds the only slot: its build has to wait.
        daemon.config_path.write_text(combined_config([world, other]))
        daemon.daemon.request_reload()
        waiting = RunningDaemon(other, daemon.daemon, daemon.url, daemon.http, daemon.config_path)
        await eventually(
            lambda: other.name in daemon.supervisor.apps.statuses, what="the added app"
        )
        deadline = time.monotonic() + 60
        while (status := await waiting.status())["phase"] != "InSync":
            if status["phase"] != "Pending":
                # Read after the other app's: it left Pending in the slot, which it got only
                # once the endless build was stopped and recorded.
                assert "build_failed" in results(await daemon.status())
            assert time.monotonic() < deadline, f"the other app never deployed: {status}"
            await asyncio.sleep(0.05)
        stopped = await daemon.status()

    failure = next(h for h in stopped["history"] if h["result"] == "build_failed")
    assert failure["revision"] == endless
    assert failure["error"].startswith("build stopped after 5s (build.timeout)")
    assert other.live_image() == other.image(other.first_commit)
    assert world.updates() == 0


def results(status: dict[str, Any]) -> list[str]:
    return [h["result"] for h in status["history"]]


def rss_kib(pid: int) -> int:
    """The process's resident memory, as the kernel counts it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


async def test_hostile_tests_fail_alone_and_the_daemon_and_other_apps_carry_on(
    tmp_path: Path, aws: SandboxAws, registry: str, base_image: str
) -> None:
    """A test that forks without end, one that allocates past `memory_mb` and one that
    writes to / each fail their own test; a healthy app beside them deploys, and the
    daemon's memory does not move with theirs."""
    commands = {
        "fork": "while true; do sleep 600 & done",
        "hog": "busybox head -c 300m /dev/zero | busybox tail",
        "root": "echo x > /written && echo wrote",
        "healthy": "true",
    }
    worlds = {name: World.create(tmp_path / name, aws, registry) for name in commands}
    for name, world in worlds.items():
        world.sections["build"] = {"network": "none"}
        world.first_commit = world.repo.commit(
            {"Dockerfile": f"FROM {base_image}\nCOPY app.txt /app.txt\n"}, "on busybox"
        )
        world.app_overrides["test"] = {
            "command": ["sh", "-c", commands[name]],
            "timeout": "120s",
            **({"memory_mb": 64} if name == "hog" else {}),
        }
    config = tmp_path / "reconciler.toml"
    config.write_text(combined_config(list(worlds.values())))
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    await daemon.start()
    try:
        before = rss_kib(daemon.pid)
        for name, world in worlds.items():
            wanted = "InSync" if name == "healthy" else "Failed"

            def reached(status: dict[str, Any], phase: str = wanted) -> bool:
                return bool(status["phase"] == phase)

            status = await daemon.wait_for(
                world.name, reached, what=f"{name} {wanted}", timeout=180
            )
            if name != "healthy":
                assert status["history"][0]["result"] == "test_failed", (name, status)
        assert "can't fork" in (await daemon.status(worlds["fork"].name))["last_error"]
        assert "memory" in (await daemon.status(worlds["hog"].name))["last_error"].lower()
        assert "Read-only file system" in (await daemon.status(worlds["root"].name))["last_error"]
        after = rss_kib(daemon.pid)
    finally:
        daemon.kill()
    # The hog asked for 300 MB; the daemon grew by a small fraction of that at most.
    assert after - before < 64 * 1024, (before, after)
    assert worlds["healthy"].updates() == 1
    for name in ("fork", "hog", "root"):
        assert worlds[name].updates() == 0
