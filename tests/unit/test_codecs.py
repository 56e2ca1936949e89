"""What daemons wrote before stays readable: state files, table items, feedback records and
published statuses in tests/fixtures/state (see its README) are read back to the values they
were made from, and written again byte for byte as they were."""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.app.state import (
    AppMemory,
    FileStateStore,
    decode_memory,
    encode_history,
    encode_memory,
)
from reconciler.app.status import AppStatus
from reconciler.decisions.approval import ApprovalRequest, Vote
from reconciler.decisions.kept import RELEASES_KEPT
from reconciler.decisions.model import Phase, Release, ReleasePart, Result
from reconciler.feedback.record import Records
from tests.fixtures.state import make

FIXTURES = Path(__file__).parent.parent / "fixtures" / "state"


def _placed(tmp_path: Path, fixture: str, folder: str) -> Path:
    path = tmp_path / folder / "web.json"
    path.parent.mkdir(parents=True)
    shutil.copyfile(FIXTURES / fixture, path)
    return path


def test_a_state_file_on_disk_is_read_whole(tmp_path: Path) -> None:
    """Every part of the memory comes back, times as aware UTC datetimes."""
    _placed(tmp_path, "memory.json", "apps")
    memory = FileStateStore(tmp_path).load("web")
    assert memory == make.memory()
    assert memory.damaged is None
    assert memory.hold is not None and memory.hold.rollback_to == f"{make.TD}:6"
    assert memory.hold.since == datetime(2024, 5, 1, 11, 55, tzinfo=UTC)
    assert memory.attempt is not None and memory.attempt.at.microsecond == 999750
    assert memory.build_failures == {make.BROKEN: 2, make.OLD: 1}
    assert [h.result for h in memory.history] == [
        Result.ROLLED_BACK,
        Result.DEPLOYED,
        Result.PRE_DEPLOY_FAILED,
    ]
    assert memory.pin is not None and memory.pin.by == "rollback"
    assert memory.pre_deploy_run is not None and memory.pre_deploy_run.task == "arn:task/c/123"
    assert all(d.utcoffset() is not None for d in memory.pre_deploy_done.values())


def test_a_state_file_is_written_again_as_it_was(tmp_path: Path) -> None:
    """The same bytes: a daemon of the older version can read what this one writes."""
    path = _placed(tmp_path, "memory.json", "apps")
    store = FileStateStore(tmp_path)
    path.unlink()
    assert store.save_now("web", make.memory())
    assert path.read_bytes() == (FIXTURES / "memory.json").read_bytes()


def test_an_older_writers_file_takes_the_defaults(tmp_path: Path) -> None:
    """Keys an older writer did not know yet are read as absent, not as damage."""
    _placed(tmp_path, "memory.older.json", "apps")
    memory = FileStateStore(tmp_path).load("web")
    assert memory.damaged is None
    assert memory.hold is not None and memory.hold.rollback_to is None
    assert (memory.attempt, memory.pin, memory.pre_deploy_run, memory.tagged) == (
        None,
        None,
        None,
        None,
    )
    assert memory.pre_deploy_done == {}
    assert len(memory.history) == 3


def test_a_memory_in_the_table_is_read_and_written_as_it_was() -> None:
    text = (FIXTURES / "memory.table.json").read_text().strip()
    assert decode_memory(text) == make.memory()
    assert encode_memory(decode_memory(text)) == text


def test_a_memory_round_trips_and_keeps_only_the_newest_history() -> None:
    memory = make.memory()
    memory.history = memory.history * 200
    again = decode_memory(encode_memory(memory))
    assert len(again.history) == RELEASES_KEPT
    assert again.history == memory.history[:RELEASES_KEPT]
    assert decode_memory(encode_memory(AppMemory())) == AppMemory()


def test_the_history_kept_apart_reads_back_the_same_and_the_newer_of_two_wins() -> None:
    """The lease table keeps an app's history in an item of its own: the memory without it
    and the history apart read back as the whole memory; a memory an older daemon wrote
    since, with a newer history inline, wins over the older one apart."""
    memory = make.memory()
    apart = encode_history(memory.history)
    assert json.loads(apart) == json.loads(encode_memory(memory))["history"]
    bare = encode_memory(memory, with_history=False)
    assert json.loads(bare)["history"] == []
    assert decode_memory(bare, apart) == memory
    newer = make.memory()
    latest = newer.history[0]
    later = dataclasses.replace(latest, finished_at=latest.finished_at + timedelta(days=1))
    newer.history = [later, *newer.history]
    assert decode_memory(encode_memory(newer), apart).history == newer.history
    assert decode_memory(encode_memory(memory), encode_history([])).history == memory.history


def test_a_release_of_several_services_round_trips_and_older_files_have_none(
    tmp_path: Path,
) -> None:
    """The progress of a release (SPEC 20) survives a restart, part by part; a file written
    before releases existed reads as no release, and a memory without one is written
    without the key (an older daemon reads it)."""
    memory = make.memory()
    memory.release = Release(
        revision=make.REV,
        config_fingerprint="f" * 16,
        parts=(
            ReleasePart("web", previous=f"{make.TD}:6", task_definition=f"{make.TD}:7", done=True),
            ReleasePart(
                "worker",
                previous="arn:td/worker:3",
                task_definition="arn:td/worker:4",
                deployment_id="ecs-svc/1",
                at=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
                host="h1",
            ),
        ),
        owed=("worker", "web"),
    )
    assert decode_memory(encode_memory(memory)) == memory
    _placed(tmp_path, "memory.json", "apps")
    assert FileStateStore(tmp_path).load("web").release is None
    assert '"release"' not in encode_memory(make.memory())


def test_an_approval_request_round_trips_and_older_files_have_none(tmp_path: Path) -> None:
    """A release waiting for approval (SPEC 21) keeps its votes and deadline across a restart
    or a takeover; a file written before approvals existed reads as no request, and a memory
    without one is written without the key (an older daemon reads it)."""
    at = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    memory = make.memory()
    memory.approval = ApprovalRequest(
        revision=make.REV,
        digest="sha256:" + "1" * 64,
        required=2,
        requested_at=at,
        expires_at=datetime(2024, 5, 2, 12, 0, tzinfo=UTC),
        approvals=(Vote("alice", at, "looks good"),),
    )
    assert decode_memory(encode_memory(memory)) == memory
    assert '"rejected"' not in encode_memory(memory)
    rejected = Vote("bob", at, "not today")
    memory.approval = dataclasses.replace(memory.approval, rejected=rejected)
    assert decode_memory(encode_memory(memory)) == memory
    _placed(tmp_path, "memory.json", "apps")
    assert FileStateStore(tmp_path).load("web").approval is None
    assert '"approval"' not in encode_memory(make.memory())


def test_a_feedback_record_on_disk_is_read_and_written_as_it_was(tmp_path: Path) -> None:
    path = _placed(tmp_path, "feedback.json", "feedback")
    records = Records(tmp_path)
    record = records.get("web")
    assert record.forge == "github:example/web"
    assert list(record.commits) == [make.OLD, make.REV, make.BROKEN]
    done = record.commits[make.OLD]
    assert (done.attempt, done.ended, done.deployment_id, done.notified) == (
        2,
        True,
        4711,
        ["deployed"],
    )
    assert done.want is not None and done.want.deployment == "success"
    broken = record.commits[make.BROKEN].want
    assert broken is not None and (broken.status, broken.deployment) == ("error", None)
    path.unlink()
    records.save("web")
    assert path.read_bytes() == (FIXTURES / "feedback.json").read_bytes()


def test_a_feedback_record_in_the_table_is_adopted_as_it_was(tmp_path: Path) -> None:
    text = (FIXTURES / "feedback.table.json").read_text().strip()
    records = Records(tmp_path)
    records.adopt("web", text)
    assert records.get("web") == Records(tmp_path).get("web")
    mirrored: list[str] = []
    records.mirror = lambda _app, again: mirrored.append(again)
    records.save("web")
    assert mirrored == [text]
    assert (tmp_path / "feedback" / "web.json").read_bytes() == (
        FIXTURES / "feedback.json"
    ).read_bytes()


def test_a_published_status_is_read_and_published_as_it_was() -> None:
    document = json.loads((FIXTURES / "status.json").read_text())
    status = AppStatus.from_json(document)
    assert status == make.status()
    assert status.phase is Phase.DEPLOYING
    assert status.last_transition == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert status.rollout is not None and status.rollout.alarms_triggered == (
        "web-5xx",
        "web-latency",
    )
    assert status.promoted_from == "staging"
    assert status.to_json() == document


def _fixture_without(fixture: str, part: str, key: str) -> str:
    document = json.loads((FIXTURES / fixture).read_text())
    del document[part][key]
    return json.dumps(document)


def test_a_time_every_writer_wrote_is_required_though_the_class_has_a_default(
    tmp_path: Path,
) -> None:
    """A hold without `since` is damage, not a hold since now: the file was tampered with."""
    path = _placed(tmp_path, "memory.json", "apps")
    path.write_text(_fixture_without("memory.json", "hold", "since"))
    memory = FileStateStore(tmp_path).load("web")
    assert memory.damaged is not None and "missing key 'since'" in memory.damaged
    assert (path.parent / "web.json.corrupt").exists()


def test_a_value_of_the_wrong_kind_says_where_it_is(tmp_path: Path) -> None:
    path = _placed(tmp_path, "memory.json", "apps")
    path.write_text(path.read_text().replace('"rolled_back"', '"exploded"'))
    memory = FileStateStore(tmp_path).load("web")
    assert memory.damaged is not None
    assert "ValueError: history.0.result:" in memory.damaged
    assert "'exploded'" in memory.damaged
    assert "\n" not in memory.damaged


def test_a_feedback_record_without_what_every_writer_wrote_is_put_aside(tmp_path: Path) -> None:
    document = json.loads((FIXTURES / "feedback.json").read_text())
    del document["commits"][0]["ended"]
    path = _placed(tmp_path, "feedback.json", "feedback")
    path.write_text(json.dumps(document))
    assert Records(tmp_path).get("web").commits == {}
    assert (path.parent / "web.json.corrupt").exists()


def test_a_published_time_without_a_zone_is_taken_as_utc() -> None:
    document = json.loads((FIXTURES / "status.json").read_text())
    document["last_transition"] = "2024-05-01T12:00:00"
    document["history"][0]["started_at"] = "2024-05-01T11:51:00"
    assert document["rollout"] is not None
    document["rollout"]["started_at"] = "2024-05-01T11:58:00"
    assert AppStatus.from_json(document) == make.status()


def test_an_unreadable_status_is_one_line_naming_the_value() -> None:
    document = {**json.loads((FIXTURES / "status.json").read_text()), "phase": "Verifying"}
    with pytest.raises(ValueError, match=r"^not an app status document: .*phase.*'Verifying'$"):
        AppStatus.from_json(document)
