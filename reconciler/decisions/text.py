"""Text a push controls (build and test output, commit subjects) made safe to show: no
terminal escape sequence or other control character reaches a log, a status or a page."""

from __future__ import annotations

import re

# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \), other two-byte ESC sequences, then
# any C0 or C1 control character left but the tab. Each alternative is matched without
# backtracking over nested repetition: linear in the length of the line.
_CONTROLS = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[@-_]?"
    r"|[\x00-\x08\x0a-\x1f\x7f-\x9f]"
)


def printable(line: str) -> str:
    """`line` without escape sequences and control characters (tabs kept)."""
    return _CONTROLS.sub("", line)
