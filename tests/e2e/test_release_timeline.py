"""A release's timeline and the four keys, on the daemon on the real stack, in Chromium.

A push builds, tests, pushes, registers, runs its migration task, rolls out the web and
then the worker and moves `latest`: the open app page draws the release as it runs, growing
as `stage` events arrive without a reload, and once it is live its bars say what the log
said of each stage. The four keys read the same on the page, at /metrics and in /report.
The screenshot is kept in the test's tmp dir (and, with RECONCILER_UPDATE_DOCS=1, in docs/
for the README).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.e2e.test_gates import on_busybox
from tests.e2e.test_release import add_worker
from tests.support.browser import Browser, chromium
from tests.support.multiapp import daemon_for
from tests.support.world import World

pytestmark = [pytest.mark.slow]

DOCS = Path(__file__).parents[2] / "docs"
# Records each drawing of the timeline (running, seconds); a reload would lose it.
WATCH = """() => {
    window.__marker = "the same page";
    window.__seen = [];
    const section = document.querySelector("[data-app-timeline]");
    new MutationObserver(() => {
        const figure = section.querySelector("[data-timeline]");
        if (figure && !figure.hidden) {
            window.__seen.push([figure.dataset.running, figure.dataset.seconds]);
        }
    }).observe(section, {attributes: true, subtree: true, attributeFilter: ["data-seconds"]});
}"""
TOOK = """() => Object.fromEntries([...document.querySelectorAll("[data-timeline-table] tbody tr")]
    .map((tr) => [tr.cells[0].textContent, tr.cells[2].textContent]))"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium(width=1100, height=900) as running:
        yield running


async def test_a_release_is_drawn_live_and_its_bars_match_the_log(
    world: World, browser: Browser, tmp_path: Path, base_image: str
) -> None:
    on_busybox(world, base_image)
    worker = add_worker(world)
    world.app_overrides["extra_tags"] = ["latest"]
    world.app_overrides["test"] = {"command": ["sh", "-c", "grep -q version /app.txt"]}
    world.app_overrides["pre_deploy"] = {"command": ["migrate"]}
    with capture_logs() as logs:
        async with daemon_for([world]) as (daemon,):
            await daemon.wait_phase("InSync", revision=world.first_commit)
            await browser.login(daemon.url, daemon.admin_token)
            tab = await browser.open(f"{daemon.url}/apps/{world.name}")
            await tab.page.wait_for_selector("body[data-live=open]", state="attached")
            await tab.page.evaluate(WATCH)

            head = world.repo.commit({"app.txt": "version 2\n"}, "second version")
            await daemon.github_push()
            figure = tab.page.locator("[data-timeline]")
            await daemon.wait_phase("InSync", revision=head)
            await figure.and_(tab.page.locator("[data-running=false]")).wait_for()
            assert await tab.page.evaluate("window.__marker") == "the same page"  # no reload
            seen: list[list[object]] = await tab.page.evaluate("window.__seen")
            running = [float(str(seconds)) for state, seconds in seen if state == "true"]
            assert len(running) >= 3, seen  # drawn again and again while it ran
            assert running == sorted(running) and running[-1] > running[0], seen
            assert tab.page_errors == [] and tab.console_errors == []

            # Reloaded: the server's drawing of the release written.
            await tab.page.reload()
            took = await tab.page.evaluate(TOOK)
            labels = list(took)
            every = ["fetch", "verify", "build", "test", "push", "register", "pre_deploy"]
            assert [label for label in labels if label in every] == every, labels
            rollouts = [s for s in labels if s.startswith("rollout ") and ":" not in s]
            assert rollouts[:2] == [f"rollout {world.name}", f"rollout {worker}"], labels
            # What the log said of this release's stages (the last ones logged).
            logged = {
                stage: [e["seconds"] for e in logs if e["event"] == f"{stage}_finished"][-1]
                for stage in ("build", "push")
            }
            for stage, seconds in logged.items():
                shown = float(took[stage].removesuffix(" s"))
                assert abs(shown - seconds) <= 0.051, (stage, shown, seconds)
            bars = tab.page.locator("[data-timeline] g.bar title")
            assert await bars.count() == len(labels)  # every bar has its text alternative

            shot = tmp_path / "release-timeline.png"
            await tab.page.locator("section.release-timeline").screenshot(path=str(shot))
            if os.environ.get("RECONCILER_UPDATE_DOCS") == "1":
                shutil.copy(shot, DOCS / "release-timeline.png")

            # The same four keys on the page, at /metrics and in /report.
            async with daemon.http.get(f"{daemon.url}/report?app={world.name}&days=7") as got:
                assert got.status == 200
                report = (await got.json())["windows"][0]["per_app"][world.name]
            async with daemon.http.get(f"{daemon.url}/metrics") as got:
                metrics = await got.text()
            deployments = re.search(
                rf'reconciler_four_keys_deployments\{{app="{world.name}",days="7"\}} (\S+)',
                metrics,
            )
            assert deployments is not None
            assert (
                float(deployments.group(1)) == report["deployments"] == 2
            )  # first and second versions
            lead = re.search(
                rf"reconciler_four_keys_lead_time_p50_seconds"
                rf'\{{app="{world.name}",days="7"\}} (\S+)',
                metrics,
            )
            assert lead is not None
            assert float(lead.group(1)) == pytest.approx(
                report["lead_time_seconds"]["p50"], abs=1e-3
            )
            page = await tab.page.locator(".four-keys figcaption").first.text_content() or ""
            assert f"{report['deployments']} ({report['deployments_per_day']:.2f} a day)" in page
