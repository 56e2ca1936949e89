"""The tokens file: hashes only, rotated without a restart, bad files never in force."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from reconciler.adapters.tokens import (
    SingleToken,
    Tokens,
    add_token,
    make_admin_token,
    parse_tokens,
    revoke_token,
)
from reconciler.decisions.access import Identity, Role, token_sha256
from reconciler.errors import ConfigError


def bump(path: Path) -> None:
    """Make sure a rewrite within the same clock tick still reads as a change."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_a_token_added_is_printed_once_and_stored_only_as_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    token = add_token(path, name="alice", role="operator", apps=["web-*"])
    text = path.read_text()
    assert token not in text
    assert token_sha256(token) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    tokens = Tokens(path)
    assert tokens.by_token(token) == Identity("alice", Role.OPERATOR, ("web-*",), "token")
    assert tokens.by_token(token + "x") is None


def test_a_token_added_or_revoked_applies_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    first = add_token(path, name="alice", role="viewer", apps=[])
    tokens = Tokens(path)
    assert tokens.by_token(first) is not None
    second = add_token(path, name="bob", role="admin", apps=[])
    bump(path)
    who = tokens.by_token(second)
    assert who is not None
    assert (who.name, who.role, who.apps) == ("bob", Role.ADMIN, ("*",))
    assert revoke_token(path, "alice")
    bump(path)
    assert tokens.by_token(first) is None
    assert tokens.by_hash(token_sha256(first), via="session") is None
    assert not revoke_token(path, "alice")


def test_a_broken_file_keeps_the_last_good_one_in_force(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    token = add_token(path, name="alice", role="operator", apps=[])
    tokens = Tokens(path)
    assert tokens.by_token(token) is not None
    path.write_text("[[token]]\nname = 'alice'\n")  # no role, no hash
    bump(path)
    with capture_logs() as logs:
        assert tokens.by_token(token) is not None
    assert [e["event"] for e in logs] == ["tokens_file_invalid"]


def test_a_daemon_that_never_read_a_good_file_knows_nobody(tmp_path: Path) -> None:
    """And says why once, not at every request."""
    path = tmp_path / "tokens.toml"
    path.write_text("not toml at all [")
    missing = Tokens(tmp_path / "missing.toml")
    with capture_logs() as logs:
        for _ in range(3):
            assert Tokens(path).by_token("anything") is None
            assert missing.by_token("anything") is None
    events = [e["event"] for e in logs]
    assert events.count("tokens_file_unreadable") == 1
    assert events.count("tokens_file_invalid") == 3  # three readers of the bad file, once each


def entry(**fields: object) -> str:
    """One [[token]] table: a viewer named "a" with a well-formed hash, changed by `fields`."""
    values: dict[str, object] = {"name": "a", "role": "viewer", "sha256": "0" * 64, **fields}
    lines = [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "[[token]]\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (entry(role="root"), "role"),
        (entry(sha256="secret"), "64 hex digits"),
        (entry(name="a b"), "no name"),
        (entry(apps=["web/*"]), "no app glob"),
        (entry(role="admin", apps=["web-*"]), "an admin acts on every app"),
        (entry() + entry(sha256="1" * 64), "named twice"),
        (entry(extra=1), "extra"),
        ("[[token]\n", "not TOML"),
    ],
)
def test_a_bad_tokens_file_is_one_line_per_problem(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_tokens(text, where="tokens.toml")
    assert any(
        problem in line and line.startswith("tokens.toml: ") for line in raised.value.problems
    )
    assert all("\n" not in line for line in raised.value.problems)


def test_adding_a_bad_entry_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    add_token(path, name="alice", role="viewer", apps=[])
    before = path.read_text()
    with pytest.raises(ConfigError, match="named twice"):
        add_token(path, name="alice", role="viewer", apps=[])
    with pytest.raises(ConfigError, match="role"):
        add_token(path, name="carol", role="owner", apps=[])
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["tokens.toml"]


def test_a_proxy_user_is_known_only_by_a_user_entry(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text('[[user]]\nname = "bob@example.com"\nrole = "viewer"\napps = ["api"]\n')
    tokens = Tokens(path)
    assert tokens.user("bob@example.com") == Identity(
        "bob@example.com", Role.VIEWER, ("api",), "proxy"
    )
    assert tokens.user("mallory@example.com") is None
    assert tokens.by_token("bob@example.com") is None


def test_the_admin_token_is_made_once_and_readable_only_by_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "admin.token"
    token = make_admin_token(path)
    assert token is not None
    assert make_admin_token(path) is None
    assert path.read_text().strip() == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    single = SingleToken(path, name="admin")
    assert single.by_token(token) == Identity("admin", Role.ADMIN, ("*",), "token")
    assert single.by_token("") is None
    assert single.by_hash(token_sha256(token), via="session") is not None
    path.write_text("rotated\n")
    assert single.by_token(token) is None
    assert single.by_token("rotated") is not None
