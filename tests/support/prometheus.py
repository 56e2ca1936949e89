"""A real Prometheus (Debian's `prometheus` package) scraping an exporter the test controls,
for analysis checks (SPEC 21) on the real stack.

    async with exporter() as metrics, prometheus(tmp_path, metrics.target) as url:
        metrics.values["e2e_error_rate"] = 0.0
        ...                      # a check's query `max(e2e_error_rate)` reads it within ~1 s

The exporter is an aiohttp server on 127.0.0.1 serving the text format from `values`;
Prometheus runs on a free loopback port with a temporary config and storage, scraping every
SCRAPE seconds, and is stopped by its PID on the way out.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.support.net import free_port
from tests.support.services import require

PROMETHEUS = Path("/usr/bin/prometheus")
SCRAPE = 1  # seconds between scrapes

CONFIG = """\
global:
  scrape_interval: {scrape}s
  evaluation_interval: {scrape}s
scrape_configs:
  - job_name: e2e
    static_configs:
      - targets: ["{target}"]
"""


@dataclass
class Exporter:
    """What the exporter serves: metric name -> value (a gauge each)."""

    target: str  # host:port, as Prometheus' config names it
    values: dict[str, float] = field(default_factory=dict)
    scrapes: int = 0


@asynccontextmanager
async def exporter() -> AsyncIterator[Exporter]:
    port = free_port()
    served = Exporter(target=f"127.0.0.1:{port}")

    async def metrics(_: web.Request) -> web.Response:
        served.scrapes += 1
        lines = []
        for name, value in served.values.items():
            lines += [f"# TYPE {name} gauge", f"{name} {value!r}"]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield served
    finally:
        await runner.cleanup()


@asynccontextmanager
async def prometheus(root: Path, target: str) -> AsyncIterator[str]:
    """Prometheus scraping `target`; yields its base URL once it is ready and has scraped."""
    process, url = _start(root, target)
    try:
        await _ready(url, process, root)
        yield url
    finally:
        _stop(process)


def _start(root: Path, target: str) -> tuple[subprocess.Popen[bytes], str]:
    require(PROMETHEUS.exists(), f"no Prometheus at {PROMETHEUS} (apt-get install prometheus)")
    root.mkdir(parents=True, exist_ok=True)
    (root / "prometheus.yml").write_text(CONFIG.format(scrape=SCRAPE, target=target))
    port = free_port()
    with (root / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return process, f"http://127.0.0.1:{port}"


def _stop(process: subprocess.Popen[bytes]) -> None:
    """By its PID: SIGTERM, then SIGKILL if it will not go."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _ready(url: str, process: subprocess.Popen[bytes], root: Path) -> None:
    """Until Prometheus answers a query of its scrape of the target (`up == 1`)."""
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(root / 'prometheus.log').read_text()}")
            try:
                async with http.get(f"{url}/api/v1/query", params={"query": "up"}) as answer:
                    body = await answer.json() if answer.status == 200 else {}
                if any(r["value"][1] == "1" for r in body.get("data", {}).get("result", [])):
                    return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("prometheus did not scrape its target within 30 s")
