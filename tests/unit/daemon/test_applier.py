"""Applying a reloaded config: what it tells the git mirrors, and what it says needs a
restart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import structlog

from reconciler.app.state import FileStateStore
from reconciler.config import Config, parse_config
from reconciler.daemon.applier import ReloadApplier
from reconciler.daemon.apps import AppLoops
from reconciler.daemon.in_force import InForce
from reconciler.daemon.ownership import Alone
from reconciler.metrics import Metrics
from tests.support.config import Table, app_table, config_text
from tests.support.fakes import FakeGit
from tests.support.http_face import FakeLoops

REPO = "https://git.example.com/acme/web.git"


def config(tmp_path: Path, *branches: str, build: Table | None = None) -> Config:
    apps = [app_table(f"web-{n}", REPO, branch=branch) for n, branch in enumerate(branches)]
    return parse_config(
        config_text(daemon={"state_dir": tmp_path / "state"}, build=build or {}, apps=apps)
    )


@asynccontextmanager
async def applier(first: Config, git: FakeGit) -> AsyncIterator[ReloadApplier]:
    """The applier on `first`, its app loops stand-ins, stopped at the end."""
    loops = AppLoops(
        maker=FakeLoops(), store=FileStateStore(first.daemon.state_dir), metrics=Metrics()
    )
    try:
        yield ReloadApplier(
            in_force=InForce(first), apps=loops, ownership=Alone(), metrics=Metrics(), git=git
        )
    finally:
        await loops.close()


async def test_a_reload_tells_the_mirrors_which_branches_the_apps_follow_now(
    tmp_path: Path,
) -> None:
    """An app added on another branch gets that branch fetched; a branch no app follows
    any more is left to be dropped at the next fetch."""
    git = FakeGit("0" * 40)
    async with applier(config(tmp_path, "main"), git) as reload:
        await reload.apply(config(tmp_path, "main", "release"), sha256="b")
        assert [(s.url, s.branch) for s in git.tracked] == [(REPO, "main"), (REPO, "release")]

        await reload.apply(config(tmp_path, "release"), sha256="c")
        assert [(s.url, s.branch) for s in git.tracked] == [(REPO, "release")]


async def test_a_build_section_edit_is_said_to_need_a_restart(tmp_path: Path) -> None:
    """The engines and the mirrors take [build] when they open: an edit is logged as one
    that needs a restart, not silently ignored."""
    edited = config(tmp_path, "main", build={"max_file_mb": 10})
    async with applier(config(tmp_path, "main"), FakeGit("0" * 40)) as reload:
        with structlog.testing.capture_logs() as logs:
            await reload.apply(edited, sha256="b")

    assert {"event": "config_change_needs_restart", "section": "build"} in [
        {k: v for k, v in entry.items() if k in ("event", "section")} for entry in logs
    ]
