"""`reconciler token add|list|revoke`: the named tokens of the tokens file ([auth].tokens_file).

`add` prints the new token once; the file keeps only its SHA-256. A daemon reading the file
sees the change at its next request, without a restart.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from reconciler.adapters.tokens import add_token, parse_tokens, revoke_token
from reconciler.cli.common import EXIT_OK, EXIT_USAGE, CliError, load, print_table
from reconciler.errors import ConfigError


def register(sub: Any) -> None:
    token = sub.add_parser("token", help="named tokens with roles: add, list, revoke")
    actions = token.add_subparsers(dest="token_action", required=True)
    add = actions.add_parser("add", help="add a token and print it once")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=["viewer", "operator", "admin"])
    add.add_argument("--apps", nargs="+", default=[], metavar="GLOB", help="default: every app")
    listing = actions.add_parser("list", help="names, roles and app globs (never a token)")
    revoke = actions.add_parser("revoke", help="remove a token; it stops working at once")
    revoke.add_argument("name")
    for command in (add, listing, revoke):
        command.add_argument("--tokens-file", help="default: [auth].tokens_file of --config")
        command.add_argument("--config", help="config file (default: $RECONCILER_CONFIG)")
    add.set_defaults(func=cmd_add)
    listing.set_defaults(func=cmd_list)
    revoke.set_defaults(func=cmd_revoke)


def tokens_file(args: argparse.Namespace) -> Path:
    if args.tokens_file:
        return Path(args.tokens_file)
    _, config = load(args)
    if config.auth.tokens_file is None:
        raise CliError("no tokens file: pass --tokens-file or set [auth].tokens_file", EXIT_USAGE)
    return config.auth.tokens_file


def cmd_add(args: argparse.Namespace) -> int:
    path = tokens_file(args)
    try:
        token = add_token(path, name=args.name, role=args.role, apps=args.apps)
    except ConfigError as exc:
        raise CliError("; ".join(exc.problems), EXIT_USAGE) from exc
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from exc
    print(token)
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    path = tokens_file(args)
    try:
        parsed = parse_tokens(path.read_text(encoding="utf-8"), where=str(path))
    except ConfigError as exc:
        raise CliError("; ".join(exc.problems), EXIT_USAGE) from exc
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc
    rows = [
        {"kind": kind, "name": e.name, "role": e.role, "apps": " ".join(e.apps)}
        for kind, entries in (("token", parsed.token), ("user", parsed.user))
        for e in entries
    ]
    print_table(rows, ["kind", "name", "role", "apps"])
    return EXIT_OK


def cmd_revoke(args: argparse.Namespace) -> int:
    path = tokens_file(args)
    try:
        removed = revoke_token(path, args.name)
    except ConfigError as exc:
        raise CliError("; ".join(exc.problems), EXIT_USAGE) from exc
    except OSError as exc:
        raise CliError(f"cannot change {path}: {exc.strerror or exc}") from exc
    if not removed:
        raise CliError(f"no token named {args.name!r} in {path}", EXIT_USAGE)
    print(f"revoked {args.name}")
    return EXIT_OK
