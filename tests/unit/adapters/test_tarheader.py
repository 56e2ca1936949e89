"""Tar headers of the build context: what tarfile writes, for a fraction of its cost."""

from __future__ import annotations

import io
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.adapters.tarheader import header

KINDS = {tarfile.REGTYPE: 0o644, tarfile.DIRTYPE: 0o755, tarfile.SYMTYPE: 0o777}


def tarfile_header(path: str, *, kind: bytes, mode: int, size: int, linkname: str) -> bytes:
    info = tarfile.TarInfo(path)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, linkname
    info.mtime = info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


@pytest.mark.parametrize(
    ("path", "kind", "size", "linkname"),
    [
        ("Dockerfile", tarfile.REGTYPE, 0, ""),
        ("src/app.py", tarfile.REGTYPE, 123_456_789, ""),
        ("src", tarfile.DIRTYPE, 0, ""),
        ("d" * 99, tarfile.DIRTYPE, 0, ""),  # 100 with its '/': still a plain header
        ("d" * 100, tarfile.DIRTYPE, 0, ""),  # 101: an extended header first
        ("n" * 100, tarfile.REGTYPE, 1, ""),
        ("n" * 101, tarfile.REGTYPE, 1, ""),
        ("current", tarfile.SYMTYPE, 0, "releases/42"),
        ("far", tarfile.SYMTYPE, 0, "t" * 101),
        ("caf\u00e9.txt", tarfile.REGTYPE, 5, ""),
        ("raw-\udcff", tarfile.REGTYPE, 5, ""),  # not UTF-8 in git: surrogateescape
        ("big.bin", tarfile.REGTYPE, 8**11 - 1, ""),  # the largest a plain header holds
        ("huge.bin", tarfile.REGTYPE, 8**11, ""),
    ],
)
def test_the_header_is_the_one_tarfile_writes(
    path: str, kind: bytes, size: int, linkname: str
) -> None:
    """Byte for byte, whether the member fits a plain header or needs an extended one."""
    mode = KINDS[kind]
    ours = header(path, kind=kind, mode=mode, size=size, linkname=linkname)

    assert ours == tarfile_header(path, kind=kind, mode=mode, size=size, linkname=linkname)


@settings(max_examples=300, deadline=None)
@given(
    path=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1),
    kind=st.sampled_from(sorted(KINDS)),
    size=st.integers(min_value=0, max_value=8**12),
    linkname=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=120),
)
def test_any_member_gets_tarfiles_header(path: str, kind: bytes, size: int, linkname: str) -> None:
    """Names, links and sizes of every length and alphabet."""
    mode = KINDS[kind]
    ours = header(path, kind=kind, mode=mode, size=size, linkname=linkname)

    assert ours == tarfile_header(path, kind=kind, mode=mode, size=size, linkname=linkname)


def test_tarfile_reads_back_what_the_headers_say() -> None:
    """Members read back with their names, types, modes, sizes, links, owner and time."""
    out = io.BytesIO()
    out.write(header("src", kind=tarfile.DIRTYPE, mode=0o755))
    out.write(header("src/run.sh", kind=tarfile.REGTYPE, mode=0o755, size=3))
    out.write(b"hi\n".ljust(tarfile.BLOCKSIZE, b"\0"))
    out.write(header("link", kind=tarfile.SYMTYPE, mode=0o777, linkname="src/run.sh"))
    out.write(bytes(2 * tarfile.BLOCKSIZE))
    out.seek(0)

    with tarfile.open(fileobj=out) as tar:
        read = [(m.name, m.type, m.mode, m.size, m.linkname, m.uid, m.mtime) for m in tar]
        script = tar.extractfile("src/run.sh")
        assert script is not None
        assert script.read() == b"hi\n"

    assert read == [
        ("src", tarfile.DIRTYPE, 0o755, 0, "", 0, 0),
        ("src/run.sh", tarfile.REGTYPE, 0o755, 3, "", 0, 0),
        ("link", tarfile.SYMTYPE, 0o777, 0, "src/run.sh", 0, 0),
    ]
