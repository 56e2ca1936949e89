"""Build secrets from files and the daemon's environment: read when asked, registered for
scrubbing before anyone sees them, and a secret that cannot be read needs a human, with a
message naming its key and source and never its value. (SSM and Secrets Manager, on the
sandbox AWS: tests/integration/test_build_secrets.py.)"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from reconciler import logs
from reconciler.adapters.build_secrets import MAX_SECRET_BYTES, BuildSecrets
from reconciler.config import BuildSecretSource
from reconciler.errors import StalledError


def reader(environ: dict[str, str] | None = None) -> BuildSecrets:
    return BuildSecrets(region="us-east-1", environ=environ or {})


def source(**given: str) -> BuildSecretSource:
    return BuildSecretSource.model_validate(given)


async def test_a_file_and_a_variable_are_read_as_they_are(tmp_path: Path) -> None:
    npmrc = f"//registry.npmjs.org/:_authToken={uuid.uuid4().hex}\n".encode()
    (tmp_path / "npmrc").write_bytes(npmrc)
    token = f"tok-{uuid.uuid4().hex}"
    values = await reader({"NPM_TOKEN": token}).read(
        {"npmrc": source(file=str(tmp_path / "npmrc")), "token": source(env="NPM_TOKEN")}
    )
    assert values == {"npmrc": npmrc, "token": token.encode()}


async def test_every_value_read_is_scrubbed_from_then_on(tmp_path: Path) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    assert token in logs.redact(f"says {token}")  # not known before it is read
    await reader({"NPM_TOKEN": token}).read({"token": source(env="NPM_TOKEN")})
    assert logs.redact(f"says {token}") == "says ***"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"file": "/nonexistent/npmrc"}, "build secret s (file /nonexistent/npmrc) cannot be read"),
        ({"env": "NOT_SET_ANYWHERE"}, "build secret s (env NOT_SET_ANYWHERE) is not set"),
        ({"env": "EMPTY"}, "build secret s (env EMPTY) is empty"),
    ],
    ids=["missing file", "unset variable", "empty value"],
)
async def test_a_secret_that_cannot_be_read_needs_a_human(
    given: dict[str, str], message: str
) -> None:
    with pytest.raises(StalledError) as raised:
        await reader({"EMPTY": ""}).read({"s": source(**given)})
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


async def test_a_directory_is_not_a_secret_file(tmp_path: Path) -> None:
    with pytest.raises(StalledError, match=r"build secret s \(file .*\) cannot be read: Is a dir"):
        await reader().read({"s": source(file=str(tmp_path))})


async def test_a_secret_larger_than_buildkit_takes_is_refused_without_reading_it_all(
    tmp_path: Path,
) -> None:
    big = tmp_path / "big"
    with big.open("wb") as file:
        file.truncate(64 * 1024 * 1024)  # sparse: 64 MiB that nobody should read whole
    with pytest.raises(StalledError, match="larger than BuildKit's limit of 500 KiB"):
        await reader().read({"s": source(file=str(big))})
    big.write_bytes(b"x" * MAX_SECRET_BYTES)
    assert len((await reader().read({"s": source(file=str(big))}))["s"]) == MAX_SECRET_BYTES


async def test_nothing_is_returned_when_one_secret_of_several_cannot_be_read(
    tmp_path: Path,
) -> None:
    (tmp_path / "ok").write_text("a readable secret")
    with pytest.raises(StalledError, match="build secret b "):
        await reader().read(
            {"a": source(file=str(tmp_path / "ok")), "b": source(file=str(tmp_path / "gone"))}
        )
