"""Work done beside the main line of a pass, and stopped with it."""

from __future__ import annotations

import asyncio
from typing import Any


async def stop(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has ended. What it raised is retrieved and dropped:
    the caller stops it because of an error of its own, which is the one to tell."""
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()
