"""Fencing that holds when clocks and networks misbehave: daemons whose wall clocks run a
minute ahead or behind take nothing early and lose nothing, a write cut off by the end of
its lease never lands, and two daemons never share one host id."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from reconciler.sandbox.aws import SandboxAws
from tests.support.aws_proxy import AwsProxy
from tests.support.daemon_process import DaemonProcess
from tests.support.fleet import WRITES, Fleet
from tests.support.probes import eventually

pytestmark = [pytest.mark.slow]

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def clock_off_by(offset: str) -> dict[str, str]:
    """The environment of a daemon whose wall clock runs `offset` ("+60s") from the host's;
    its monotonic clock is left alone, as NTP leaves it."""
    assert Path(LIBFAKETIME).exists(), "Debian's faketime package is needed"
    return {
        "LD_PRELOAD": LIBFAKETIME,
        "FAKETIME": offset,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_NO_CACHE": "1",
    }


def takeovers(daemons: list[DaemonProcess]) -> list[tuple[str, str]]:
    return [
        (str(e["app"]), str(e.get("previous_owner")))
        for d in daemons
        for e in d.events()
        if e.get("event") == "lease_taken" and e.get("takeover")
    ]


def writers(fleet: Fleet) -> dict[str, set[str]]:
    """The daemons that sent each of this fleet's UpdateServices (not the test's own set-up;
    the sandbox is shared with earlier tests, whose fleets have daemons of the same names)."""
    ours = {world.name for world in fleet.worlds}
    found: dict[str, set[str]] = {}
    for write in fleet.writes_since(dict.fromkeys(WRITES, 0)):
        app = str(write.get("service") or "")
        if write["_caller"] and write["_action"] == "UpdateService" and app in ours:
            found.setdefault(app, set()).add(str(write["_caller"]))
    return found


async def test_clocks_a_minute_ahead_or_behind_take_nothing_early_and_lose_nothing(
    tmp_path: Path, aws: SandboxAws, registry: str, docker_engine: str
) -> None:
    # A margin (ttl / 5) of 1.6 s: the sandbox on a loaded 2-core host must apply a write
    # its client gave up on within it, the assumption the README states for AWS.
    fleet = await Fleet.create(tmp_path, aws, registry, apps=6, ttl=8.0)
    async with fleet.running(2) as daemons:
        ahead = await fleet.start(2, env=clock_off_by("+60s"))
        daemons.append(ahead)
        await fleet.wait_all(daemons[0], fleet.in_sync_at(lambda w: w.first_commit), timeout=120)
        # Several TTLs with everyone heartbeating: the daemon whose clock is a minute ahead
        # sees the others' wall-clock expiries long past, and still takes nothing.
        await asyncio.sleep(fleet.ttl * 2)
        assert takeovers(daemons) == []
        owners = {s["owner"] for s in (await fleet.statuses(daemons[0])).values()}
        assert owners == {"d0", "d1", "d2"}
        # One daemon sent each app's UpdateService. (A RegisterTaskDefinition may come from
        # two in turn: a deploy that failed before its UpdateService, then handed over.)
        shared = {app: sorted(c) for app, c in writers(fleet).items() if len(c) > 1}
        assert not shared, (shared, [fleet.updates(w) for w in fleet.worlds if w.name in shared])
        # When it dies its apps move as fast as anyone's: the TTL on the others' clocks.
        ahead.kill()
        killed_at = time.monotonic()
        await fleet.wait_all(
            daemons[0],
            lambda w, s: s["owner"] in ("d0", "d1") and s["phase"] == "InSync",
            what="the dead daemon's apps taken over",
        )
        took = time.monotonic() - killed_at
        # A daemon a minute behind is not counted dead: it gets its share.
        behind = await fleet.start(3, env=clock_off_by("-60s"))
        daemons.append(behind)
        await fleet.wait_all(
            daemons[0],
            lambda w, s: s["owner"] in ("d0", "d1", "d3"),
            what="apps spread again",
        )
        await eventually(
            lambda: any(e.get("event") == "lease_taken" for e in behind.events()),
            timeout=90,
            what="the daemon a minute behind taking its share",
        )
        await asyncio.sleep(fleet.ttl)
        assert all(p != "d3" for _, p in takeovers(daemons)), takeovers(daemons)
        for world in fleet.worlds:
            assert sorted(fleet.updates_per_revision(world).values()) == [1], world.name
        print(f"taken over {took:.1f} s after SIGKILL (lease_ttl {fleet.ttl:g} s)")


async def test_a_second_daemon_with_the_same_host_id_exits_2_naming_the_first(
    tmp_path: Path, aws: SandboxAws, registry: str, docker_engine: str
) -> None:
    fleet = await Fleet.create(tmp_path, aws, registry, apps=1)
    async with fleet.running(1) as daemons:
        first = daemons[0]
        await fleet.wait_all(first, fleet.in_sync_at(lambda w: w.first_commit))
        twin = await fleet.start(1, host_id="d0")
        assert await twin.exited(timeout=60) == 2
        failed = [e for e in twin.events() if e.get("event") == "daemon_failed"]
        assert failed, twin.text()[-2000:]
        assert "host_id 'd0' is in use by a running daemon at " + first.admin_url in str(
            failed[0]["error"]
        )
        assert not any(e.get("event") == "lease_taken" for e in twin.events())
        # A daemon that crashed leaves its item behind: its successor under the same host
        # id waits the TTL out on its own clock and carries on.
        first.kill()
        successor = await fleet.start(2, host_id="d0")
        await fleet.wait_all(
            successor, lambda w, s: s["here"] and s["phase"] == "InSync", what="app back at d0"
        )
        events = [e.get("event") for e in successor.events()]
        assert "host_id_item_found" in events and "host_id_taken_over" in events
        assert sorted(fleet.updates_per_revision(fleet.worlds[0]).values()) == [1]


async def test_an_update_cut_off_by_the_end_of_its_lease_never_lands(
    tmp_path: Path, aws: SandboxAws, registry: str, docker_engine: str
) -> None:
    """The owner's UpdateService hangs in the network while the lease table is out of its
    reach: its client gives up when the lease ends on its clock, before the other daemon
    may take the app, and exactly one UpdateService per revision reaches ECS."""
    fleet = await Fleet.create(tmp_path, aws, registry, apps=2)
    async with AwsProxy.serving(aws.endpoint_url) as proxy, fleet.running(0) as daemons:
        daemons.append(await fleet.start(0, endpoint_url=proxy.url))
        daemons.append(await fleet.start(1))
        statuses = await fleet.wait_all(
            daemons[1], fleet.in_sync_at(lambda w: w.first_commit), timeout=180
        )
        world = next(w for w in fleet.worlds if statuses[w.name]["owner"] == "d0")
        d1_writes_then: list[int] = []
        proxy.on_abandon = lambda action: d1_writes_then.append(
            len([u for u in fleet.updates(world) if u["_caller"] == "d1"])
        )
        proxy.hold("UpdateService")
        second = world.repo.commit({"app.txt": "version 2\n"}, "second")
        await fleet.push(daemons[1], world)
        await eventually(
            lambda: bool(proxy.held), timeout=180, what="the owner's UpdateService held"
        )
        proxy.refuse("DynamoDB_")  # and its heartbeats no longer reach the table
        await fleet.wait_all(
            daemons[1],
            lambda w, s: (
                s["owner"] == "d1"
                and s["phase"] == "InSync"
                and s["live"]["image"] == w.image(second)
            ),
            worlds=[world],
            what="the second revision live by d1",
            timeout=180,
        )
        assert proxy.abandoned == ["UpdateService"]
        assert d1_writes_then == [0]  # given up before the taker's first UpdateService
        updates = fleet.updates(world)
        assert sorted(fleet.updates_per_revision(world).values()) == [1, 1], updates
        assert updates[-1]["_caller"] == "d1"  # the second revision's, by the new owner
