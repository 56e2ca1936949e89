"""A build secret is blanked in output lines in every shape a RUN step is likely to print it:
whole, line by line, base64-encoded (wrapped or not), and with control characters around or
inside it."""

from __future__ import annotations

import base64
import uuid

import pytest

from reconciler import logs
from reconciler.adapters.buildkit import LineSplitter
from reconciler.decisions.scrub import BASE64_WRAP, forms_of


def registered(value: bytes) -> None:
    for form in forms_of(value):
        logs.register_secret(form)


def output(*chunks: bytes) -> list[str]:
    """The lines a build or test printing `chunks` shows in logs, status and pages."""
    splitter = LineSplitter()
    lines: list[str] = []
    for chunk in chunks:
        lines += splitter.feed(chunk)
    return lines + splitter.close()


def test_the_forms_of_a_one_line_value() -> None:
    value = b"s3cr3t-value\n"
    assert forms_of(value) == {
        "s3cr3t-value",
        base64.b64encode(b"s3cr3t-value\n").decode(),
        base64.b64encode(b"s3cr3t-value\n").decode().rstrip("="),
        base64.b64encode(b"s3cr3t-value").decode(),
    }


def test_a_multi_line_value_is_scrubbed_line_by_line_too() -> None:
    assert {"[npm]", "//registry.npmjs.org/:_authToken=abcd"} <= forms_of(
        b"[npm]\n//registry.npmjs.org/:_authToken=abcd\n"
    )


def test_forms_shorter_than_four_characters_are_left_alone() -> None:
    """Blanking "ab" would blank it in every word; the forms that are long enough stay."""
    forms = forms_of(b"ab\nlonger line\n")
    assert "ab" not in forms and "longer line" in forms
    assert forms_of(b"abc") == {base64.b64encode(b"abc").decode()}


def test_long_base64_is_scrubbed_as_base64_wraps_it() -> None:
    value = uuid.uuid4().hex.encode() * 4  # 128 bytes: three wrapped lines of base64
    encoded = base64.b64encode(value).decode()
    chunks = [encoded[i : i + BASE64_WRAP] for i in range(0, len(encoded), BASE64_WRAP)]
    assert len(chunks) == 3
    assert set(chunks) <= forms_of(value)


def test_control_characters_in_a_value_are_dropped_as_output_drops_them() -> None:
    assert "tab\tand-bell" in forms_of(b"tab\tand\x07-bell")


@pytest.mark.parametrize(
    ("printed", "shown"),
    [
        (b"the token is {v}\n", "the token is ***"),
        (b"{v}", "***"),
        (b"\x1b[31m{v}\x1b[0m\n", "***"),  # coloured
        (b"#7 0.412 {v} and again {v}\n", "#7 0.412 *** and again ***"),
        (b"{b64}\n", "***"),  # `base64 /run/secrets/token`
    ],
    ids=["in a line", "without a newline", "coloured", "twice", "base64"],
)
def test_a_registered_secret_never_reaches_an_output_line(printed: bytes, shown: str) -> None:
    value = f"token-{uuid.uuid4().hex}"
    registered(value.encode() + b"\n")
    text = printed.replace(b"{v}", value.encode())
    text = text.replace(b"{b64}", base64.b64encode(value.encode() + b"\n"))
    assert output(text) == [shown]


def test_a_secret_split_across_reads_is_scrubbed_in_its_whole_line() -> None:
    """Output arrives in chunks of any size; lines are scrubbed once whole."""
    value = f"token-{uuid.uuid4().hex}".encode()
    registered(value)
    line = b"#5 0.1 echo " + value + b" done\n"
    assert output(line[:15], line[15:20], line[20:]) == ["#5 0.1 echo *** done"]
    many = b"".join(b"line %d\n" % n for n in range(1000)) + line
    assert output(many[:-9], many[-9:])[-1] == "#5 0.1 echo *** done"


def test_a_secret_inside_another_is_blanked_whole() -> None:
    """Registered in any order, the longer value is replaced first: none of it shows."""
    inner = f"inner-{uuid.uuid4().hex}"
    outer = f"outer-{inner}-outer"
    logs.register_secret(inner)
    logs.register_secret(outer)
    assert output(f"x {outer} y {inner}\n".encode()) == ["x *** y ***"]


def test_log_lines_lose_the_secret_too() -> None:
    value = f"token-{uuid.uuid4().hex}"
    registered(value.encode())
    assert logs.redact(f"error: {value} refused") == "error: *** refused"
