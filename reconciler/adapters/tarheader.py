"""Tar headers for the build context, without tarfile's per-member work.

A build context has thousands of members and each one's header costs tarfile some forty
microseconds (a dict of fields, a pax check per field, a checksum over the packed block),
more than reading the file. Every member of a context has the same owner (root), mtime (0)
and no device numbers, so for the usual member (an ASCII name and link target of at most
100 characters, a size under 8 GiB) the header is assembled from fixed parts here. It is
byte for byte the header `TarInfo.tobuf(PAX_FORMAT)` writes for it; any other member (a
long or non-ASCII name, a huge file) goes through tarfile, which puts a pax extended header
before it.
"""

from __future__ import annotations

import tarfile

# Fields of a ustar header, in order, with their widths (POSIX.1-1988).
_NAME = 100
_LINK = 100
# The size is 11 octal digits and a NUL: below 8 GiB.
_MAX_SIZE = 8**11
_ZERO_ID = b"0000000\x00"  # uid and gid 0
_ZERO_TIME = b"00000000000\x00"  # mtime 0: the same tree gives the same tar
_CHECKSUM_BLANK = 256  # the checksum field counts as eight spaces while it is summed
# After the link target: magic "ustar\0" and version "00", then empty uname (32), gname (32),
# devmajor (8), devminor (8) and prefix (155), and the block's padding (12).
_TAIL = tarfile.POSIX_MAGIC + bytes(tarfile.BLOCKSIZE - 257 - len(tarfile.POSIX_MAGIC))


def header(path: str, *, kind: bytes, mode: int, size: int = 0, linkname: str = "") -> bytes:
    """The header of the member `path` of type `kind` (tarfile.REGTYPE, DIRTYPE, SYMTYPE),
    owned by root with mtime 0; for a directory, a '/' is added to the name as tarfile does.
    """
    name = path + "/" if kind == tarfile.DIRTYPE and not path.endswith("/") else path
    if (
        len(name) <= _NAME
        and len(linkname) <= _LINK
        and size < _MAX_SIZE
        and name.isascii()
        and linkname.isascii()
    ):
        return _ustar(name.encode(), kind=kind, mode=mode, size=size, link=linkname.encode())
    return _through_tarfile(path, kind=kind, mode=mode, size=size, linkname=linkname)


def _ustar(name: bytes, *, kind: bytes, mode: int, size: int, link: bytes) -> bytes:
    mode_field = b"%07o\x00" % (mode & 0o7777)
    size_field = b"%011o\x00" % size
    checksum = (
        _CHECKSUM_BLANK
        + sum(name)
        + sum(mode_field)
        + _OWNER_SUM
        + sum(size_field)
        + _TIME_SUM
        + kind[0]
        + sum(link)
        + _TAIL_SUM
    )
    return b"".join(
        (
            name.ljust(_NAME, b"\x00"),
            mode_field,
            _ZERO_ID,
            _ZERO_ID,
            size_field,
            _ZERO_TIME,
            b"%06o\x00 " % checksum,
            kind,
            link.ljust(_LINK, b"\x00"),
            _TAIL,
        )
    )


_OWNER_SUM = 2 * sum(_ZERO_ID)
_TIME_SUM = sum(_ZERO_TIME)
_TAIL_SUM = sum(_TAIL)


def _through_tarfile(path: str, *, kind: bytes, mode: int, size: int, linkname: str) -> bytes:
    info = tarfile.TarInfo(path)
    info.type = kind
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.linkname = linkname
    info.size = size
    # surrogateescape: a path that is not UTF-8 in git keeps its bytes in the pax header.
    return info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")
