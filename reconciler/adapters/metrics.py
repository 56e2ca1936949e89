"""Where analysis checks (SPEC 21) read their values: Prometheus' HTTP API and CloudWatch's
GetMetricData.

Prometheus: an instant query (`GET <url>/api/v1/query`) from the build host, to the URL
the config names (operators write it; no credentials in it, so none is ever shown). Its
answer must be a scalar or a vector of at most one series: an empty vector is no data;
several series are refused (aggregate them: `sum(...)`, `max(...)`). HTTP 5xx, 429,
timeouts and refused connections are MetricsUnavailable (asked again within the interval);
another 4xx or an answer that is not Prometheus' is MetricsRefused. The answer is read up to
MAX_ANSWER bytes.

CloudWatch: GetMetricData with the check's MetricDataQueries, over the last `window`
seconds, newest first, with the app's AWS identity (the session its ECS calls use); the
newest value of the one query that returns data is the measurement, none is no data.
"""

from __future__ import annotations

import json
import math
from datetime import timedelta
from typing import Any

import aiohttp
from aiobotocore.session import AioSession

from reconciler.adapters.aws import aws_errors
from reconciler.adapters.aws_clients import RegionalClients
from reconciler.config import AnalysisCheck, CloudWatchSource, PrometheusSource
from reconciler.decisions.model import utcnow
from reconciler.errors import AwsRejected, AwsUnavailable, MetricsRefused, MetricsUnavailable

MAX_ANSWER = 1 << 20  # bytes of a Prometheus answer read: one series is a few hundred
# A bound of its own; the caller's shorter one (what is left of the interval) cancels sooner.
REQUEST_TIMEOUT = 30.0
SHOWN = 200  # characters of a source's error text kept in a reason


class MetricSources:
    """Both sources, for one account and region (CloudWatch) and any Prometheus URL."""

    def __init__(
        self, *, region: str, session: AioSession | None = None, endpoint_url: str = ""
    ) -> None:
        self._clients = RegionalClients(region=region, session=session, endpoint_url=endpoint_url)

    async def measure(self, check: AnalysisCheck) -> float | None:
        """The check's value now; None when its query has no data. MetricsUnavailable when
        the source cannot answer now, MetricsRefused when it never will."""
        if check.prometheus is not None:
            return await prometheus_value(check.prometheus)
        assert check.cloudwatch is not None
        window = max(check.interval, 2.0 * check.cloudwatch.longest_period())
        return await self._cloudwatch(check.cloudwatch, window=window)

    async def _cloudwatch(self, source: CloudWatchSource, *, window: float) -> float | None:
        end = utcnow()
        try:
            async with self._client() as cloudwatch, aws_errors():
                answer = await cloudwatch.get_metric_data(
                    MetricDataQueries=list(source.metric_data_queries),
                    StartTime=end - timedelta(seconds=window),
                    EndTime=end,
                    ScanBy="TimestampDescending",
                )
        except AwsUnavailable as exc:
            raise MetricsUnavailable(str(exc)[:SHOWN]) from exc
        except AwsRejected as exc:
            raise MetricsRefused(str(exc)[:SHOWN]) from exc
        wanted = source.returned["Id"]
        for result in answer.get("MetricDataResults", []):
            if result.get("Id") == wanted:
                found = result.get("Values") or []
                return float(found[0]) if found else None
        return None

    def _client(self) -> Any:
        return self._clients.client("cloudwatch")


async def prometheus_value(source: PrometheusSource) -> float | None:
    """The instant query's one value now, None when it has none."""
    where = f"{source.url}/api/v1/query"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as http,
            http.get(where, params={"query": source.query}) as answer,
        ):
            body = await answer.content.read(MAX_ANSWER + 1)
            status = answer.status
    except TimeoutError as exc:
        raise MetricsUnavailable(f"Prometheus did not answer within {REQUEST_TIMEOUT:g}s") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise MetricsUnavailable(f"Prometheus unreachable: {type(exc).__name__}") from exc
    if status >= 500 or status == 429:
        raise MetricsUnavailable(f"Prometheus answered HTTP {status}")
    if len(body) > MAX_ANSWER:
        raise MetricsRefused(f"Prometheus' answer is over {MAX_ANSWER} bytes")
    document = _json(body)
    if status != 200 or document.get("status") != "success":
        error = str(document.get("error") or f"HTTP {status}")[:SHOWN]
        raise MetricsRefused(f"Prometheus refused the query: {error}")
    return _value(document.get("data"))


def _json(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise MetricsRefused("Prometheus' answer is not JSON") from exc
    if not isinstance(document, dict):
        raise MetricsRefused("Prometheus' answer is not an object")
    return document


def _value(data: object) -> float | None:
    """The one value of an instant query's data (`resultType` scalar or vector)."""
    if not isinstance(data, dict):
        raise MetricsRefused("Prometheus' answer has no data")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return _sample(result)
    if kind != "vector" or not isinstance(result, list):
        raise MetricsRefused(f"the query gives a {kind}, not a scalar or one series")
    if not result:
        return None
    if len(result) > 1:
        raise MetricsRefused(
            f"the query gives {len(result)} series, not one: aggregate them (sum, max, ...)"
        )
    series = result[0]
    return _sample(series.get("value") if isinstance(series, dict) else None)


def _sample(sample: object) -> float | None:
    """`[timestamp, "value"]`; the value may be NaN or ±Inf, as Prometheus writes them."""
    if not isinstance(sample, list) or len(sample) != 2:
        raise MetricsRefused("Prometheus' answer has a malformed sample")
    try:
        value = float(sample[1])
    except (TypeError, ValueError) as exc:
        raise MetricsRefused(f"Prometheus' sample {sample[1]!r} is not a number") from exc
    return None if math.isnan(value) else value
