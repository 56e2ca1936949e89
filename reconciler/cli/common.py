"""What every command shares: exit codes, the one-line error, loading the config, tables."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from reconciler.config import Config, load_config
from reconciler.errors import ConfigError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        self.code = code
        super().__init__(message)


def config_path(args: argparse.Namespace) -> Path:
    value = args.config or os.environ.get("RECONCILER_CONFIG", "")
    if not value:
        raise CliError("no config: pass --config PATH or set RECONCILER_CONFIG", EXIT_USAGE)
    return Path(value)


def load(args: argparse.Namespace) -> tuple[Path, Config]:
    path = config_path(args)
    try:
        return path, load_config(path)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        raise CliError("", EXIT_USAGE) from exc


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns).rstrip())


def with_config(command: argparse.ArgumentParser) -> None:
    command.add_argument("--config", help="config file (default: $RECONCILER_CONFIG)")
