"""`.dockerignore` patterns: Docker's answers, in time that does not grow with a hostile
pattern, and patterns Docker refuses (or too long to match safely) refused in one line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from reconciler.adapters.dockerignore import MAX_PATTERN, DockerIgnore
from reconciler.errors import BuildContextRefused

FUZZ = settings(max_examples=200, deadline=None)
ROOT = Path(__file__).parents[3]


@pytest.mark.parametrize(
    ("patterns", "path", "excluded"),
    [
        # "*/temp*": names starting with temp in any immediate subdirectory of the root.
        (["*/temp*"], "somedir/temporary.txt", True),
        (["*/temp*"], "somedir/temp", True),
        (["*/temp*"], "somedir/temp/inner.txt", True),
        (["*/temp*"], "temporary.txt", False),
        (["*/temp*"], "somedir/subdir/temporary.txt", False),
        # "*/*/temp*": the same, two levels below the root.
        (["*/*/temp*"], "somedir/subdir/temporary.txt", True),
        (["*/*/temp*"], "somedir/temporary.txt", False),
        # "temp?": a one-character extension of temp, in the root.
        (["temp?"], "tempa", True),
        (["temp?"], "tempb", True),
        (["temp?"], "temp", False),
        (["temp?"], "tempab", False),
        (["temp?"], "sub/tempa", False),
        # "**/*.go": .go files anywhere.
        (["**/*.go"], "main.go", True),
        (["**/*.go"], "cmd/tool/main.go", True),
        (["**/*.go"], "main.go.txt", False),
        # "*.md" then "!README.md": markdown in the root left out, README.md sent.
        (["*.md", "!README.md"], "CHANGES.md", True),
        (["*.md", "!README.md"], "README.md", False),
        (["*.md", "!README.md"], "docs/guide.md", False),
        # "*.md", "!README*.md", "README-secret.md": READMEs sent, but not the secret one.
        (["*.md", "!README*.md", "README-secret.md"], "README.md", False),
        (["*.md", "!README*.md", "README-secret.md"], "README-dev.md", False),
        (["*.md", "!README*.md", "README-secret.md"], "README-secret.md", True),
        (["*.md", "!README*.md", "README-secret.md"], "CHANGES.md", True),
        # The other order: the exception comes last and wins, the middle line does nothing.
        (["*.md", "README-secret.md", "!README*.md"], "README-secret.md", False),
        (["*.md", "README-secret.md", "!README*.md"], "CHANGES.md", True),
        # For historical reasons the pattern "." is ignored.
        (["."], "anything", False),
    ],
)
def test_the_examples_in_dockers_reference(patterns: list[str], path: str, excluded: bool) -> None:
    """Each example from Docker's .dockerignore reference gets Docker's answer."""
    assert DockerIgnore.parse("\n".join(patterns)).excludes(path) is excluded


@pytest.mark.parametrize(
    ("patterns", "path", "excluded"),
    [
        (["dir"], "dir/sub/file", True),
        (["dir/*"], "dir/file", True),
        (["dir/*"], "dir", False),
        (["*"], "a/b", True),
        (["*/b"], "a/b/c", True),
        (["**"], "a/b/c", True),
        (["**/c"], "c", True),
        (["**/c"], "a/b/c", True),
        (["**/c"], "a/bc", False),
        (["a/**/c"], "a/c", True),
        (["a/**/c"], "a/x/y/c", True),
        (["a/**"], "a/b", True),
        (["a/**"], "ab", False),
        (["*.go"], "x/y.go", False),
        (["**/*.go"], "x/y.go", True),
        (["[a-c].txt"], "b.txt", True),
        (["[a-c].txt"], "d.txt", False),
        (["a\\*b"], "a*b", True),
        (["a\\*b"], "axb", False),
        (["./a/../b/"], "b/c", True),
        (["*", "!keep"], "keep", False),
        (["*", "!keep", "keep"], "keep", True),
        (["dir", "!dir/keep"], "dir/keep/file", False),
        (["dir", "!dir/keep"], "dir/other", True),
        (["file.txt"], "a.file.txt", False),
        (["a.b"], "axb", False),
    ],
)
def test_dockerignore_pattern_rules(patterns: list[str], path: str, excluded: bool) -> None:
    """Cases from Docker's pattern matcher semantics."""
    assert DockerIgnore.parse("\n".join(patterns)).excludes(path) is excluded


def test_a_lone_exclamation_mark_is_refused() -> None:
    with pytest.raises(BuildContextRefused, match="line 2"):
        DockerIgnore.parse("a\n!\n")


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        ("a*" * 30 + "b", "a" * 255),
        ("a*" * 500 + "b", "a" * 255),
        ("**/" + "a*" * 300 + "b", "/".join(["a" * 255] * 8)),
        ("*a" * 100 + "**" + "a*" * 100 + "b", "a" * 255 + "/" + "a" * 255),
        ("?*" * 300 + "b", "x" * 255),
    ],
)
def test_a_hostile_pattern_is_answered_at_once(pattern: str, path: str) -> None:
    """A pattern built to make a backtracking matcher try every split of a long name is
    answered, not left running: a backtracking matcher takes hours on these, holding the
    interpreter all along, so it runs in a child process that a generous timeout can stop."""
    program = (
        "import sys\n"
        "from reconciler.adapters.dockerignore import DockerIgnore\n"
        "print(DockerIgnore.parse(sys.argv[1]).excludes(sys.argv[2]))\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", program, pattern, path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )

    assert done.stdout == "False\n"


def test_a_pattern_over_the_limit_is_refused_naming_its_line() -> None:
    long = "a" * (MAX_PATTERN + 1)

    with pytest.raises(BuildContextRefused) as refused:
        DockerIgnore.parse(f"# notes\n*.log\n!{long}\n")

    message = str(refused.value)
    assert message.startswith(".dockerignore line 3: ")
    assert "1025 characters" in message
    assert "\n" not in message
    assert DockerIgnore.parse("a" * MAX_PATTERN).excludes("a" * MAX_PATTERN)


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("[ab", "without its ']'"),
        ("a[]", "a ']' where a character class needs a character"),
        ("[]a]", "where a character class needs a character"),
        ("[a-]", "where a character class needs a character"),
        ("[z-a]", "the range 'z-a' is reversed"),
        ("a*\\", "escapes nothing"),
    ],
)
def test_patterns_docker_refuses_are_refused(pattern: str, reason: str) -> None:
    """The pattern syntax Docker checks (Go's filepath.Match): one line naming the line."""
    with pytest.raises(BuildContextRefused, match=re.escape(reason)) as refused:
        DockerIgnore.parse(f"ok\n{pattern}\n")

    assert str(refused.value).startswith(".dockerignore line 2: bad pattern")
    assert "\n" not in str(refused.value)


def test_classes_ranges_and_escapes_match_one_character_of_one_segment() -> None:
    ignore = DockerIgnore.parse("x[^a-c]y\n[\\]]z\nq[*]")

    assert ignore.excludes("xdy")
    assert not ignore.excludes("xby")
    assert not ignore.excludes("x/y")
    assert ignore.excludes("]z")
    assert ignore.excludes("q*")
    assert not ignore.excludes("qq")


def reference(pattern: str) -> re.Pattern[str]:
    """Docker's own reading of a cleaned pattern: a regular expression (fine to backtrack
    here, on the short patterns the property below draws)."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
            out.append(".*" if i == len(pattern) else "(.*/)?")
            continue
        char = pattern[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            out.append("[^/" + body[1:] + "]" if body.startswith("^") else f"[{body}]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def reference_excludes(pattern: str, path: str) -> bool:
    parts = path.split("/")
    regex = reference(pattern)
    return any(regex.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1))


SEGMENT_PIECES = ["a", "b", "*", "?", "**", "[ab]", "[^a]", "[a-b]"]
PATH_PIECES = ["a", "b", "c", ".", "/", "ab", "ba"]
segments = st.lists(st.sampled_from(SEGMENT_PIECES), min_size=1, max_size=3).map("".join)


@FUZZ
@given(
    st.lists(segments, min_size=1, max_size=3).map("/".join),
    st.lists(st.sampled_from(PATH_PIECES), min_size=1, max_size=8).map("".join),
)
def test_wildcard_patterns_agree_with_dockers_regular_expression(pattern: str, path: str) -> None:
    """Any mix of wildcards answers as the regular expression Docker builds for it would
    (but for Docker's `**tail` shortcut, which the tables above cover)."""
    assume(not (pattern.startswith("**") and not any(c in pattern[2:] for c in "*?[")))
    path = "/".join(part for part in path.split("/") if part) or "a"

    assert DockerIgnore.parse(pattern).excludes(path) is reference_excludes(pattern, path)


@FUZZ
@given(
    st.lists(segments, min_size=1, max_size=3).map("/".join),
    st.lists(
        # Few names, so that paths often share their directories.
        st.lists(st.sampled_from(["a", "b", "ab", "ba", ".a"]), min_size=1, max_size=4).map(
            "/".join
        ),
        min_size=2,
        max_size=12,
    ),
)
def test_one_matcher_answers_each_path_as_a_fresh_one_would(pattern: str, paths: list[str]) -> None:
    """A matcher keeps what it read of each directory for the next entry of that directory:
    the answer for a path never depends on the paths asked about before it."""
    assume(not (pattern.startswith("**") and not any(c in pattern[2:] for c in "*?[")))
    shared = DockerIgnore.parse(pattern)
    for path in paths:
        assert shared.excludes(path) is reference_excludes(pattern, path)
