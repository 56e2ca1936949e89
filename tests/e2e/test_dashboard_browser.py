"""The dashboard in a real headless Chromium, against the daemon on the real stack.

The list shows every app; a deploy started by a webhook changes the phase on the open page
without a reload; with scripts off the pages read the same and the sync form works; a
commit whose subject and build output hold markup shows it as text and runs none of it.
Each run leaves screenshots of the list and of an app page in .run/ (dashboard-list.png,
dashboard-app.png).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters.tokens import add_token
from reconciler.sandbox.aws import SandboxAws
from tests.support.browser import Browser, Tab, chromium
from tests.support.multiapp import daemon_for
from tests.support.probes import eventually, reconcile_count
from tests.support.world import World

pytestmark = [pytest.mark.slow]

SHOTS = Path(__file__).parents[2] / ".run"
BUSY = {"Building", "Testing", "Pushing", "Migrating", "Deploying"}
# Each would leave a mark (window.pwned, a dialog, an element) if the page ran or parsed it.
PAYLOAD = '<script>window.pwned=1;alert(1)</script><img src=x onerror="window.pwned=2">'
SUBJECT = "<script>window.pwned=3;alert(3)</script> break the build"

# Records every text and class the app's phase cell takes, and marks the page: a reload
# would lose both.
WATCH_PHASE = """(name) => {
    const row = [...document.querySelectorAll("tr[data-app]")].find((r) => r.dataset.app === name);
    const cell = row.querySelector('[data-field="phase"]');
    window.__seen = [];
    window.__marker = "the same page";
    new MutationObserver(() => window.__seen.push([cell.textContent, cell.className]))
        .observe(cell, {childList: true, characterData: true, subtree: true, attributes: true});
}"""

CELLS = """(name) => {
    const row = [...document.querySelectorAll("tr[data-app]")].find((r) => r.dataset.app === name);
    const phase = row.querySelector('[data-field="phase"]');
    return {
        phase: phase.textContent,
        classes: phase.className,
        revision: row.querySelector('[data-field="revision"]').textContent.trim(),
    };
}"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as running:
        yield running


async def live(tab: Tab) -> None:
    """The page's event stream is open: from now on no phase change is missed."""
    await tab.page.wait_for_selector("body[data-live=open]", state="attached")


async def cells(tab: Tab, name: str) -> dict[str, str]:
    found: dict[str, str] = await tab.page.evaluate(CELLS, name)
    return found


def clean(tab: Tab) -> None:
    assert tab.dialogs == []
    assert tab.page_errors == []
    assert tab.console_errors == []  # a policy violation would be reported here too


async def test_the_list_follows_a_deploy_without_a_reload(
    world: World, aws: SandboxAws, registry: str, browser: Browser, tmp_path: Path
) -> None:
    second = World.create(tmp_path / "second", aws, registry)
    async with daemon_for([world, second]) as (first, other):
        await first.wait_phase("InSync", revision=world.first_commit)
        await other.wait_phase("InSync", revision=second.first_commit)

        await browser.login(first.url, first.admin_token)
        tab = await browser.open(f"{first.url}/")
        await live(tab)
        rows = tab.page.locator("tr[data-app]")
        assert [await r.get_attribute("data-app") for r in await rows.all()] == [
            world.name,
            second.name,
        ]
        for name in (world.name, second.name):
            assert (await cells(tab, name))["phase"] == "InSync"
        await tab.page.evaluate(WATCH_PHASE, world.name)

        head = world.repo.commit({"app.txt": "version 2\n"}, "second version")
        await first.github_push()
        await first.wait_phase("InSync", revision=head)

        async def caught_up() -> bool:
            now = await cells(tab, world.name)
            return now["phase"] == "InSync" and now["revision"] == head[:7]

        await eventually(caught_up, what="the page showing the new revision in sync")
        seen: list[list[Any]] = await tab.page.evaluate("window.__seen")
        texts = [text for text, _ in seen]
        assert BUSY & set(texts), texts  # it went through the deploy's phases on the page
        for text, classes in seen:
            assert f"phase-{text.lower()}" in classes.split(), (text, classes)
        assert texts[-1] == "InSync"
        assert await tab.page.evaluate("window.__marker") == "the same page"  # no reload
        assert (await cells(tab, second.name))["phase"] == "InSync"
        link = tab.page.locator(f'tr[data-app="{world.name}"] [data-field="revision"] code')
        assert await link.text_content() == head[:7]

        # The sync form posts and comes back to the list, which says so: no script needed.
        await tab.page.locator(f'form[action="/apps/{world.name}/sync"] button').click()
        await tab.page.wait_for_url(f"**/?synced={world.name}")
        assert world.name in (await tab.page.locator("p.flash").text_content() or "")
        await live(tab)
        SHOTS.mkdir(parents=True, exist_ok=True)
        await tab.page.screenshot(path=str(SHOTS / "dashboard-list.png"), full_page=True)
        clean(tab)


async def test_a_token_logs_in_sees_its_apps_syncs_one_and_its_page_shows_the_audit(
    world: World, aws: SandboxAws, registry: str, browser: Browser, tmp_path: Path
) -> None:
    """Logged in with an operator's token for one app: the list shows that app only, the
    other is 404 by name, a sync through the form is accepted, and the app's page names who
    asked for it."""
    second = World.create(tmp_path / "second", aws, registry)
    tokens = tmp_path / "tokens.toml"
    ops = add_token(tokens, name="ops", role="admin", apps=[])
    alice = add_token(tokens, name="alice", role="operator", apps=[world.name])
    world.sections["auth"] = {"tokens_file": tokens}
    async with daemon_for([world, second], token=ops) as (first, other):
        await first.wait_phase("InSync", revision=world.first_commit)
        await other.wait_phase("InSync", revision=second.first_commit)

        tab = await browser.open(f"{first.url}/")
        await tab.page.wait_for_url("**/login")  # no identity: the login form
        await tab.page.fill("#token", alice)
        await tab.page.click("form.login button[type=submit]")
        await tab.page.wait_for_url(f"{first.url}/")
        rows = tab.page.locator("tr[data-app]")
        assert [await r.get_attribute("data-app") for r in await rows.all()] == [world.name]
        hidden = await browser.open(f"{first.url}/apps/{second.name}")  # a tab of its own
        assert "There is no app named" in (await hidden.page.text_content("main") or "")

        await tab.page.locator(f'form[action="/apps/{world.name}/sync"] button').click()
        await tab.page.wait_for_url(f"**/?synced={world.name}")
        await tab.page.goto(f"{first.url}/apps/{world.name}")
        change = tab.page.locator("tr[data-audit]").first
        text = await change.text_content() or ""
        assert "alice" in text and "operator" in text and "sync" in text and "accepted" in text
        SHOTS.mkdir(parents=True, exist_ok=True)
        await tab.page.screenshot(path=str(SHOTS / "dashboard-login-audit.png"), full_page=True)
        clean(tab)


async def test_markup_in_a_commit_and_its_build_output_is_text_and_runs_nothing(
    world: World, base_image: str, browser: Browser
) -> None:
    broken = world.repo.commit(
        {"Dockerfile": f"FROM {base_image}\nRUN echo '{PAYLOAD}' && exit 3\n"}, SUBJECT
    )
    async with world.daemon() as daemon:
        status = await daemon.wait_for(
            lambda s: s["phase"] == "Failed" and s["desired"]["revision"] == broken,
            what="the broken build held as Failed",
        )
        assert PAYLOAD in status["last_error"]  # the markup reaches the pages

        await browser.login(daemon.url, daemon.admin_token)
        listing = await browser.open(f"{daemon.url}/")
        app = await browser.open(f"{daemon.url}/apps/{world.name}")
        for tab in (listing, app):
            await live(tab)
            assert await tab.page.evaluate("typeof window.pwned") == "undefined"
            assert await tab.page.locator("img").count() == 0
            sources = await tab.page.evaluate("[...document.scripts].map((s) => s.src)")
            assert len(sources) == 1 and "/static/dashboard.js" in sources[0], sources
            clean(tab)

        assert await cells(listing, world.name) == {
            "phase": "Failed",
            "classes": "phase phase-failed",
            "revision": broken[:7],
        }
        for tab in (listing, app):  # the subject, read from the daemon's mirror
            subject = tab.page.locator('[data-app] [data-field="subject"]')
            assert await subject.text_content() == SUBJECT
        shown = await app.page.locator("section.last-error pre").inner_text()
        assert PAYLOAD in shown  # as text, quotes and brackets included
        phase = app.page.locator('[data-app] [data-field="phase"]')
        assert await phase.text_content() == "Failed"
        assert "phase-failed" in (await phase.get_attribute("class") or "")
        SHOTS.mkdir(parents=True, exist_ok=True)
        await app.page.screenshot(path=str(SHOTS / "dashboard-app.png"), full_page=True)


async def test_with_scripts_off_the_pages_read_the_same_and_the_form_syncs(world: World) -> None:
    async with world.daemon() as daemon, chromium(javascript=False) as browser:
        await daemon.wait_phase("InSync", revision=world.first_commit)
        await browser.login(daemon.url, daemon.admin_token)
        tab = await browser.open(f"{daemon.url}/apps/{world.name}")
        phase = tab.page.locator('[data-app] [data-field="phase"]')
        assert await phase.text_content() == "InSync"
        assert "phase-insync" in (await phase.get_attribute("class") or "")
        assert await tab.page.locator("[data-live-indicator]").is_hidden()  # no script ran
        assert world.first_commit[:7] in (await tab.page.locator("dl.facts").first.inner_text())
        assert await tab.page.locator("section.history tbody tr").count() >= 1
        syncs = reconcile_count(daemon, "in_sync")
        await tab.page.locator("form.sync button").click()
        await tab.page.wait_for_url(f"**/apps/{world.name}?synced=1")
        assert await tab.page.locator("p.flash").text_content() == "Sync requested."
        await eventually(lambda: reconcile_count(daemon, "in_sync") > syncs, what="a pass")
        clean(tab)
