"""Several daemon processes share the apps of one config through the sandbox's DynamoDB:
each app reconciled by exactly one, a dead or frozen daemon's apps taken over without a
second UpdateService, nothing written without a valid lease."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from reconciler.sandbox.aws import SandboxAws
from reconciler.sandbox.scenario import Scenario
from tests.support.fleet import Fleet
from tests.support.probes import eventually

pytestmark = [pytest.mark.slow]


async def test_three_daemons_share_thirty_apps_each_reconciled_once(
    tmp_path: Path, aws: SandboxAws, registry: str, docker_engine: str
) -> None:
    fleet = await Fleet.create(tmp_path, aws, registry, apps=30)
    async with fleet.running(3) as daemons:
        first = fleet.in_sync_at(lambda w: w.first_commit)
        statuses = await fleet.wait_all(daemons[0], first, what="30 apps in sync", timeout=180)
        owners = Counter(s["owner"] for s in statuses.values())
        assert set(owners) == {"d0", "d1", "d2"}
        assert all(9 <= n <= 11 for n in owners.values()), owners
        # Every daemon tells the same story, and says which apps are its own.
        for index, daemon in enumerate(daemons):
            seen = await fleet.statuses(daemon)
            assert {n: s["owner"] for n, s in seen.items()} == {
                n: s["owner"] for n, s in statuses.items()
            }
            assert {n for n, s in seen.items() if s["here"]} == {
                n for n, s in statuses.items() if s["owner"] == f"d{index}"
            }
        for world in fleet.worlds:
            updates = fleet.updates(world)
            assert len(updates) == 1, (world.name, updates)
            assert updates[0]["_caller"] == statuses[world.name]["owner"]
        code, metrics = await daemons[1].get("/metrics")
        assert code == 200 and "reconciler_leases_held" in metrics
        config = str(fleet.config_for(0))
        listed = await asyncio.create_subprocess_exec(
            *(
                sys.executable,
                "-m",
                "reconciler",
                "cluster",
                "status",
                "--json",
                "--config",
                config,
            ),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(listed.communicate(), timeout=30)
        assert listed.returncode == 0
        document = json.loads(out)
        assert sorted(d["host_id"] for d in document["daemons"] if d["alive"]) == ["d0", "d1", "d2"]
        assert sum(len(d["apps"]) for d in document["daemons"]) == 30


async def test_a_daemon_killed_mid_rollout_is_taken_over_without_a_second_update(
    tmp_path: Path, aws: SandboxAws, registry: str, docker_engine: str
) -> None:
    fleet = await Fleet.create(tmp_path, aws, registry, apps=6)
    async with fleet.running(3) as daemons:
        await fleet.wait_all(daemons[0], fleet.in_sync_at(lambda w: w.first_commit))
        second = {}
        for world in fleet.worlds:
            # Long enough that the kill lands while ECS is still rolling out.
            aws.rollouts.set_scenario(world.cluster, world.name, Scenario(after=fleet.ttl + 4))
            second[world.name] = world.repo.commit({"app.txt": "version 2\n"}, "second")
            await fleet.push(daemons[2], world)  # any daemon: it reaches the owner
        statuses = await fleet.wait_all(
            daemons[0],
            lambda w, s: len(fleet.updates(w)) == 2,
            what="every app's second UpdateService",
        )
        victim = daemons[1]
        lost = [w for w in fleet.worlds if statuses[w.name]["owner"] == "d1"]
        assert lost, statuses
        victim.kill()
        killed_at = time.monotonic()
        survivors = [daemons[0], daemons[2]]
        await fleet.wait_all(
            survivors[0],
            lambda w, s: s["owner"] in ("d0", "d2"),
            worlds=lost,
            what="the killed daemon's apps taken over",
        )
        took = time.monotonic() - killed_at
        await fleet.wait_all(
            survivors[1], fleet.in_sync_at(lambda w: second[w.name]), what="second revision live"
        )
        for world in fleet.worlds:
            # One UpdateService per revision across all daemons: the new owner awaited the
            # rollout in flight instead of starting it again.
            per_revision = fleet.updates_per_revision(world)
            assert sorted(per_revision.values()) == [1, 1], (world.name, per_revision)
        for world in lost:
            assert [u["_caller"] for u in fleet.updates(world)][1] == "d1"
        print(f"taken over {took:.1f} s after SIGKILL (lease_ttl {fleet.ttl:g} s)")


async def test_a_frozen_daemon_writes_nothing_for_the_apps_it_lost(
    tmp_path: Path, aws: SandboxAws, registry: str, docker_engine: str
) -> None:
    """SIGSTOP mid-rollout past its lease, the other daemon takes over and deploys a newer
    revision, then SIGCONT: the call log shows no write from the frozen daemon after."""
    fleet = await Fleet.create(tmp_path, aws, registry, apps=4)
    async with fleet.running(2) as daemons:
        await fleet.wait_all(daemons[0], fleet.in_sync_at(lambda w: w.first_commit))
        statuses = await fleet.statuses(daemons[0])
        frozen_apps = [w for w in fleet.worlds if statuses[w.name]["owner"] == "d0"]
        assert frozen_apps
        for world in frozen_apps:
            aws.rollouts.set_scenario(world.cluster, world.name, Scenario(after=fleet.ttl * 3))
            world.repo.commit({"app.txt": "version 2\n"}, "second")
            await fleet.push(daemons[1], world)
        await fleet.wait_all(
            daemons[1],
            lambda w, s: len(fleet.updates(w)) == 2,
            worlds=frozen_apps,
            what="the second rollouts under way",
        )
        daemons[0].pause()
        await fleet.wait_all(
            daemons[1],
            lambda w, s: s["owner"] == "d1" and s["here"],
            worlds=frozen_apps,
            what="the frozen daemon's apps taken over",
        )
        third = {}
        for world in frozen_apps:
            aws.rollouts.set_scenario(world.cluster, world.name, Scenario(after=0.5))
            third[world.name] = world.repo.commit({"app.txt": "version 3\n"}, "third")
            await fleet.push(daemons[1], world)
        await fleet.wait_all(
            daemons[1],
            fleet.in_sync_at(lambda w: third[w.name]),
            worlds=frozen_apps,
            what="the third revision live by the new owner",
        )
        mark = fleet.mark()
        daemons[0].resume()
        # Its loops wake mid-watch and see the service moved on: whatever they would do, the
        # fence stops it; its first heartbeat after the gap stops them (the lapse), or its
        # next look at the table does (the lease lost).
        await eventually(
            lambda: any(
                e.get("event") in ("leases_lapsed", "lease_lost") for e in daemons[0].events()
            ),
            timeout=30,
            what="the resumed daemon noticing its leases are gone",
        )
        await asyncio.sleep(2)
        mine = {w.name for w in frozen_apps}
        late = [
            w
            for w in fleet.writes_since(mark)
            if w["_caller"] == "d0" and (w.get("service") in mine or w.get("family") in mine)
        ]
        assert late == [], late
        for world in frozen_apps:
            assert sorted(fleet.updates_per_revision(world).values()) == [1, 1, 1]
            assert world.live_image() == world.image(third[world.name])


async def test_a_failed_hold_survives_a_takeover(
    tmp_path: Path, aws: SandboxAws, registry: str, docker_engine: str
) -> None:
    fleet = await Fleet.create(tmp_path, aws, registry, apps=2)
    async with fleet.running(2) as daemons:
        await fleet.wait_all(daemons[0], fleet.in_sync_at(lambda w: w.first_commit))
        statuses = await fleet.statuses(daemons[0])
        world = fleet.worlds[0]
        owner = int(statuses[world.name]["owner"][1:])
        aws.rollouts.set_scenario(world.cluster, world.name, Scenario(outcome="fail", after=0.3))
        world.repo.commit({"app.txt": "version 2, broken\n"}, "broken")
        await fleet.push(daemons[1 - owner], world)
        await fleet.wait_all(
            daemons[0], lambda w, s: s["phase"] == "Failed", worlds=[world], what="Failed"
        )
        updates = len(fleet.updates(world))
        before = (await fleet.statuses(daemons[owner]))[world.name]["history"]
        daemons[owner].kill()
        heir = daemons[1 - owner]
        await fleet.wait_all(
            heir, lambda w, s: s["here"], worlds=[world], what="the app taken over"
        )
        # Its first passes at the new owner read the hold from the table: still Failed, and
        # the failed revision is not deployed again.
        await fleet.push(heir, world)
        await asyncio.sleep(3)
        status = (await fleet.statuses(heir))[world.name]
        assert status["phase"] == "Failed", status
        assert len(fleet.updates(world)) == updates
        # The history came along with the lease, each release's stages too.
        kept = [(h["revision"], h["result"], h.get("stages")) for h in status["history"]]
        assert kept[: len(before)] == [
            (h["revision"], h["result"], h.get("stages")) for h in before
        ]
        assert before[0].get("stages"), before[0]


async def test_a_drained_daemon_hands_its_apps_over_at_once(
    tmp_path: Path, aws: SandboxAws, registry: str, docker_engine: str
) -> None:
    fleet = await Fleet.create(tmp_path, aws, registry, apps=4, ttl=60)
    async with fleet.running(2) as daemons:
        await fleet.wait_all(daemons[0], fleet.in_sync_at(lambda w: w.first_commit))
        assert daemons[0].stop() == 0  # SIGTERM
        view = await fleet.view()
        assert "d0" not in view.members
        assert all(item.owner != "d0" for item in view.leases.values())
        # A lease TTL of a minute, and the apps have moved long before it ran out.
        await fleet.wait_all(daemons[1], lambda w, s: s["here"], what="all apps at d1", timeout=20)


async def test_lease_table_throttled_no_write_without_a_lease_and_no_app_twice(
    tmp_path: Path, aws: SandboxAws, registry: str, docker_engine: str
) -> None:
    fleet = await Fleet.create(tmp_path, aws, registry, apps=4)
    async with fleet.running(2) as daemons:
        await fleet.wait_all(daemons[0], fleet.in_sync_at(lambda w: w.first_commit))
        mark = fleet.mark()
        dynamodb = (
            "Query",
            "PutItem",
            "UpdateItem",
            "DeleteItem",
            "BatchGetItem",
            "TransactWriteItems",
        )
        for action in dynamodb:
            aws.faults.inject(action, times=100_000, code="ProvisionedThroughputExceededException")
        second = {}
        try:
            statuses = await fleet.statuses(daemons[0])
            for world in fleet.worlds:
                second[world.name] = world.repo.commit({"app.txt": "version 2\n"}, "second")
                owner = int(statuses[world.name]["owner"][1:])
                await fleet.push(daemons[owner], world)  # the owner's own loop is nudged
            await asyncio.sleep(fleet.ttl * 1.5)  # every lease has run out meanwhile
            writes = [w for w in fleet.writes_since(mark) if w["_action"] == "UpdateService"]
            assert writes == [], writes
        finally:
            aws.faults.clear()
        statuses = await fleet.wait_all(
            daemons[1], fleet.in_sync_at(lambda w: second[w.name]), what="second revision live"
        )
        for world in fleet.worlds:
            assert sorted(fleet.updates_per_revision(world).values()) == [1, 1]
        owners = Counter(s["owner"] for s in statuses.values())
        assert sum(owners.values()) == 4 and set(owners) <= {"d0", "d1"}


async def test_sync_at_any_daemon_reaches_the_owner_and_pins_are_sent_there(
    tmp_path: Path, aws: SandboxAws, registry: str, docker_engine: str
) -> None:
    fleet = await Fleet.create(tmp_path, aws, registry, apps=2)
    async with fleet.running(2) as daemons:
        await fleet.wait_all(daemons[0], fleet.in_sync_at(lambda w: w.first_commit))
        statuses = await fleet.statuses(daemons[0])
        world = fleet.worlds[0]
        owner = int(statuses[world.name]["owner"][1:])
        other = daemons[1 - owner]
        aws.rollouts.set_scenario(world.cluster, world.name, Scenario(outcome="fail", after=0.3))
        second = world.repo.commit({"app.txt": "version 2\n"}, "second")
        await fleet.push(other, world)
        await fleet.wait_all(other, lambda w, s: s["phase"] == "Failed", worlds=[world])

        # The pin lives in the owner's state: another daemon says where to send it.
        code, body = await other.post(f"/apps/{world.name}/rollback")
        assert code == 409, body
        assert f"reconciled by daemon d{owner}" in json.loads(body)["error"]

        # A sync is passed on through the table: the owner clears the hold and deploys again.
        aws.rollouts.set_scenario(world.cluster, world.name, Scenario(after=0.3))
        code, body = await other.post(f"/apps/{world.name}/sync")
        assert code == 202, body
        await fleet.wait_all(
            other, fleet.in_sync_at(lambda w: second), worlds=[world], what="synced and live"
        )
        # What was asked at one daemon is in the audit every daemon shows.
        owner_daemon = daemons[owner]
        code, body = await owner_daemon.get(f"/audit?app={world.name}")
        assert code == 200, body
        said = [(e["action"], e["result"].split(":")[0]) for e in json.loads(body)["entries"]]
        assert ("rollback", "refused") in said and ("sync", "accepted") in said, said
