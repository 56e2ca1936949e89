"""The app's state file: written through, read once, and failing closed both ways."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from reconciler.app.state import AppMemory, FileStateStore, cleared
from reconciler.decisions.model import Attempt, DefinitionMark, Hold

REV = "c" * 40


def written(tmp_path: Path) -> Path:
    store = FileStateStore(tmp_path)
    store.save_now(
        "web",
        AppMemory(
            hold=Hold(REV, "circuit breaker", "fp"),
            attempt=Attempt(REV, "arn:td/web:2", "arn:td/web:1", "fp", deployment_id="d/2"),
            build_failures={REV: 2},
        ),
    )
    return tmp_path / "apps" / "web.json"


def test_a_memory_survives_a_restart(tmp_path: Path) -> None:
    """Hold, attempt and build counts are read back by a new store (a restarted daemon)."""
    written(tmp_path)
    memory = FileStateStore(tmp_path).load("web")
    assert memory.hold is not None and memory.hold.revision == REV
    assert memory.attempt is not None and memory.attempt.deployment_id == "d/2"
    assert memory.build_failures == {REV: 2}
    assert memory.damaged is None


def _without(key: str, text: str) -> str:
    return json.dumps({k: v for k, v in json.loads(text).items() if k != key})


DAMAGES: dict[str, tuple[Callable[[str], bytes], str]] = {
    "truncated": (lambda text: text[: len(text) // 2].encode(), "JSONDecodeError"),
    "no hold key": (lambda text: _without("hold", text).encode(), "missing key 'hold'"),
    "hold without revision": (
        lambda text: text.replace('"revision"', '"rev"', 1).encode(),
        "missing key 'revision'",
    ),
    "not an object": (lambda text: b"[1, 2, 3]", "expected an object"),
    "bad date": (
        lambda text: text.replace('"since": "', '"since": "not a date ', 1).encode(),
        "ValueError",
    ),
    "not utf-8": (lambda text: b"\xff\xfe{", "UnicodeDecodeError"),
}


@pytest.mark.parametrize(("damage", "why"), list(DAMAGES.values()), ids=list(DAMAGES))
def test_a_damaged_file_fails_closed_and_is_kept_aside(
    tmp_path: Path, damage: Callable[[str], bytes], why: str
) -> None:
    """Never a silent reset: the app is marked damaged, the file kept as .corrupt, logged."""
    path = written(tmp_path)
    path.write_bytes(damage(path.read_text()))
    with capture_logs() as logs:
        memory = FileStateStore(tmp_path).load("web")
    assert memory.damaged is not None
    assert why in memory.damaged
    assert "kept as web.json.corrupt" in memory.damaged
    assert "`reconciler sync web` to go on" in memory.damaged
    assert memory.hold is None
    assert not path.exists()
    assert (path.parent / "web.json.corrupt").exists()
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["state_file_damaged"]


def test_reset_clears_the_damage_and_writes_a_good_file(tmp_path: Path) -> None:
    path = written(tmp_path)
    path.write_text("{")
    store = FileStateStore(tmp_path)
    assert store.load("web").damaged
    store.save_now("web", cleared(store.load("web")))
    assert FileStateStore(tmp_path).load("web").damaged is None


def test_a_write_that_fails_keeps_the_memory_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full: save answers False, the hold stays in memory, the error is kept until a
    later write succeeds."""
    store = FileStateStore(tmp_path)
    memory = store.load("web")
    memory.hold = Hold(REV, "circuit breaker", "fp")

    def full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    real_write = FileStateStore._write
    monkeypatch.setattr(FileStateStore, "_write", full)
    assert store.save_now("web") is False
    error = store.write_error("web")
    assert error is not None and "No space left on device" in error
    assert store.load("web").hold is not None

    monkeypatch.setattr(FileStateStore, "_write", real_write)
    assert store.save_now("web") is True
    assert store.write_error("web") is None
    assert FileStateStore(tmp_path).load("web").hold is not None


def test_peek_reads_without_moving_a_damaged_file(tmp_path: Path) -> None:
    """`reconciler plan` writes nothing, not even a rename."""
    path = written(tmp_path)
    path.write_text("{")
    assert FileStateStore(tmp_path).peek("web").damaged
    assert path.exists()


def test_the_definition_last_live_survives_a_restart_and_older_files_read_without_it(
    tmp_path: Path,
) -> None:
    """Without it a restarted daemon would take drift for a change of the files (and deploy
    over a console edit with drift = "alert")."""
    store = FileStateStore(tmp_path)
    store.load("web").definition = DefinitionMark("fp", "arn:task-definition/web:7")
    assert store.save_now("web")
    assert FileStateStore(tmp_path).load("web").definition == DefinitionMark(
        "fp", "arn:task-definition/web:7"
    )
    store.load("api")
    assert store.save_now("api")
    assert "definition" not in json.loads((tmp_path / "apps" / "api.json").read_text())
    assert FileStateStore(tmp_path).load("api").definition is None
