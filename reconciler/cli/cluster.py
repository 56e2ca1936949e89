"""`reconciler cluster init|status`: the lease table several daemons share."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from reconciler.cli.common import EXIT_OK, load, print_table, with_config
from reconciler.cluster import admin


def register(sub: Any) -> None:
    cluster = sub.add_parser(
        "cluster", help="the lease table several daemons share: create it, or who holds what"
    )
    cluster.add_argument("action", choices=["init", "status"])
    with_config(cluster)
    cluster.add_argument("--json", action="store_true")
    cluster.set_defaults(func=cmd_cluster)


def cmd_cluster(args: argparse.Namespace) -> int:
    _, config = load(args)
    if args.action == "init":
        created = asyncio.run(admin.init(config))
        table = config.cluster.lease_table
        print(f"created table {table}" if created else f"table {table} exists already")
        return EXIT_OK
    document = asyncio.run(admin.status(config))
    if args.json:
        print(json.dumps(document, indent=2))
        return EXIT_OK
    daemons = [
        {
            "daemon": d["host_id"],
            "alive": "yes" if d["alive"] else "no (lease running out)",
            "heartbeat": f"{d['heartbeat_age_seconds']} s ago",
            "apps": str(len(d["apps"])),
            "url": d["url"] or "-",
        }
        for d in document["daemons"]
    ]
    print_table(daemons, ["daemon", "alive", "heartbeat", "apps", "url"])
    print()
    leases = [
        {
            "app": a["app"],
            "owner": a["owner"] or "- (free)",
            "held for": f"{a['held_for_seconds']} s" if a["held_for_seconds"] is not None else "-",
            "version": str(a["version"]),
        }
        for a in document["apps"]
    ]
    print_table(leases, ["app", "owner", "held for", "version"])
    return EXIT_OK
