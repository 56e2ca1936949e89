"""The `reconciler` command as operators run it: a subprocess, its exit code and output."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str


async def reconciler(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Ran:
    """Run `python -m reconciler ARGS` without blocking the event loop (a daemon may be on it).

    Whatever the command, a traceback in its output fails the test: errors are one line.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "reconciler",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    ran = Ran(process.returncode, out.decode(), err.decode())
    assert "Traceback" not in ran.stderr and "Traceback" not in ran.stdout, ran
    return ran
