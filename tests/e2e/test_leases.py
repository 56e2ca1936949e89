"""Lease managers sharing apps through the sandbox's DynamoDB, over the real aiobotocore wire
path; the tenants are stand-ins that record what they were handed."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest

from reconciler.cluster.manager import LeaseManager
from reconciler.cluster.ownership import ClusterOwnership, TableHealth
from reconciler.cluster.store import TableStateStore
from reconciler.cluster.table import LeaseTable, Member
from reconciler.decisions.model import Hold
from reconciler.errors import HostIdInUse, LeaseNotHeld, NotForwarded
from reconciler.metrics import Metrics
from reconciler.sandbox.aws import SandboxAws
from tests.support.probes import eventually

APPS = [f"app-{i:02d}" for i in range(30)]
TTL = 3.0
LOOK = 0.2


@dataclass
class Tenant:
    apps: list[str]
    running: set[str] = field(default_factory=set)
    pokes: list[tuple[str, str]] = field(default_factory=list)
    busy_apps: set[str] = field(default_factory=set)
    take_delay: float = 0.0  # how long starting an app's loop takes
    given_up: list[str] = field(default_factory=list)

    def app_names(self) -> list[str]:
        return list(self.apps)

    async def take(self, name: str) -> None:
        await asyncio.sleep(self.take_delay)
        self.running.add(name)

    async def give_up(self, name: str, *, grace: float) -> None:
        self.given_up.append(name)
        self.running.discard(name)

    def busy(self, name: str) -> bool:
        return name in self.busy_apps

    def nudge(self, name: str) -> None:
        self.pokes.append((name, "nudges"))

    def sync(self, name: str) -> None:
        self.pokes.append((name, "syncs"))

    def local_document(self, name: str) -> dict[str, Any] | None:
        return {"name": name, "phase": "InSync", "history": []} if name in self.running else None


@dataclass
class Node:
    ownership: ClusterOwnership
    manager: LeaseManager
    tenant: Tenant
    metrics: Metrics
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.manager.run())

    async def pause(self) -> None:
        """Stop its rounds without leaving: as a daemon that died or froze."""
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.task = None


class Cluster:
    def __init__(self, aws: SandboxAws, stack: AsyncExitStack, name: str) -> None:
        self.aws, self.stack, self.name = aws, stack, name
        self.nodes: list[Node] = []

    async def table(self) -> LeaseTable:
        return await self.stack.enter_async_context(
            LeaseTable.connect(
                name=self.name, region="us-east-1", endpoint_url=self.aws.endpoint_url
            )
        )

    async def node(
        self,
        host: str,
        apps: list[str] = APPS,
        *,
        adopt_feedback: Callable[[str, str | None], None] | None = None,
    ) -> Node:
        table = await self.table()
        metrics = Metrics()
        health = TableHealth(metrics)
        ownership = ClusterOwnership(
            table=table, host_id=host, ttl=TTL, health=health, look_every=LOOK
        )
        tenant = Tenant(list(apps))
        manager = LeaseManager(
            ownership=ownership,
            table=table,
            store=TableStateStore(table, host_id=host),
            tenant=tenant,
            url=f"http://127.0.0.1/{host}",
            metrics=metrics,
            health=health,
            adopt_feedback=adopt_feedback,
            look_every=LOOK,
        )
        node = Node(ownership, manager, tenant, metrics)
        self.nodes.append(node)
        return node

    async def owners(self) -> dict[str, str | None]:
        view = await (await self.table()).view()
        return {app: item.owner for app, item in view.leases.items()}


@pytest.fixture
async def cluster(aws: SandboxAws) -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        made = Cluster(aws, stack, f"leases-{uuid.uuid4().hex[:8]}")
        assert await (await made.table()).create()
        try:
            yield made
        finally:
            for node in made.nodes:
                if node.task is not None:
                    await node.pause()


def held_counts(nodes: list[Node]) -> list[int]:
    return sorted(len(n.manager.leases.held) for n in nodes)


async def test_thirty_apps_spread_ten_each_over_three_daemons(cluster: Cluster) -> None:
    nodes = [await cluster.node(h) for h in ("a", "b", "c")]
    for node in nodes:
        node.start()

    def settled() -> bool:
        """Ten leases each, every one of them running where it is held. (With a TTL of 3 s
        a loaded host may stall a heartbeat long enough for a lapse: its leases are let go
        and taken again, which is what a lapse must do, and then this holds again.)"""
        return held_counts(nodes) == [10, 10, 10] and all(
            n.tenant.running == set(n.manager.leases.held) for n in nodes
        )

    await eventually(settled, timeout=30)
    owners = await cluster.owners()
    assert set(owners) == set(APPS)
    assert Counter(owners.values()) == {"a": 10, "b": 10, "c": 10}
    # Every app runs on exactly one daemon.
    running = [app for n in nodes for app in n.tenant.running]
    assert sorted(running) == sorted(APPS)


async def test_a_dead_daemons_apps_are_taken_over_after_the_ttl(cluster: Cluster) -> None:
    nodes = [await cluster.node(h) for h in ("a", "b", "c")]
    for node in nodes:
        node.start()
    await eventually(lambda: held_counts(nodes) == [10, 10, 10], timeout=20)
    dead, survivors = nodes[0], nodes[1:]
    lost = set(dead.manager.leases.held)
    await dead.pause()
    loop = asyncio.get_running_loop()
    paused_at = loop.time()
    await eventually(
        lambda: lost <= set().union(*(n.tenant.running for n in survivors)), timeout=TTL + 10
    )
    took = loop.time() - paused_at
    assert took > TTL * 0.5  # not before its lease could have run out
    assert sorted(len(n.manager.leases.held) for n in survivors) == [15, 15]
    takeovers = sum(
        n.metrics.registry.get_sample_value("reconciler_lease_takeovers_total") or 0
        for n in survivors
    )
    assert takeovers == len(lost)
    owners = await cluster.owners()
    assert "a" not in owners.values()


async def test_a_daemon_that_leaves_hands_its_apps_over_at_once(cluster: Cluster) -> None:
    nodes = [await cluster.node(h) for h in ("a", "b")]
    for node in nodes:
        node.start()
    await eventually(lambda: held_counts(nodes) == [15, 15], timeout=20)
    leaving = nodes[0]
    await leaving.pause()
    await leaving.manager.leave()
    assert leaving.tenant.running == set()
    # Well within the TTL: the member item is gone and the leases are free.
    await eventually(lambda: len(nodes[1].manager.leases.held) == 30, timeout=TTL)


async def test_a_joining_daemon_gets_its_share_from_the_others(cluster: Cluster) -> None:
    first = await cluster.node("a")
    first.start()
    await eventually(lambda: len(first.manager.leases.held) == 30, timeout=20)
    second = await cluster.node("b")
    second.start()
    await eventually(lambda: held_counts([first, second]) == [15, 15], timeout=20)
    assert first.tenant.running.isdisjoint(second.tenant.running)


async def test_a_busy_app_is_handed_over_only_when_idle(cluster: Cluster) -> None:
    first = await cluster.node("a")
    first.tenant.busy_apps = set(APPS)
    first.start()
    await eventually(lambda: len(first.manager.leases.held) == 30, timeout=20)
    second = await cluster.node("b")
    second.start()
    await asyncio.sleep(LOOK * 10)
    assert len(first.manager.leases.held) == 30 and not second.manager.leases.held
    first.tenant.busy_apps = set()
    await eventually(lambda: held_counts([first, second]) == [15, 15], timeout=20)


async def test_a_paused_daemon_writes_no_state_for_apps_it_lost(cluster: Cluster) -> None:
    a = await cluster.node("a", ["web"])
    a.start()
    await eventually(lambda: a.ownership.holds("web"), timeout=20)
    memory = a.manager.store.load("web")
    memory.hold = Hold("c" * 40, "circuit breaker", "fp")
    assert await a.manager.store.save("web")
    assert a.manager.leases.valid("web")

    await a.pause()  # SIGSTOP: no rounds, its clock runs on
    b = await cluster.node("b", ["web"])
    b.start()
    await eventually(lambda: b.ownership.holds("web"), timeout=TTL + 10)
    assert b.manager.store.load("web").hold is not None  # the Failed hold moved with it

    # SIGCONT: before its next round it still believes it holds the app.
    assert a.ownership.holds("web")
    assert not a.manager.leases.valid("web")
    with pytest.raises(LeaseNotHeld, match="could not be renewed"):
        a.ownership.fence("web").check("UpdateService")
    a.manager.store.load("web").hold = None
    assert not await a.manager.store.save("web")
    assert "taken by another daemon" in (a.manager.store.write_error("web") or "")
    assert b.manager.store.load("web").hold is not None
    # Its next round sees the lease gone and stops the app.
    a.start()
    await eventually(lambda: not a.ownership.holds("web"), timeout=10)
    assert "web" not in a.tenant.running


async def test_racing_acquisitions_have_exactly_one_winner(cluster: Cluster) -> None:
    tables = [await cluster.table() for _ in range(4)]
    for round_ in range(40):
        app = f"race-{round_}"
        won = await asyncio.gather(
            *(t.acquire(app, me=f"host-{i}", seen=None, now=0.0) for i, t in enumerate(tables))
        )
        assert sum(v is not None for v in won) == 1, won


async def test_a_nudge_written_anywhere_reaches_the_owner(cluster: Cluster) -> None:
    nodes = [await cluster.node(h, ["web"]) for h in ("a", "b")]
    for node in nodes:
        node.start()
    await eventually(lambda: any(n.ownership.holds("web") for n in nodes), timeout=20)
    owner = next(n for n in nodes if n.ownership.holds("web"))
    other = next(n for n in nodes if n is not owner)

    async def published() -> bool:
        await other.ownership.read_statuses()
        return other.ownership.remote_status("web") is not None

    await eventually(published, timeout=10)
    await other.ownership.forward_nudge("web")
    await eventually(lambda: ("web", "nudges") in owner.tenant.pokes, timeout=5)
    await other.ownership.forward_sync("web")
    await eventually(lambda: ("web", "syncs") in owner.tenant.pokes, timeout=5)
    host = owner.manager.host_id
    assert other.ownership.elsewhere("web") == f"{host} (http://127.0.0.1/{host})"
    assert owner.ownership.elsewhere("web") is None
    status = other.ownership.remote_status("web")
    assert status is not None and status["phase"] == "InSync"
    assert other.ownership.ownership("web")["owner"] == host
    assert other.ownership.ownership("web")["here"] is False

    # The table refusing the write is said to whoever asked, in one line naming the app.
    cluster.aws.faults.inject("UpdateItem", times=100_000, code="ThrottlingException")
    try:
        with pytest.raises(NotForwarded, match="sync of 'web'") as refused:
            await other.ownership.forward_sync("web")
    finally:
        cluster.aws.faults.clear()
    assert "\n" not in str(refused.value)


async def test_after_the_table_failed_for_longer_than_the_ttl_every_app_has_one_owner(
    cluster: Cluster,
) -> None:
    """Both daemons' heartbeats fail past the TTL; whichever recovers first, no app ends up
    run twice or by nobody."""
    nodes = [await cluster.node(h, APPS[:8]) for h in ("a", "b")]
    for node in nodes:
        node.start()
    await eventually(lambda: held_counts(nodes) == [4, 4], timeout=20)
    for action in ("Query", "PutItem", "UpdateItem", "DeleteItem", "BatchGetItem"):
        cluster.aws.faults.inject(action, times=100_000, code="ThrottlingException")
    try:
        await asyncio.sleep(TTL * 1.5)
        assert not any(n.manager.leases.valid(a) for n in nodes for a in APPS[:8])
    finally:
        cluster.aws.faults.clear()
    overlaps: list[set[str]] = []

    def settled() -> bool:
        a, b = (n.tenant.running for n in nodes)
        if a & b:
            overlaps.append(a & b)
        return len(a | b) == 8 and not a & b

    # Whoever recovers first may take every app and hand half back when the other's
    # heartbeat is current again; in between an app may be run by nobody for a moment,
    # never by both.
    def valid_counts() -> list[int]:
        return sorted(sum(map(n.manager.leases.valid, n.manager.leases.held)) for n in nodes)

    await eventually(lambda: settled() and valid_counts() == [4, 4], timeout=30)
    await asyncio.sleep(LOOK * 5)
    assert settled()
    assert overlaps == []
    owners = await cluster.owners()
    assert sorted(Counter(o for a, o in owners.items() if a in APPS[:8]).values()) == [4, 4]


async def test_a_round_that_takes_many_apps_slowly_keeps_the_heartbeat_on_time(
    cluster: Cluster,
) -> None:
    """Starting 40 loops takes far longer than the TTL one after another; the heartbeat
    does not wait for them, so no lease lapses and nothing is given up."""
    apps = [f"slow-{i:02d}" for i in range(40)]
    node = await cluster.node("a", apps)
    node.tenant.take_delay = TTL / 4
    node.start()
    await eventually(lambda: len(node.tenant.running) == 40, timeout=30)
    await asyncio.sleep(TTL)
    assert node.tenant.given_up == []
    assert set(node.manager.leases.held) == set(apps)
    assert all(node.manager.leases.valid(app) for app in apps)


async def test_what_was_said_about_an_app_moves_with_its_lease(cluster: Cluster) -> None:
    adopted: dict[str, list[tuple[str, str | None]]] = {"a": [], "b": []}

    def adopting(host: str) -> Callable[[str, str | None], None]:
        return lambda app, text: adopted[host].append((app, text))

    nodes = [await cluster.node(h, APPS[:2], adopt_feedback=adopting(h)) for h in ("a", "b")]
    for node in nodes:
        node.start()
    await eventually(lambda: held_counts(nodes) == [1, 1], timeout=20)
    a, b = nodes
    (mine,) = a.manager.leases.held
    (theirs,) = b.manager.leases.held
    assert sorted(adopted["a"] + adopted["b"]) == sorted([(mine, None), (theirs, None)])
    table = await cluster.table()
    a.ownership.mirror_feedback(mine, '{"said": 1}')
    a.ownership.mirror_feedback(theirs, '{"not": "mine"}')  # a does not hold it: not written
    await eventually(
        lambda: a.ownership._feedback_writer is not None and a.ownership._feedback_writer.done(),
        timeout=5,
    )
    taken = await table.read_taken([mine, theirs])
    assert taken[mine].feedback == '{"said": 1}'
    assert theirs not in taken or taken[theirs].feedback is None
    old = a.manager.leases.version(mine)
    assert old is not None
    await a.pause()
    await eventually(lambda: mine in b.tenant.running, timeout=TTL + 10)
    assert (mine, '{"said": 1}') in adopted["b"]
    # The lease is the fence: the daemon that lost it can no longer change the record.
    assert not await table.write_feedback(mine, me="a", version=old, record='{"late": 1}')
    assert (await table.read_taken([mine]))[mine].feedback == '{"said": 1}'


async def test_a_status_published_under_an_older_lease_is_not_shown(cluster: Cluster) -> None:
    """A daemon that lost an app and still publishes its status cannot overwrite the new
    owner's, and what it published before is not shown as the new owner's."""
    table = await cluster.table()
    for host in ("a", "b"):
        await table.heartbeat(Member(host_id=host, expires_at=1e12))
    first = await table.acquire("web", me="a", seen=None, now=0)
    assert first == 1
    assert await table.publish_status("web", me="a", version=1, status={"phase": "Deploying"})
    view = (await table.view()).leases["web"]
    second = await table.acquire("web", me="b", seen=view, now=0)
    assert second == 2
    reader = await cluster.node("c", ["web"])
    await reader.manager.round()
    await reader.ownership.read_statuses()
    assert reader.ownership.remote_status("web") is None  # b has published nothing yet
    assert await table.publish_status("web", me="b", version=2, status={"phase": "InSync"})
    assert not await table.publish_status("web", me="a", version=1, status={"phase": "Failed"})
    reader.ownership._statuses_read_at = float("-inf")
    await reader.ownership.read_statuses()
    assert reader.ownership.remote_status("web") == {"phase": "InSync"}


async def test_a_daemon_whose_host_id_is_taken_while_it_runs_stops_its_apps_and_says_so(
    cluster: Cluster,
) -> None:
    """Another process writes under its host id: its next heartbeat is refused, every loop
    stops, and run() ends with HostIdInUse itself (the daemon exits 2 on it)."""
    node = await cluster.node("a")
    node.start()
    await eventually(lambda: len(node.manager.leases.held) == len(APPS), timeout=20)
    table = await cluster.table()
    intruder = Member(host_id="a", expires_at=1e12, url="http://elsewhere", instance="other")
    for _ in range(5):  # its own heartbeat may change the item between the read and the write
        mine = await table.member("a")
        assert mine is not None and mine.instance == node.ownership.instance
        if await table.heartbeat(intruder, replacing=mine):
            break
    else:
        raise AssertionError("the member item kept changing")
    assert node.task is not None
    with pytest.raises(HostIdInUse, match="in use by a running daemon at http://elsewhere"):
        await asyncio.wait_for(node.task, timeout=TTL * 2)
    node.task = None
    # Whatever its loops were doing, no write of theirs passes the fence any more.
    assert not any(node.manager.leases.valid(app) for app in APPS)
