"""The one way tests and the benchmark write a reconciler config: TOML from plain values.

    config_text(
        daemon={"listen": "127.0.0.1:0", "state_dir": tmp_path / "state"},
        apps=[app_table("web", "https://github.com/acme/web.git")],
    )

Sections come out in the order the daemon documents them (`[daemon]`, `[aws]`, `[webhook]`,
then one `[[apps]]` table per app), one `key = value` line per setting; a section that is not
given is left out. Nothing is checked here: a test of a bad config builds it the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeAlias

TomlValue: TypeAlias = (
    "bool | int | float | str | Path | Sequence[TomlValue] | Mapping[str, TomlValue]"
)
Table: TypeAlias = Mapping[str, TomlValue]


def toml_value(value: TomlValue) -> str:
    """`value` as a TOML value: strings quoted and escaped, lists and inline tables nested."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


def toml_lines(header: str, table: Table) -> list[str]:
    """A table's header line (`[daemon]`, `[[apps]]`) and its `key = value` lines."""
    return [header, *(f"{key} = {toml_value(value)}" for key, value in table.items())]


def app_table(name: str, repo: str, *, cluster: str = "prod", **settings: TomlValue) -> Table:
    """An `[[apps]]` table: the app's ECR repository and ECS service are named after it."""
    return {
        "name": name,
        "repo": repo,
        "ecr_repository": name,
        "cluster": cluster,
        "service": name,
        **settings,
    }


def config_text(
    *,
    daemon: Table | None = None,
    aws: Table | None = None,
    webhook: Table | None = None,
    apps: Sequence[Table] = (),
) -> str:
    """The TOML text of a config with these sections and apps."""
    lines: list[str] = []
    for header, table in (("[daemon]", daemon), ("[aws]", aws), ("[webhook]", webhook)):
        if table is not None:
            lines += toml_lines(header, table)
    for app in apps:
        lines += toml_lines("[[apps]]", app)
    return "\n".join(lines) + "\n"
