"""The installed package: the dashboard's templates and assets travel with it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from fnmatch import fnmatch
from pathlib import Path

import pytest

from reconciler.api.web.dashboard import STATIC, TEMPLATES

ROOT = Path(__file__).parents[2]


def package_data() -> list[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns: list[str] = pyproject["tool"]["setuptools"]["package-data"]["reconciler.api.web"]
    return patterns


def test_every_template_and_asset_is_package_data() -> None:
    """The daemon also runs from an installed package: a file the globs miss is a 404 (or a
    crash) there while every test from the source tree passes."""
    web_dir = TEMPLATES.parent
    files = [p.relative_to(web_dir).as_posix() for d in (TEMPLATES, STATIC) for p in d.iterdir()]
    assert files
    missed = [f for f in files if not any(fnmatch(f, pattern) for pattern in package_data())]
    assert missed == []


@pytest.mark.slow
def test_the_wheel_carries_the_templates_and_assets(tmp_path: Path) -> None:
    # Built from a copy, so the build leaves nothing in the work tree.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "reconciler", source / "reconciler", ignore=shutil.ignore_patterns("__pycache__")
    )
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--wheel-dir",
            str(wheels),
            str(source),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("reconciler-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    web_dir = TEMPLATES.parent
    for directory in (TEMPLATES, STATIC):
        for path in directory.iterdir():
            assert f"reconciler/api/web/{path.relative_to(web_dir).as_posix()}" in names
