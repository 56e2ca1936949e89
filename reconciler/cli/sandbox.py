"""`reconciler sandbox`: the embedded AWS (moto) with rolling updates, for trying it out."""

from __future__ import annotations

import argparse
from typing import Any

from reconciler.cli.common import load, with_config


def register(sub: Any) -> None:
    sandbox = sub.add_parser(
        "sandbox", help="embedded AWS (moto) with rolling updates, for trying it out"
    )
    with_config(sandbox)
    sandbox.add_argument(
        "--outcome",
        choices=["complete", "fail", "alarm", "rollback_fail", "stick"],
        default="complete",
        help="what every rollout does: complete, fail (circuit breaker, rolled back), alarm "
        "(an alarm rolls it back), rollback_fail (its rollback fails too), stick",
    )
    sandbox.add_argument("--after", type=float, default=3.0, help="seconds a rollout takes")
    sandbox.set_defaults(func=cmd_sandbox)


def cmd_sandbox(args: argparse.Namespace) -> int:
    from reconciler.sandbox.run import run_sandbox

    _, config = load(args)
    return run_sandbox(config, outcome=args.outcome, after=args.after)
