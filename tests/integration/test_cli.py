"""The `reconciler` command, run as operators run it: a subprocess, exit code, output.

Errors are one line on stderr and a documented exit code (2: bad input or unknown app, 1: the
daemon cannot be reached), never a traceback. `plan`, and `run` with a real app, are in
tests/e2e/test_operations.py because they need the sandbox AWS.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from reconciler.decisions.model import Phase
from tests.support.cli import reconciler
from tests.support.config import app_table, config_text
from tests.support.http_face import API_TOKEN, APPS, HttpFace, serve
from tests.support.net import free_port


def valid(tmp_path: Path, *, listen: str = "127.0.0.1:0", admin_listen: str = "127.0.0.1:0") -> str:
    return config_text(
        daemon={"listen": listen, "admin_listen": admin_listen, "state_dir": tmp_path / "state"},
        apps=[app_table("web", "https://github.com/acme/web.git")],
    )


# Four problems in three places; each must be reported on its own line, naming app and key.
INVALID = config_text(
    daemon={"listen": "127.0.0.1:0", "poll_interval": "often"},
    apps=[
        app_table(
            "web",
            "https://github.com/acme/web.git",
            rollout_timeout="soon",
            context="../outside",
        ),
        {
            "name": "api",
            "repo": "https://github.com/acme/api.git",
            "ecr_repository": "api",
            "service": "api",
        },
    ],
)
INVALID_PROBLEMS = [
    "daemon.poll_interval",
    "apps[web].rollout_timeout",
    "apps[web].context",
    "apps[api].cluster",
]


def token_file(tmp_path: Path, daemon: HttpFace) -> str:
    """A file holding the face's admin token, for --token-file."""
    path = tmp_path / "admin-token"
    path.write_text(daemon.admin_token + "\n")
    return str(path)


@pytest.fixture
def valid_config(tmp_path: Path) -> Path:
    path = tmp_path / "reconciler.toml"
    path.write_text(valid(tmp_path))
    return path


@pytest.fixture
def invalid_config(tmp_path: Path) -> Path:
    path = tmp_path / "reconciler.toml"
    path.write_text(INVALID)
    return path


# --- validate, and run with a bad config --------------------------------------------------


async def test_validate_accepts_a_valid_config(valid_config: Path) -> None:
    """Exit 0 and a one-line summary naming the apps."""
    ran = await reconciler("validate", "--config", str(valid_config))
    assert ran.code == 0, ran
    assert "web" in ran.stdout
    assert ran.stderr == ""


async def test_validate_reports_one_line_per_problem_naming_app_and_key(
    invalid_config: Path,
) -> None:
    """Exit 2; every problem on its own line, so an operator can fix them all in one go."""
    ran = await reconciler("validate", "--config", str(invalid_config))
    assert ran.code == 2
    lines = ran.stderr.splitlines()
    assert len(lines) == len(INVALID_PROBLEMS), lines
    for key in INVALID_PROBLEMS:
        assert len([line for line in lines if f"{key}:" in line]) == 1, (key, lines)
    assert any("apps[web].rollout_timeout" in line and "'soon'" in line for line in lines)


async def test_validate_takes_the_config_from_the_environment(valid_config: Path) -> None:
    """RECONCILER_CONFIG stands in for --config."""
    ran = await reconciler("validate", env={"RECONCILER_CONFIG": str(valid_config)})
    assert ran.code == 0, ran


async def test_validate_of_a_missing_file_is_exit_2_with_one_line(tmp_path: Path) -> None:
    """A wrong path is a usage problem, said in one line."""
    ran = await reconciler("validate", "--config", str(tmp_path / "nope.toml"))
    assert ran.code == 2
    assert ran.stderr.strip().count("\n") == 0
    assert "file not found" in ran.stderr


async def test_run_with_an_invalid_config_exits_2_with_the_same_messages(
    invalid_config: Path,
) -> None:
    """The daemon refuses to start on a bad config, saying exactly what `validate` says."""
    validate = await reconciler("validate", "--config", str(invalid_config))
    run = await reconciler("run", "--config", str(invalid_config))
    assert run.code == 2
    assert run.stderr == validate.stderr
    assert run.stdout == ""


async def test_run_on_a_port_in_use_exits_1_with_a_logged_reason(tmp_path: Path) -> None:
    """A daemon that cannot listen says why in one JSON log line and exits 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "reconciler.toml"
        path.write_text(valid(tmp_path, listen=f"127.0.0.1:{port}"))
        ran = await reconciler("run", "--config", str(path))
    assert ran.code == 1
    events = [json.loads(line) for line in ran.stdout.splitlines()]
    failure = next(e for e in events if e["event"] == "daemon_failed")
    assert failure["level"] == "critical"
    assert f"127.0.0.1:{port}" in failure["error"]


# --- status and sync against a daemon -----------------------------------------------------


async def test_status_prints_a_table_and_json(tmp_path: Path) -> None:
    """The table has a row per app with its phase; --json is the daemon's /status as is."""
    async with serve(tmp_path) as daemon:
        daemon.statuses["by-ssh-url"].phase = Phase.FAILED
        daemon.statuses["by-ssh-url"].last_error = "rollout failed\nmore detail"
        url, token = str(daemon.client.make_url("")), token_file(tmp_path, daemon)
        table = await reconciler("status", "--url", url, "--token-file", token)
        as_json = await reconciler("status", "--url", url, "--json", "--token-file", token)
        _, document = await daemon.get("/status")
    assert table.code == 0, table
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["APP", "PHASE", "DESIRED", "LIVE", "SINCE", "ERROR"]
    assert [row.split()[0] for row in rows] == list(APPS)
    failed = next(row for row in rows if row.startswith("by-ssh-url"))
    assert "Failed" in failed and "rollout failed" in failed and "more detail" not in failed
    assert as_json.code == 0
    assert json.loads(as_json.stdout) == document


async def test_status_of_one_app_shows_its_rollout_and_history(tmp_path: Path) -> None:
    """`reconciler status APP`: the rollout (kept after it ended) and the last outcomes."""
    from datetime import UTC, datetime

    from reconciler.app.status import RolloutView
    from reconciler.decisions.model import HistoryEntry, Result

    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    async with serve(tmp_path) as daemon:
        status = daemon.statuses["by-ssh-url"]
        status.phase = Phase.FAILED
        status.rollout = RolloutView(
            deployment="ecs-svc/2",
            task_definition="arn:td/web:2",
            strategy="BLUE_GREEN",
            stage="BAKE_TIME",
            status="ROLLBACK_SUCCESSFUL",
            running=0,
            desired=2,
            alarms_triggered=("web-5xx",),
            started_at=moment,
            finished_at=moment,
        )
        status.history.appendleft(
            HistoryEntry("c" * 40, Result.ROLLED_BACK, moment, moment, "alarms web-5xx")
        )
        url, token = str(daemon.client.make_url("")), token_file(tmp_path, daemon)
        shown = await reconciler("status", "by-ssh-url", "--url", url, "--token-file", token)
        unknown = await reconciler("status", "no-such-app", "--url", url, "--token-file", token)
    assert shown.code == 0, shown
    assert "BLUE_GREEN ROLLBACK_SUCCESSFUL stage BAKE_TIME, 0/2 running" in shown.stdout
    assert "alarms:     web-5xx" in shown.stdout
    assert "cccccccccccc  rolled_back" in shown.stdout
    assert unknown.code == 2 and "no-such-app" in unknown.stderr


async def test_sync_exit_codes(tmp_path: Path) -> None:
    """0 when the daemon accepted the sync, 2 for an unknown app; the app's loop is told."""
    async with serve(tmp_path) as daemon:
        url = str(daemon.client.make_url(""))
        token = tmp_path / "token"
        token.write_text(daemon.admin_token)
        known = await reconciler("sync", "by-html-url", "--url", url, "--token-file", str(token))
        unknown = await reconciler("sync", "no-such-app", "--url", url, "--token-file", str(token))
        assert daemon.loops["by-html-url"].syncs == 1
    assert known.code == 0, known
    assert unknown.code == 2
    assert len(unknown.stderr.splitlines()) == 1
    assert "no-such-app" in unknown.stderr and "404" in unknown.stderr


async def test_sync_sends_the_bearer_token_from_token_file(tmp_path: Path) -> None:
    """With api_token_file on the daemon, sync works with --token-file; without a token it is
    refused in one line saying how to give one (exit 2)."""
    token_file = tmp_path / "cli-token"
    token_file.write_text(API_TOKEN + "\n")
    async with serve(tmp_path, api_token=True) as daemon:
        url = str(daemon.client.make_url(""))
        without = await reconciler("sync", "by-html-url", "--url", url)
        with_token = await reconciler(
            "sync", "by-html-url", "--url", url, "--token-file", str(token_file)
        )
        assert daemon.loops["by-html-url"].syncs == 1
    assert without.code == 2
    assert len(without.stderr.splitlines()) == 1 and "401" in without.stderr
    assert "--token-file" in without.stderr
    assert with_token.code == 0, with_token


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["sync", "web"]])
async def test_an_unreachable_daemon_is_exit_1_with_one_clear_line(command: list[str]) -> None:
    """No daemon listening: one line naming the URL, exit 1, no traceback."""
    url = f"http://127.0.0.1:{free_port()}"
    ran = await reconciler(*command, "--url", url)
    assert ran.code == 1
    assert ran.stdout == ""
    assert len(ran.stderr.splitlines()) == 1
    assert "cannot reach the daemon" in ran.stderr and url in ran.stderr


async def test_status_finds_the_daemon_from_the_config(tmp_path: Path) -> None:
    """--config is enough: the CLI finds daemon.admin_listen, and the admin token the daemon
    made in its state_dir, which this user may read."""
    async with serve(tmp_path) as daemon:
        port = daemon.client.port
        path = tmp_path / "reconciler.toml"
        path.write_text(valid(tmp_path, admin_listen=f"127.0.0.1:{port}"))
        ran = await reconciler("status", "--config", str(path), "--json")
        elsewhere = tmp_path / "elsewhere.toml"
        elsewhere.write_text(
            config_text(
                daemon={"admin_listen": f"127.0.0.1:{port}", "state_dir": tmp_path / "other"},
                apps=[],
            )
        )
        refused = await reconciler("status", "--config", str(elsewhere))
    assert ran.code == 0, ran
    assert [a["name"] for a in json.loads(ran.stdout)["apps"]] == list(APPS)
    assert refused.code == 2
    assert len(refused.stderr.splitlines()) == 1 and "401" in refused.stderr


# --- token ----------------------------------------------------------------------------------


async def test_token_add_prints_it_once_list_shows_no_secret_and_revoke_ends_it(
    tmp_path: Path,
) -> None:
    """`token add` prints a token the file stores only as a hash; `list` shows names, roles
    and globs; `revoke` removes it; bad input is one line with exit 2 and changes nothing."""
    tokens = tmp_path / "tokens.toml"
    config = tmp_path / "reconciler.toml"
    config.write_text(config_text(auth={"tokens_file": tokens}, apps=[]))
    added = await reconciler(
        "token", "add", "alice", "--role", "operator", "--apps", "web-*", "--config", str(config)
    )
    assert added.code == 0, added
    token = added.stdout.strip()
    assert len(token) >= 40 and token not in tokens.read_text()

    listed = await reconciler("token", "list", "--tokens-file", str(tokens))
    assert listed.code == 0, listed
    assert "alice" in listed.stdout and "operator" in listed.stdout and "web-*" in listed.stdout
    assert token not in listed.stdout

    before = tokens.read_text()
    twice = await reconciler(
        "token", "add", "alice", "--role", "viewer", "--tokens-file", str(tokens)
    )
    assert twice.code == 2
    assert twice.stderr.count("\n") == 1 and "named twice" in twice.stderr
    assert tokens.read_text() == before

    revoked = await reconciler("token", "revoke", "alice", "--tokens-file", str(tokens))
    assert revoked.code == 0, revoked
    assert "alice" not in tokens.read_text()
    again = await reconciler("token", "revoke", "alice", "--tokens-file", str(tokens))
    assert again.code == 2 and "no token named 'alice'" in again.stderr


async def test_token_without_a_tokens_file_says_where_to_set_one(tmp_path: Path) -> None:
    config = tmp_path / "reconciler.toml"
    config.write_text(valid(tmp_path))
    ran = await reconciler("token", "list", "--config", str(config))
    assert ran.code == 2
    assert ran.stderr == "error: no tokens file: pass --tokens-file or set [auth].tokens_file\n"
