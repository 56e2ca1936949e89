"""One file read by several consumers at once, each from its own position.

A commit's build context is exported once; the production image and the test stage are
built from it side by side, each build's CLI fed by a reader of its own. The readers take
turns on the one file (a spooled temporary file, in memory or on disk) under a lock: each
read seeks to that reader's position first. Builds read in threads (buildkit.py reads with
`asyncio.to_thread`), so the lock is a thread lock.
"""

from __future__ import annotations

import io
import os
import threading
from typing import BinaryIO, cast


class SharedFile:
    """Readers over `file`, each starting where `file` stands now. Closing a reader leaves
    `file` open: whoever opened it closes it, once every reader is done."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._start = file.tell()
        self._lock = threading.Lock()

    def reader(self) -> BinaryIO:
        return cast(BinaryIO, _Reader(self))

    def read_at(self, position: int, size: int) -> bytes:
        with self._lock:
            self._file.seek(position)
            return self._file.read(size)

    def end(self) -> int:
        with self._lock:
            return self._file.seek(0, os.SEEK_END)


class _Reader(io.RawIOBase):
    def __init__(self, shared: SharedFile) -> None:
        super().__init__()
        self._shared = shared
        self._position = shared._start

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self._shared.read_at(self._position, len(buffer))
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            position = offset
        elif whence == os.SEEK_CUR:
            position = self._position + offset
        elif whence == os.SEEK_END:
            position = self._shared.end() + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if position < 0:
            raise ValueError(f"negative seek position {position}")
        self._position = position
        return position
