"""Where analysis checks read their values (SPEC 21), against the real things: Prometheus
(Debian's package) scraping an exporter the test controls, and CloudWatch's GetMetricData
on the sandbox (moto server) over the real aiobotocore wire path."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from reconciler.adapters.metrics import MetricSources
from reconciler.config import AnalysisCheck
from reconciler.errors import MetricsRefused, MetricsUnavailable
from reconciler.sandbox.aws import SandboxAws
from tests.support.net import free_port
from tests.support.prometheus import Exporter, exporter, prometheus


def check(**source: Any) -> AnalysisCheck:
    return AnalysisCheck.model_validate(
        {"name": "c", "max": 1, "interval": "10s", "count": 1, **source}
    )


@pytest.fixture
async def scraped(tmp_path: Path) -> AsyncIterator[tuple[Exporter, str]]:
    async with exporter() as metrics:
        metrics.values.update({"e2e_rate": 0.25, "e2e_by_pod_a": 1.0})
        async with prometheus(tmp_path / "prometheus", metrics.target) as url:
            yield metrics, url


async def test_prometheus_answers_a_scalar_a_series_or_no_data(
    scraped: tuple[Exporter, str],
) -> None:
    """One series' value, a scalar's value, and None for a query with no series."""
    _, url = scraped
    sources = MetricSources(region="us-east-1")

    async def value(query: str) -> float | None:
        return await sources.measure(check(prometheus={"url": url, "query": query}))

    assert await value("max(e2e_rate)") == 0.25
    assert await value("scalar(max(e2e_rate)) * 4") == 1.0
    assert await value("e2e_metric_nobody_exports") is None


async def test_prometheus_refuses_several_series_and_a_bad_query(
    scraped: tuple[Exporter, str],
) -> None:
    """Several series are refused (aggregate them); so is a query Prometheus cannot parse,
    with what it said."""
    _, url = scraped
    sources = MetricSources(region="us-east-1")
    with pytest.raises(MetricsRefused, match="2 series, not one"):
        await sources.measure(
            check(prometheus={"url": url, "query": '{__name__=~"e2e_rate|e2e_by_pod_a"}'})
        )
    with pytest.raises(MetricsRefused, match=r"Prometheus refused the query: .*parse error"):
        await sources.measure(check(prometheus={"url": url, "query": "sum(("}))


async def test_a_prometheus_nobody_answers_at_is_unavailable_not_a_pass() -> None:
    """A refused connection is MetricsUnavailable (the stage asks again), never a value."""
    nowhere = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MetricsUnavailable, match="unreachable"):
        await MetricSources(region="us-east-1").measure(
            check(prometheus={"url": nowhere, "query": "up"})
        )


def latency(namespace: str) -> list[dict[str, Any]]:
    return [
        {
            "Id": "p99",
            "MetricStat": {
                "Metric": {"Namespace": namespace, "MetricName": "Latency"},
                "Period": 60,
                "Stat": "Maximum",
            },
        }
    ]


async def test_cloudwatch_answers_the_newest_value_or_no_data(aws: SandboxAws) -> None:
    """GetMetricData through the app's session: the newest datapoint's statistic of the one
    query returning data; a metric with no datapoints is no data."""
    namespace = f"e2e/{uuid.uuid4().hex[:8]}"
    sources = MetricSources(region=aws.region, endpoint_url=aws.endpoint_url)
    queries = {"cloudwatch": {"metric_data_queries": latency(namespace)}}
    assert await sources.measure(check(**queries)) is None
    client = boto3.client("cloudwatch", region_name=aws.region, endpoint_url=aws.endpoint_url)
    now = datetime.now(UTC)
    client.put_metric_data(
        Namespace=namespace,
        MetricData=[
            {"MetricName": "Latency", "Value": 0.3, "Timestamp": now - timedelta(seconds=5)},
            {"MetricName": "Latency", "Value": 0.7, "Timestamp": now - timedelta(seconds=3)},
        ],
    )
    assert await sources.measure(check(**queries)) == 0.7
