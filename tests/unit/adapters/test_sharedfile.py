"""One file, several readers: each reads all of it from where the file stood, whatever the
others do in between."""

from __future__ import annotations

import io
import os
import tempfile

from reconciler.adapters.sharedfile import SharedFile

DATA = bytes(range(256)) * 64


def test_interleaved_readers_each_read_the_whole_file() -> None:
    shared = SharedFile(io.BytesIO(DATA))
    first, second = shared.reader(), shared.reader()
    a, b = bytearray(), bytearray()
    while chunk := first.read(1000):
        a += chunk
        b += second.read(333)
    b += second.read()
    assert bytes(a) == DATA and bytes(b) == DATA


def test_readers_start_where_the_file_stood_and_seek_on_their_own() -> None:
    """A spooled file on disk, as a big context is; a build started again seeks back."""
    with tempfile.SpooledTemporaryFile(max_size=10) as file:
        file.write(DATA)
        file.seek(100)
        shared = SharedFile(file)  # type: ignore[arg-type]
        reader = shared.reader()
        assert reader.tell() == 100
        assert reader.read(4) == DATA[100:104]
        reader.seek(100)
        assert reader.read() == DATA[100:]
        assert reader.seek(-4, os.SEEK_END) == len(DATA) - 4
        assert reader.read() == DATA[-4:]
        reader.close()
        assert shared.reader().read(2) == DATA[100:102]  # the file stays open
