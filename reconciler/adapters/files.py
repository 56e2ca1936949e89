"""Files the daemon keeps (state, feedback records, tokens): whole or not at all.

A write goes to a temporary file beside the target (mode 0600, made by mkstemp), is synced,
and renamed over it, so a crash or a full disk leaves the old file or the new one, never
half of either. A file found damaged is set aside as `<name>.corrupt` for a human to read.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one rename; OSError when it could not be written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def set_aside(path: Path) -> Path:
    """Move a damaged file to `<name>.corrupt`; where it is now (OSError when it stayed)."""
    aside = path.with_name(path.name + ".corrupt")
    path.replace(aside)
    return aside
