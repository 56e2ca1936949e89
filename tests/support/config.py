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
import re
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


def toml_key(key: str) -> str:
    """A key as TOML reads it back: bare when it can be, else quoted (`"db.v3"`, `"a b"`)."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def toml_lines(header: str, table: Table) -> list[str]:
    """A table's header line (`[daemon]`, `[[apps]]`) and its `key = value` lines."""
    return [header, *(f"{toml_key(key)} = {toml_value(value)}" for key, value in table.items())]


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


def config_text(*, apps: Sequence[Table] = (), **sections: Table | Sequence[Table]) -> str:
    """The TOML text of a config with these sections (`daemon={...}`, `aws={...}`,
    `build={...}`, any top-level table) and apps. `[daemon]`, `[aws]` and `[webhook]` come
    first, the others in the order given. An app's value that is a table (`test`,
    `pre_deploy`), other than `build_args`, is written as a sub-table of the app. A section
    given as a list of tables (`freeze=[{...}]`) is an array of tables (`[[freeze]]`)."""
    lines: list[str] = []
    daemon = sections.get("daemon")
    if isinstance(daemon, Mapping) and "admin_listen" not in daemon:
        # Tests run many daemons at once: each admin listener takes a free port.
        sections = {**sections, "daemon": {**daemon, "admin_listen": "127.0.0.1:0"}}
    first = [name for name in ("daemon", "aws", "webhook") if name in sections]
    for name in first + [name for name in sections if name not in first]:
        section = sections[name]
        if isinstance(section, Mapping):
            lines += toml_lines(f"[{name}]", section)
        else:
            for table in section:
                lines += toml_lines(f"[[{name}]]", table)
    for app in apps:
        plain = {k: v for k, v in app.items() if not isinstance(v, Mapping) or k == "build_args"}
        lines += toml_lines("[[apps]]", plain)
        for key, value in app.items():
            if isinstance(value, Mapping) and key != "build_args":
                lines += toml_lines(f"[apps.{key}]", value)
    return "\n".join(lines) + "\n"
