"""Build context from a commit's tree (the daemon's export) vs `git archive` of that tree.

The repository has many files and megabytes of content, and a `.dockerignore` that leaves out
a tenth of them. The daemon's export has to honour it; `git archive` does not know about it
and sends everything, so the comparison is generous to `git archive` by that tenth.
Both write an uncompressed tar to a file in the same directory.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from bench.stats import Row, Summary, number, spread
from reconciler.adapters.git import GitMirrors, GitSource
from tests.support.gitrepo import GitRepo

DOCKERIGNORE = "docs/\n**/*.md\n"


@dataclass(frozen=True)
class ContextSizes:
    files: int
    megabytes: int
    runs: int


FULL = ContextSizes(files=5000, megabytes=50, runs=5)
QUICK = ContextSizes(files=500, megabytes=5, runs=3)


@dataclass
class ContextResults:
    sizes: ContextSizes
    ours: list[float] = field(default_factory=list)
    archive: list[float] = field(default_factory=list)
    ours_bytes: int = 0
    archive_bytes: int = 0
    excluded: int = 0
    leaked: list[str] = field(default_factory=list)


def _files(sizes: ContextSizes) -> dict[str, str | bytes]:
    rng = random.Random(5000)  # the same repository every run
    average = sizes.megabytes * 1024 * 1024 // sizes.files
    words = [f"{rng.getrandbits(40):010x}" for _ in range(4096)]
    files: dict[str, str | bytes] = {
        "Dockerfile": "FROM scratch\nCOPY . /src/\n",
        ".dockerignore": DOCKERIGNORE,
    }
    for index in range(sizes.files):
        # Source-like text (compressible, as code is), sizes spread around the average.
        size = max(16, int(rng.expovariate(1 / average)))
        text = " ".join(rng.choices(words, k=size // 11 + 1))[:size]
        if index % 10 == 0:
            name = f"docs/section-{index % 7}/page-{index}.txt"
        elif index % 10 == 1:
            name = f"pkg/mod-{index % 50:02d}/README-{index}.md"
        else:
            name = f"pkg/mod-{index % 50:02d}/sub-{index % 5}/file-{index}.py"
        files[name] = text
    return files


def excluded_by_dockerignore(name: str) -> bool:
    return name.startswith("docs/") or name.endswith(".md")


async def run_context(root: Path, sizes: ContextSizes, *, log: object) -> ContextResults:
    results = ContextResults(sizes)
    repo = GitRepo(root / "repos" / "context")
    files = _files(sizes)
    head = repo.commit(files, "a big tree")
    results.excluded = sum(excluded_by_dockerignore(n) for n in files)
    mirrors = GitMirrors(root / "context-state")
    source = GitSource(url=repo.url, branch="main")
    assert await mirrors.resolve(source) == head
    mirror = mirrors.mirror_path(repo.url)
    out = root / "context-out"
    try:
        for run in range(sizes.runs + 1):  # the first of each is a warm-up
            began = time.monotonic()
            exported = await mirrors.export_context(
                source, commit=head, context=".", dockerfile="Dockerfile"
            )
            with exported:
                _save(exported, out / "ours.tar")
            ours = time.monotonic() - began
            began = time.monotonic()
            archiving = await asyncio.create_subprocess_exec(
                *("git", "--git-dir", str(mirror), "archive", "--format=tar"),
                *("-o", str(out / "archive.tar"), head),
            )
            if await archiving.wait() != 0:
                raise RuntimeError("git archive failed")
            archive = time.monotonic() - began
            if run:
                results.ours.append(ours)
                results.archive.append(archive)
    finally:
        mirrors.close()
    _inspect(out, results)
    return results


def _save(exported: BinaryIO, path: Path) -> None:
    """Copy the export to a file, as the Docker client would stream it to the engine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as sink:
        shutil.copyfileobj(exported, sink, 1024 * 1024)


def _inspect(out: Path, results: ContextResults) -> None:
    results.ours_bytes = (out / "ours.tar").stat().st_size
    results.archive_bytes = (out / "archive.tar").stat().st_size
    with tarfile.open(out / "ours.tar") as tar:
        results.leaked = [m.name for m in tar.getmembers() if excluded_by_dockerignore(m.name)]


def context_rows(results: ContextResults) -> list[Row]:
    ours = Summary.of(results.ours)
    archive = Summary.of(results.archive)
    ratio = ours.median / archive.median
    honoured = not results.leaked
    sizes = results.sizes
    return [
        Row(
            f"build context of a {sizes.files}-file {sizes.megabytes} MB tree vs `git archive`",
            spread(ours, "s"),
            peer=spread(archive, "s") + " (git archive)",
            ratio=number(ratio, "x"),
            target="<= 1.2x, .dockerignore honoured",
            met=ratio <= 1.2 and honoured,
            note=(
                f".dockerignore ({DOCKERIGNORE.strip()!r}) left out {results.excluded} files: "
                f"{'honoured' if honoured else 'NOT honoured: ' + ', '.join(results.leaked[:3])}"
                f"; tars {results.ours_bytes / 1e6:.1f} MB (ours) vs "
                f"{results.archive_bytes / 1e6:.1f} MB (git archive, everything). Times "
                "include writing the tar to a file; median of runs after one warm-up."
            ),
        )
    ]
