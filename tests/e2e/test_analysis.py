"""Metric analysis on the real stack (SPEC 21): a release is measured during its bake by a
real Prometheus scraping an exporter the test controls, and by CloudWatch on the sandbox;
a healthy release goes InSync with its values in status and history, a spike or no data
rolls it back and holds it with the check, its query and its values.

Real git, dockerd, registry, Prometheus and the sandbox AWS (ROLLING with a bake)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from reconciler.sandbox.aws import SandboxAws
from reconciler.sandbox.scenario import Scenario
from tests.support.config import Table, TomlValue
from tests.support.prometheus import Exporter, exporter, prometheus
from tests.support.world import RunningDaemon, World

pytestmark = [pytest.mark.slow]

BAKE = Scenario("complete", after=0.3, bake=4.0)


@pytest.fixture
def baking(tmp_path: Path, aws: SandboxAws, registry: str, docker_engine: str) -> World:
    """An app whose service bakes (ECS says a minute; the sandbox bakes BAKE's seconds)."""
    aws.faults.clear()
    return World.create(tmp_path, aws, registry, bake_minutes=1)


@pytest.fixture
async def scraped(tmp_path: Path) -> AsyncIterator[tuple[Exporter, str]]:
    async with exporter() as metrics:
        metrics.values["e2e_error_rate"] = 0.0
        async with prometheus(tmp_path / "prometheus", metrics.target) as url:
            yield metrics, url


def rate_check(url: str, **more: TomlValue) -> Table:
    return {
        "name": "5xx-rate",
        "prometheus": {"url": url, "query": "max(e2e_error_rate)"},
        "max": 0.5,
        "interval": "1s",
        "count": 3,
        **more,
    }


async def release(world: World, daemon: RunningDaemon, text: str) -> str:
    world.aws.rollouts.set_scenario(world.cluster, world.name, BAKE)
    revision = world.repo.commit({"app.txt": text}, text.strip())
    await daemon.github_push()
    return revision


async def failed(daemon: RunningDaemon, revision: str) -> dict[str, Any]:
    return await daemon.wait_for(
        lambda s: (
            s["phase"] == "Failed"
            and bool(s["history"])
            and s["history"][0]["revision"] == revision
        ),
        what=f"Failed at {revision[:12]}",
    )


async def test_a_healthy_release_passes_and_a_spike_in_its_bake_rolls_it_back(
    baking: World, scraped: tuple[Exporter, str]
) -> None:
    """Good values through the bake: InSync, the three values in status and history. Then
    the error rate jumps before the next release: its analysis fails during the bake, the
    service goes back to the previous release, and the revision is held with the check's
    name, query and values."""
    metrics, url = scraped
    baking.app_overrides["analysis"] = [rate_check(url)]
    async with baking.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=baking.first_commit)
        second = await release(baking, daemon, "version 2\n")
        good = await daemon.wait_phase("InSync", revision=second)
        (check,) = good["analysis"]["checks"]
        assert (good["analysis"]["state"], check["verdict"], check["values"]) == (
            "passed",
            "passed",
            [0.0, 0.0, 0.0],
        )
        assert good["history"][0]["analysis"][0]["values"] == [0.0, 0.0, 0.0]

        metrics.values["e2e_error_rate"] = 3.0
        third = await release(baking, daemon, "version 3\n")
        held = await failed(daemon, third)
        entry = held["history"][0]
        assert entry["result"] == "rolled_back"
        assert entry["analysis"][0]["verdict"] == "failed"
        assert "analysis 5xx-rate failed" in held["last_error"]
        assert "prometheus max(e2e_error_rate) = [3]" in held["last_error"]
        await daemon.wait_for(
            lambda s: s["live"]["image"] == baking.image(second), what="back on the second"
        )
        assert baking.live_image() == baking.image(second)


async def test_no_data_fails_the_release_unless_the_check_lets_it_pass(
    baking: World, scraped: tuple[Exporter, str]
) -> None:
    """Two checks of a metric nobody exports: the one with on_no_data = "pass" passes, the
    one with "fail" fails the app's first release (rolled back, held, said why)."""
    _, url = scraped
    missing: Table = {"prometheus": {"url": url, "query": "max(e2e_nobody_exports_this)"}}
    baking.app_overrides["analysis"] = [
        rate_check(url, name="lenient", on_no_data="pass", count=2, **missing),
        rate_check(url, name="strict", count=2, **missing),
    ]
    baking.aws.rollouts.set_scenario(baking.cluster, baking.name, BAKE)
    async with baking.daemon() as daemon:
        held = await failed(daemon, baking.first_commit)
        assert held["history"][0]["result"] == "rolled_back"
        assert "analysis strict failed: no data" in held["last_error"]
        assert "lenient" not in held["last_error"]
        verdicts = {c["name"]: c["verdict"] for c in held["analysis"]["checks"]}
        assert verdicts["strict"] == "failed"
        assert verdicts["lenient"] in ("running", "passed")
        assert baking.live_image() != baking.image(baking.first_commit)


async def test_a_cloudwatch_metric_past_its_max_rolls_the_release_back(baking: World) -> None:
    """CloudWatch through the sandbox (PutMetricData, then the daemon's GetMetricData with the
    app's identity): a good latency lets the first release through; one past max during the
    next release's bake fails it."""
    namespace = f"e2e/{uuid.uuid4().hex[:8]}"
    aws = baking.aws
    client = boto3.client("cloudwatch", region_name=aws.region, endpoint_url=aws.endpoint_url)

    def latency(value: float) -> None:
        client.put_metric_data(
            Namespace=namespace,
            MetricData=[{"MetricName": "Latency", "Value": value, "Timestamp": datetime.now(UTC)}],
        )

    query: Table = {
        "Id": "p99",
        "MetricStat": {
            "Metric": {"Namespace": namespace, "MetricName": "Latency"},
            "Period": 60,
            "Stat": "Maximum",
        },
    }
    baking.app_overrides["analysis"] = [
        {
            "name": "latency",
            "cloudwatch": {"metric_data_queries": [query]},
            "max": 1.0,
            "interval": "1s",
            "count": 2,
        }
    ]
    latency(0.2)
    async with baking.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=baking.first_commit)
        latency(2.5)
        second = await release(baking, daemon, "version 2\n")
        held = await failed(daemon, second)
        assert held["history"][0]["result"] == "rolled_back"
        assert f"cloudwatch {namespace}/Latency Maximum/60s = [2.5" in held["last_error"]
        assert baking.live_image() == baking.image(baking.first_commit)
