"""Talking to a running daemon over its HTTP API: where it is, the token, one request."""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.cli.common import EXIT_FAILURE, EXIT_USAGE, CliError, load
from reconciler.daemon.access import admin_token_path

DEFAULT_URL = "http://127.0.0.1:8089"  # the default admin_listen


def with_daemon(command: argparse.ArgumentParser) -> None:
    """The options of a command that talks to a running daemon: where, and as whom."""
    command.add_argument("--url")
    command.add_argument("--config")
    command.add_argument("--token-file")


def daemon_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    if os.environ.get("RECONCILER_URL"):
        return os.environ["RECONCILER_URL"].rstrip("/")
    if args.config or os.environ.get("RECONCILER_CONFIG"):
        _, config = load(args)
        host, port = config.daemon.admin_host, config.daemon.admin_port
        # A daemon listening on every address is reached on loopback.
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    return DEFAULT_URL


def request(
    url: str, *, method: str = "GET", token: str | None = None, body: Any = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, method=method, data=data)  # noqa: S310 - operator-given
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return int(answer.status), json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read() or b"null")
        except ValueError:
            body = None
        return int(exc.code), body
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(f"cannot reach the daemon at {url}: {reason}") from exc


def read(
    args: argparse.Namespace,
    path: str,
    query: Mapping[str, object] | None = None,
    *,
    not_found: str | None = None,
) -> dict[str, Any]:
    """GET `path` (with the `query` values that are not None) of the daemon's API: its
    JSON object. A refusal, a bad request or something not found (`not_found` says what)
    is one line and exit 2; any other answer one line and exit 1."""
    base = daemon_url(args)
    asked = {key: str(value) for key, value in (query or {}).items() if value is not None}
    url = base + path + (f"?{urllib.parse.urlencode(asked)}" if asked else "")
    code, body = request(url, token=token_of(args))
    refused(code, body, base)
    if code in (400, 404):
        message = body.get("error") if isinstance(body, dict) else None
        said = not_found if code == 404 and not_found else message
        raise CliError(said or f"{url} answered HTTP {code}", EXIT_USAGE)
    if code != 200 or not isinstance(body, dict):
        raise CliError(f"{url} answered HTTP {code}")
    return body


def refused(code: int, body: Any, base: str) -> None:
    """One line when the daemon wants an identity or a role the token lacks."""
    if code in (401, 403, 421):
        message = body.get("error") if isinstance(body, dict) else None
        hint = (
            " (--token-file, or a config whose state_dir holds admin.token)" if code == 401 else ""
        )
        raise CliError(f"{base} answered HTTP {code}: {message or 'refused'}{hint}", EXIT_USAGE)


def token_of(args: argparse.Namespace) -> str | None:
    """The token to send: --token-file, $RECONCILER_TOKEN_FILE, or the admin token the daemon
    keeps in its state_dir when the config names it and this user may read it."""
    token_file = (
        args.token_file
        or os.environ.get("RECONCILER_TOKEN_FILE")
        or os.environ.get("RECONCILER_API_TOKEN_FILE")
    )
    if not token_file:
        return _admin_token(args)
    try:
        return Path(token_file).read_text().strip()
    except OSError as exc:
        raise CliError(f"cannot read token file {token_file}: {exc.strerror}", EXIT_USAGE) from exc


def _admin_token(args: argparse.Namespace) -> str | None:
    if not (args.config or os.environ.get("RECONCILER_CONFIG")):
        return None
    _, config = load(args)
    try:
        return admin_token_path(config).read_text().strip() or None
    except OSError:
        return None  # not this user's to read: the daemon will say who it wants


def steer(args: argparse.Namespace, action: str, body: Any = None) -> Any:
    """POST /apps/APP/<action>; the answer's body when the daemon accepted it (202)."""
    app = urllib.parse.quote(args.app, safe="")
    code, answer = request(
        f"{daemon_url(args)}/apps/{app}/{action}", method="POST", token=token_of(args), body=body
    )
    if code == 202:
        return answer
    refused(code, answer, daemon_url(args))
    message = answer.get("error") if isinstance(answer, dict) else None
    raise CliError(
        f"{action} of {args.app} refused: HTTP {code}: {message or 'no detail'}",
        EXIT_USAGE if code in {400, 401, 403, 404, 409, 421} else EXIT_FAILURE,
    )


def waiting_approval(args: argparse.Namespace) -> dict[str, Any]:
    """The approval the app's release waits for, as its status shows it now: what an approve
    or reject without --revision names (revision and digest, so a newer release that turns
    up meanwhile is not approved unseen)."""
    app = urllib.parse.quote(args.app, safe="")
    answer = read(args, f"/status/{app}", not_found=f"unknown app {args.app!r}")
    waiting = answer.get("approval")
    if not isinstance(waiting, dict):
        raise CliError(f"no release of {args.app} waits for approval", EXIT_USAGE)
    return waiting
