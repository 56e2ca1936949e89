"""What sharing the apps through leases costs: DynamoDB calls in steady state, and how long a
dead daemon's apps stay without an owner.

Each daemon is a `python -m bench.lease_node` process: the real LeaseManager and LeaseTable
(aiobotocore to the sandbox's DynamoDB) with production timings, a stand-in for the app loops.
- Steady state: three daemons, ttl 30 s and a look every 1.5 s (the defaults); once the
  spread `assign` gives has settled, a window in which each daemon's requests are counted (by
  the daemon, at botocore's before-send) and all DynamoDB calls the sandbox saw (the total).
- Takeover: three daemons at a shorter ttl; one is SIGKILLed at a random moment of its
  heartbeat cycle, and the figure is the time from its death until every app is held again
  (its own apps taken over, and any app the survivors hand each other as the spread changes).
  The moments come from the survivors' own clocks when they take an app (no polling of the
  table while it happens: in the sandbox a 500-item Query holds DynamoDB for ~0.2 s, and
  polling would slow the very takeovers it measures); the table is read after, to check.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import signal
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import botocore.session

from bench.lease_node import REGION, app_names
from bench.sandbox import CREDENTIALS, timed_calls
from bench.stats import Row, Summary, number, spread
from reconciler.cluster.assignment import assign
from reconciler.cluster.ownership import LOOK_EVERY
from reconciler.cluster.table import LeaseTable
from reconciler.sandbox import SandboxAws

PROJECT = Path(__file__).resolve().parent.parent
# The actions sent as X-Amz-Target DynamoDB_20120810.<Action>. The sandbox counts calls by
# action name, and ECS shares one of these (TagResource, which leases never send); no daemon
# runs while the leases are measured, so these names count the leases' calls.
_MODEL = botocore.session.get_session().get_service_model("dynamodb")
DYNAMODB_ACTIONS = frozenset(_MODEL.operation_names)
LINE_LIMIT = 1024 * 1024  # a snapshot names every app it holds


@dataclass(frozen=True)
class LeaseSizes:
    apps: int
    daemons: int
    window: float  # seconds of steady state measured
    steady_ttl: float
    takeover_ttl: float
    samples: int  # daemons killed, one after the other


FULL = LeaseSizes(apps=500, daemons=3, window=20, steady_ttl=30, takeover_ttl=10, samples=3)
QUICK = LeaseSizes(apps=30, daemons=3, window=4, steady_ttl=30, takeover_ttl=4, samples=1)


@dataclass(frozen=True)
class Takeover:
    lost: int  # apps the dead daemon held
    seconds: float  # death -> every app held again by a live daemon
    own_apps_seconds: float  # death -> every app of the dead daemon held again
    expiry_after_death: float  # when its member item ran out, after its death
    first_take_after_expiry: float
    last_take_after_expiry: float
    moved_between_survivors: int  # apps the survivors handed each other meanwhile
    retaken_by_survivors: int  # their own apps they dropped and took again (lapses)
    lapses: int  # `leases_lapsed` from the death until the spread settled


@dataclass
class LeaseResults:
    sizes: LeaseSizes
    spread_seconds: float = math.nan  # start of the daemons -> spread settled (steady state)
    spread_calls: dict[str, int] = field(default_factory=dict)
    spread_lapses: int = 0  # `leases_lapsed` before the spread settled
    window_seconds: float = math.nan
    per_daemon: dict[str, dict[str, int]] = field(default_factory=dict)  # calls in the window
    per_daemon_rate: dict[str, float] = field(default_factory=dict)  # calls per second
    sandbox_calls: dict[str, int] = field(default_factory=dict)  # all DynamoDB, the window
    view_kilobytes: float = math.nan  # one view's items, roughly as DynamoDB sizes them
    status_kilobytes: float = math.nan  # every published status, read for a /status
    takeovers: list[Takeover] = field(default_factory=list)
    takeover_lapses: int = 0  # `leases_lapsed` in the takeover scenario, all daemons


@dataclass(frozen=True)
class Snapshot:
    at: float
    sent: Counter[str]
    held: frozenset[str]
    taken_at: dict[str, float]


@dataclass
class Node:
    """A running lease node: its process, read on stdout, logging to a file."""

    host: str
    process: asyncio.subprocess.Process
    log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def line(self, *, within: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout=within)
        if not raw:
            raise RuntimeError(f"lease node {self.host} ended; see {self.log.name}")
        return dict(json.loads(raw))

    async def snapshot(self) -> Snapshot:
        self.process.send_signal(signal.SIGUSR1)
        document = await self.line(within=10)
        return Snapshot(
            at=float(document["at"]),
            sent=Counter(document["sent"]),
            held=frozenset(document["held"]),
            taken_at=dict(document["taken_at"]),
        )

    def lapses(self) -> int:
        """How often it dropped every lease after a heartbeat gap (`leases_lapsed`)."""
        return Path(self.log.name).read_text().count('"leases_lapsed"')

    async def stop(self) -> None:
        """SIGTERM by its PID and reap it; SIGKILL if it has not ended 10 s later."""
        if self.alive:
            os.kill(self.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout=10)
            except TimeoutError:
                os.kill(self.pid, signal.SIGKILL)
                await asyncio.wait_for(self.process.wait(), timeout=10)
        self.log.close()


@dataclass
class Pool:
    """Lease nodes on one table; `live` in the order they started."""

    endpoint: str
    table: str
    ttl: float
    apps: int
    logs: Path
    nodes: list[Node] = field(default_factory=list)

    @property
    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.alive]

    async def start(self, hosts: list[str]) -> list[Node]:
        """Start the nodes together (so none takes every app before the others announce
        themselves) and wait until each has its signal handlers."""
        started = [await self._spawn(host) for host in hosts]
        for node in started:
            ready = await node.line(within=60)
            if not ready.get("ready"):
                raise RuntimeError(f"lease node {node.host} said {ready}")
        return started

    async def _spawn(self, host: str) -> Node:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = (self.logs / f"{host}.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.lease_node",
            "--endpoint",
            self.endpoint,
            "--table",
            self.table,
            "--host",
            host,
            "--ttl",
            str(self.ttl),
            "--apps",
            str(self.apps),
            cwd=PROJECT,
            env={**os.environ, **CREDENTIALS},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            limit=LINE_LIMIT,
        )
        node = Node(host, process, log)
        self.nodes.append(node)
        return node

    async def snapshots(self) -> dict[str, Snapshot]:
        return {node.host: await node.snapshot() for node in self.live}

    async def wait_spread(self, *, within: float) -> dict[str, Snapshot]:
        """Until every live node holds exactly what `assign` gives it over the live nodes."""
        wanted = self.wanted()
        deadline = time.monotonic() + within
        while True:
            snapshots = await self.snapshots()
            if all(s.held == wanted[host] for host, s in snapshots.items()):
                return snapshots
            if time.monotonic() > deadline:
                counts = {host: len(s.held) for host, s in snapshots.items()}
                raise TimeoutError(f"apps not spread after {within:g} s: held {counts}")
            await asyncio.sleep(0.25)

    async def settle(self, table: LeaseTable, *, within: float) -> dict[str, Snapshot]:
        """Until the spread holds still: every live node holds what `assign` gives it, the
        table agrees and shows every status published, and no node took an app in the two
        looks after. A spread reached is not yet a settled one: a daemon whose round of
        takes outlasted most of the TTL drops every lease at its next heartbeat and takes
        them again (`leases_lapsed`)."""
        deadline = time.monotonic() + within
        while True:
            before = await self.wait_spread(within=max(1.0, deadline - time.monotonic()))
            if await check_table(table, self.wanted()) == 0:
                await asyncio.sleep(2 * LOOK_EVERY)
                after = await self.snapshots()
                if all(after[h].taken_at == s.taken_at for h, s in before.items()):
                    return after
            if time.monotonic() > deadline:
                raise TimeoutError(f"the spread did not settle within {within:g} s")
            await asyncio.sleep(LOOK_EVERY)

    def lapses(self) -> int:
        return sum(node.lapses() for node in self.nodes)

    def wanted(self) -> dict[str, frozenset[str]]:
        owners = assign(app_names(self.apps), [n.host for n in self.live])
        return {n.host: frozenset(a for a, o in owners.items() if o == n.host) for n in self.live}


@asynccontextmanager
async def lease_pool(
    aws: SandboxAws, *, ttl: float, apps: int, logs: Path
) -> AsyncIterator[tuple[Pool, LeaseTable]]:
    """A fresh table and a pool of nodes on it; every node is stopped on the way out."""
    name = f"bench-leases-{uuid.uuid4().hex[:8]}"
    async with LeaseTable.connect(name=name, region=REGION, endpoint_url=aws.endpoint_url) as table:
        await table.create()
        pool = Pool(aws.endpoint_url, name, ttl, apps, logs)
        try:
            yield pool, table
        finally:
            for node in pool.nodes:
                await node.stop()


async def check_table(table: LeaseTable, wanted: dict[str, frozenset[str]]) -> int:
    """Raise unless the table's owners are what the nodes say they hold; how many of their
    statuses are not published yet."""
    view = await table.view()
    for host, apps in wanted.items():
        wrong = sorted(a for a in apps if (i := view.leases.get(a)) is None or i.owner != host)
        if wrong:
            raise RuntimeError(f"the table does not give {host} {wrong[:5]} (of {len(wrong)})")
    published = await table.statuses()
    return sum(
        1
        for app, item in view.leases.items()
        if (p := published.get(app)) is None or p.version != item.version
    )


async def kilobytes(table: LeaseTable) -> tuple[float, float]:
    """The cluster view's items and the published statuses, roughly as DynamoDB sizes them
    for read units."""
    view = await table.view()
    statuses = await table.statuses()
    leases = sum(_item_bytes("", item.owner) for item in view.leases.values())
    published = sum(
        _item_bytes(json.dumps(p.status, separators=(",", ":")), "") for p in statuses.values()
    )
    return leases / 1024, published / 1024


def _item_bytes(text: str, owner: str | None) -> int:
    # DynamoDB sizes an item by its attribute names and values; the numbers and keys add
    # about 60 bytes to the strings.
    return 60 + len(text.encode()) + len((owner or "").encode())


async def run_leases(aws: SandboxAws, root: Path, sizes: LeaseSizes, *, log: Any) -> LeaseResults:
    results = LeaseResults(sizes)
    await _steady(aws, root / "steady", sizes, results, log)
    await _takeovers(aws, root / "takeover", sizes, results, log)
    return results


def _hosts(count: int, start: int = 0) -> list[str]:
    return [f"daemon-{index}" for index in range(start, start + count)]


async def _steady(
    aws: SandboxAws, logs: Path, sizes: LeaseSizes, results: LeaseResults, log: Any
) -> None:
    calls = timed_calls(aws)
    log(f"leases: {sizes.daemons} daemons share {sizes.apps} apps (ttl {sizes.steady_ttl:g} s)")
    async with lease_pool(aws, ttl=sizes.steady_ttl, apps=sizes.apps, logs=logs) as (pool, table):
        began = time.monotonic()
        await pool.start(_hosts(sizes.daemons))
        await pool.settle(table, within=300)
        settled = time.monotonic()
        results.spread_seconds = settled - began
        results.spread_calls = _dynamodb(calls.counts(began, settled))
        results.spread_lapses = pool.lapses()
        results.view_kilobytes, results.status_kilobytes = await kilobytes(table)
        log(f"leases: settled in {results.spread_seconds:.1f} s; measuring {sizes.window:g} s")
        first = await pool.snapshots()
        start = min(s.at for s in first.values())
        await asyncio.sleep(sizes.window)
        last = await pool.snapshots()
        end = max(s.at for s in last.values())
        results.window_seconds = end - start
        results.sandbox_calls = _dynamodb(calls.counts(start, end))
        for host, snapshot in last.items():
            sent = snapshot.sent - first[host].sent
            results.per_daemon[host] = dict(sent)
            results.per_daemon_rate[host] = sent.total() / (snapshot.at - first[host].at)


def _dynamodb(counts: Counter[str]) -> dict[str, int]:
    return {action: n for action, n in sorted(counts.items()) if action in DYNAMODB_ACTIONS}


async def _takeovers(
    aws: SandboxAws, logs: Path, sizes: LeaseSizes, results: LeaseResults, log: Any
) -> None:
    ttl = sizes.takeover_ttl
    async with lease_pool(aws, ttl=ttl, apps=sizes.apps, logs=logs) as (pool, table):
        await pool.start(_hosts(sizes.daemons))
        for sample in range(sizes.samples):
            if sample:
                # A fresh daemon in the dead one's place: the next victim dies in a cluster
                # of the same size, after the spread has settled again.
                await pool.start(_hosts(1, start=sizes.daemons + sample - 1))
            await pool.settle(table, within=300)
            victim = pool.live[0]
            log(f"leases: SIGKILL {victim.host} (ttl {ttl:g} s), {sample + 1}/{sizes.samples}")
            results.takeovers.append(await _takeover(pool, table, victim, ttl=ttl))
        results.takeover_lapses = pool.lapses()


async def _takeover(pool: Pool, table: LeaseTable, victim: Node, *, ttl: float) -> Takeover:
    # A random moment of its heartbeat cycle (one every ttl/3): the sooner after a heartbeat
    # it dies, the longer its member item outlives it.
    await asyncio.sleep(random.uniform(0, ttl / 3))
    before = await pool.snapshots()
    lapses = pool.lapses()
    os.kill(victim.pid, signal.SIGKILL)
    died = time.monotonic()
    died_wall = time.time()
    await asyncio.wait_for(victim.process.wait(), timeout=10)
    view = await table.view()
    lost = frozenset(a for a, item in view.leases.items() if item.owner == victim.host)
    if not lost:
        raise RuntimeError(f"{victim.host} held no app when it was killed")
    expiry = died + view.members[victim.host].expires_at - died_wall
    after = await pool.settle(table, within=ttl + 300)
    # The apps taken since the death: the dead one's and those the survivors handed each
    # other as the spread over two daemons differs from the spread over three.
    taken = {a: t for s in after.values() for a, t in s.taken_at.items() if t > died}
    if not lost <= set(taken):
        raise RuntimeError(f"apps of {victim.host} held again without a take: {lost - set(taken)}")
    held_before = {a: host for host, s in before.items() if host != victim.host for a in s.held}
    held_after = {a: host for host, s in after.items() for a in s.held}
    survivors = [a for a in taken if a in held_before]
    moved = sum(1 for a in survivors if held_after[a] != held_before[a])
    own = [taken[a] for a in lost]
    return Takeover(
        lost=len(lost),
        seconds=max(taken.values()) - died,
        own_apps_seconds=max(own) - died,
        expiry_after_death=expiry - died,
        first_take_after_expiry=min(own) - expiry,
        last_take_after_expiry=max(own) - expiry,
        moved_between_survivors=moved,
        retaken_by_survivors=len(survivors) - moved,
        lapses=pool.lapses() - lapses,
    )


def lease_rows(results: LeaseResults) -> list[Row]:
    return [_steady_row(results), _takeover_row(results)]


def _steady_row(results: LeaseResults) -> Row:
    sizes = results.sizes
    rates = list(results.per_daemon_rate.values())
    median = statistics.median(rates) if rates else math.nan
    worst = max(rates, default=math.nan)
    window = results.window_seconds
    actions: Counter[str] = Counter()
    for sent in results.per_daemon.values():
        actions.update(sent)
    daemons = max(1, len(results.per_daemon))
    per_action = ", ".join(
        f"{a} {number(n / daemons / window)}/s" for a, n in sorted(actions.items())
    )
    sandbox_total = sum(results.sandbox_calls.values())
    # A Query page stops at 1 MB of items (moto counts 1,000,000 bytes).
    per_app = results.view_kilobytes * 1024 / sizes.apps
    page_apps = str(math.floor(1_000_000 / per_app)) if per_app > 0 else "n/a"
    spread_calls = ", ".join(f"{a} {n}" for a, n in results.spread_calls.items())
    return Row(
        f"leases ({sizes.apps} apps, {sizes.daemons} daemons): DynamoDB calls per daemon per "
        "second, steady state",
        f"{number(median)}/s (max {number(worst)}/s over daemons)",
        target="<= 1 per daemon",
        met=worst <= 1,
        note=(
            f"ttl {sizes.steady_ttl:g} s, a look every {LOOK_EVERY:g} s (the defaults); window "
            f"of {number(window, 's')} once the spread `assign` gives had settled (statuses "
            f"published, no take for two looks). Per daemon, "
            f"counted by the daemon at botocore's before-send: {per_action}. The sandbox saw "
            f"{sandbox_total} DynamoDB calls in the window ({number(sandbox_total / window)}/s "
            f"for all {sizes.daemons}). Each look's Query reads every member and lease item, "
            f"about {number(results.view_kilobytes, 'KB')}: a Query page holds 1 MB, so a look "
            f"takes one Query up to about {page_apps} apps. What the owners published (InSync "
            f"statuses, {number(results.status_kilobytes, 'KB')}) is read only for a /status or "
            "a dashboard page, at most once a look. The spread settled "
            f"{number(results.spread_seconds, 's')} after the daemons' start, with "
            f"{results.spread_lapses} `leases_lapsed` on the way; calls until then (the "
            f"benchmark's checks of the table included): "
            f"{spread_calls}."
        ),
    )


def _takeover_row(results: LeaseResults) -> Row:
    sizes = results.sizes
    ttl = sizes.takeover_ttl
    takeovers = results.takeovers
    seconds = Summary.of([t.seconds for t in takeovers])

    def median_of(value: Callable[[Takeover], float]) -> str:
        return number(statistics.median(value(t) for t in takeovers), "s") if takeovers else "n/a"

    def each(value: Callable[[Takeover], int]) -> str:
        return ", ".join(str(value(t)) for t in takeovers)

    return Row(
        f"lease takeover after a daemon dies: death -> every app held again (ttl {ttl:g} s)",
        spread(seconds, "s") + f", max {number(seconds.maximum, 's')}",
        target=f"<= lease_ttl + 2 s ({ttl + 2:g} s)",
        met=seconds.maximum <= ttl + 2,
        note=(
            f"{sizes.daemons} daemons share {sizes.apps} apps, a look every {LOOK_EVERY:g} s; "
            f"one SIGKILLed at a random moment of its heartbeat cycle (one every ttl/3), a "
            f"fresh daemon started in its place before the next sample. Medians: its member "
            f"item ran out {median_of(lambda t: t.expiry_after_death)} after its death (between "
            f"2/3 ttl and ttl by design); the first of its apps was taken "
            f"{median_of(lambda t: t.first_take_after_expiry)} after that (each survivor "
            "looks as it runs out), the last "
            f"{median_of(lambda t: t.last_take_after_expiry)} after it ran out "
            f"({median_of(lambda t: t.own_apps_seconds)} after the death): each survivor "
            "takes its share 8 apps at a time (8 conditional UpdateItems, then one "
            "BatchGetItem for their state), but the sandbox serves DynamoDB one request at a "
            "time, so the two survivors' takes queue behind each other. Per sample: apps it "
            f"held {each(lambda t: t.lost)}; moved between the survivors "
            f"{each(lambda t: t.moved_between_survivors)}; dropped and taken again by a "
            f"survivor {each(lambda t: t.retaken_by_survivors)} (`leases_lapsed` "
            f"{each(lambda t: t.lapses)}; {results.takeover_lapses} in the whole scenario, "
            "cold start included). Times from the survivors' clocks at each take (acquire "
            "and adopt done), checked against the table. Judged on the maximum."
        ),
    )
