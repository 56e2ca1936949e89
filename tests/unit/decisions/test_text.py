"""Output a push controls loses every escape sequence and control character."""

from __future__ import annotations

import pytest

from reconciler.adapters.buildkit import LineSplitter
from reconciler.decisions.text import printable


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[31mFAIL\x1b[0m test 3", "FAIL test 3"),  # colours
        ("\x1b[2K\x1b[1Gprogress 50%", "progress 50%"),  # erase line, move cursor
        ("\x1b]0;owned title\x07done", "done"),  # a window title (OSC)
        ("\x1b]8;;http://evil.example\x1b\\link\x1b]8;;\x1b\\", "link"),  # a hyperlink
        ("bell\x07 and backspace\x08", "bell and backspace"),
        ("nul\x00 and del\x7f and c1\x9b", "nul and del and c1"),
        ("carriage\rreturn", "carriagereturn"),
        ("tab\tkept", "tab\tkept"),
        ("ünïcödé ✓ stays", "ünïcödé ✓ stays"),
        ("lone escape at the end \x1b", "lone escape at the end "),
    ],
)
def test_control_characters_are_stripped(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_a_long_run_of_escapes_is_stripped_in_one_pass() -> None:
    """Linear: a line made of a hundred thousand escape starts is dealt with at once."""
    assert printable("\x1b" * 100_000 + "done") == "done"
    assert printable("\x1b[" + "1;" * 100_000 + "mok") == "ok"


def test_test_and_build_output_lines_come_out_clean() -> None:
    splitter = LineSplitter()
    lines = splitter.feed(b"\x1b[32mok\x1b[0m 1\r\n\x1b[31mnot ok\x1b[0m 2\n\x1b]0;t\x07tail")
    assert lines + splitter.close() == ["ok 1", "not ok 2", "tail"]
