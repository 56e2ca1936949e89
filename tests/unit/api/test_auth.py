"""The admin listener's gate: identities from tokens, sessions and trusted proxies only;
the Host and Origin a request may carry."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from reconciler.adapters.tokens import SingleToken, Tokens, add_token, revoke_token
from reconciler.api.auth import COOKIE, Gate, Sessions, Sources
from reconciler.decisions.access import Role


class Peer:
    """What make_mocked_request needs to say who the peer is."""

    def __init__(self, address: str) -> None:
        self.address = address

    def get_extra_info(self, name: str, default: object = None) -> object:
        return (self.address, 40000) if name == "peername" else default


def request(
    *,
    method: str = "GET",
    peer: str = "127.0.0.1",
    host: str = "127.0.0.1:8089",
    **headers: str,
) -> web.Request:
    wanted = CIMultiDict({"Host": host, **{k.replace("_", "-"): v for k, v in headers.items()}})
    return make_mocked_request(method, "/status", headers=wanted, transport=Peer(peer))


@pytest.fixture
def tokens(tmp_path: Path) -> Path:
    return tmp_path / "tokens.toml"


def gate(
    tokens: Path,
    tmp_path: Path,
    *,
    trusted_proxies: Sequence[str] = (),
    allowed_hosts: Sequence[str] = (),
) -> Gate:
    sources = Sources([Tokens(tokens), SingleToken(tmp_path / "admin.token", name="admin")])
    return Gate.of(
        identities=sources,
        sessions=Sessions.with_key_in(tmp_path / "session.key"),
        trusted_proxies=trusted_proxies,
        allowed_hosts=allowed_hosts,
    )


def test_a_bearer_token_is_an_identity_and_an_address_never_is(
    tokens: Path, tmp_path: Path
) -> None:
    token = add_token(tokens, name="alice", role="operator", apps=["web-*"])
    the_gate = gate(tokens, tmp_path)
    who = the_gate.identify(request(Authorization=f"Bearer {token}"))
    assert who is not None and (who.name, who.role, who.via) == ("alice", Role.OPERATOR, "token")
    for anonymous in (
        request(),
        request(peer="10.0.0.5"),
        request(X_Forwarded_For="127.0.0.1"),
        request(Authorization="Bearer wrong"),
        request(Authorization=f"Basic {token}"),
        request(Authorization="Bearer "),
    ):
        assert the_gate.identify(anonymous) is None


def test_a_session_lasts_while_its_token_does(tokens: Path, tmp_path: Path) -> None:
    token = add_token(tokens, name="alice", role="viewer", apps=[])
    the_gate = gate(tokens, tmp_path)
    cookie = the_gate.sessions.issue(token)
    who = the_gate.identify(request(Cookie=f"{COOKIE}={cookie}"))
    assert who is not None and (who.name, who.via) == ("alice", "session")
    revoke_token(tokens, "alice")
    st = tokens.stat()
    os.utime(tokens, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert the_gate.identify(request(Cookie=f"{COOKIE}={cookie}")) is None


def test_a_forged_or_expired_cookie_is_nobody(tmp_path: Path) -> None:
    sessions = Sessions(b"k" * 32, lifetime=60)
    cookie = sessions.issue("t", now=1000.0)
    assert sessions.token_hash(cookie, now=1059.0) is not None
    assert sessions.token_hash(cookie, now=1060.0) is None  # expired
    payload, _, signature = cookie.partition(".")
    assert sessions.token_hash(f"{payload}x.{signature}", now=1000.0) is None
    assert sessions.token_hash(f"{payload}.{signature[:-2]}AA", now=1000.0) is None
    assert Sessions(b"other key" * 4).token_hash(cookie, now=1000.0) is None
    for garbage in ("", ".", "a.b", "…", cookie.replace(".", "")):
        assert sessions.token_hash(garbage, now=1000.0) is None


def test_the_session_key_is_made_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    first = Sessions.with_key_in(tmp_path / "session.key")
    cookie = first.issue("t")
    again = Sessions.with_key_in(tmp_path / "session.key")  # a restart keeps the sessions
    assert again.token_hash(cookie) is not None
    assert stat.S_IMODE((tmp_path / "session.key").stat().st_mode) == 0o600


def test_a_forwarded_user_counts_only_from_a_trusted_proxy(tokens: Path, tmp_path: Path) -> None:
    tokens.write_text('[[user]]\nname = "bob@example.com"\nrole = "operator"\n')
    the_gate = gate(tokens, tmp_path, trusted_proxies=["10.1.0.0/16"])
    via_proxy = request(peer="10.1.2.3", X_Forwarded_User="bob@example.com")
    who = the_gate.identify(via_proxy)
    assert who is not None and (who.name, who.role, who.via) == (
        "bob@example.com",
        Role.OPERATOR,
        "proxy",
    )
    for untrusted in (
        request(peer="127.0.0.1", X_Forwarded_User="bob@example.com"),
        request(peer="10.2.0.1", X_Forwarded_User="bob@example.com"),
        request(peer="10.1.2.3", X_Forwarded_User="mallory@example.com"),
    ):
        assert the_gate.identify(untrusted) is None


@pytest.mark.parametrize(
    ("host", "listening", "allowed"),
    [
        ("127.0.0.1:8089", "127.0.0.1:8089", True),
        ("localhost:8089", "127.0.0.1:8089", True),
        ("[::1]:8089", "127.0.0.1:8089", True),
        ("deploy.acme.dev", "127.0.0.1:8089", True),  # public_url's host
        ("ops.acme.dev:8443", "127.0.0.1:8089", True),  # allowed_hosts
        ("evil.example", "127.0.0.1:8089", False),  # a rebound name
        ("10.0.0.7:8089", "10.0.0.7:8089", True),
        ("localhost:8089", "10.0.0.7:8089", False),
        ("", "127.0.0.1:8089", False),
    ],
)
def test_only_a_host_that_names_the_listener_is_answered(
    tmp_path: Path, host: str, listening: str, allowed: bool
) -> None:
    the_gate = gate(tmp_path / "t.toml", tmp_path, allowed_hosts=["ops.acme.dev"])
    answer = the_gate.host_allowed(
        request(host=host),
        listening=listening,
        public_url="https://deploy.acme.dev/reconciler",
    )
    assert answer is allowed


@pytest.mark.parametrize(
    ("method", "origin", "allowed"),
    [
        ("GET", "https://evil.example", True),  # reads change nothing
        ("POST", None, True),  # an API client
        ("POST", "http://127.0.0.1:8089", True),
        ("POST", "https://deploy.acme.dev", True),
        ("POST", "https://evil.example", False),
        ("POST", "null", False),
        ("DELETE", "http://127.0.0.1:9999", False),
    ],
)
def test_a_state_change_from_another_origin_is_refused(
    tmp_path: Path, method: str, origin: str | None, allowed: bool
) -> None:
    the_gate = gate(tmp_path / "t.toml", tmp_path)
    headers = {"Origin": origin} if origin is not None else {}
    answer = the_gate.origin_allowed(
        request(method=method, **headers),
        public_url="https://deploy.acme.dev/reconciler",
    )
    assert answer is allowed
