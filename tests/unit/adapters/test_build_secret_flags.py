"""How build secrets reach the BuildKit CLI: `--secret id=KEY,env=VAR` with the value in the
CLI's environment only, never in its argument list; a 0600 file in the build's private
directory for a value the environment cannot carry."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from reconciler.adapters import buildkit
from reconciler.adapters.values import BuildRequest

CLI = buildkit.DockerCli(path="/usr/bin/docker", version="20.10.24")
TOKEN = b"npm-token-0123456789"


def request(secrets: dict[str, bytes], build_args: dict[str, str] | None = None) -> BuildRequest:
    return BuildRequest(
        dockerfile="Dockerfile",
        tag="registry.test/web:" + "a" * 40,
        build_args=build_args or {},
        target="",
        labels={},
        secrets=secrets,
    )


def command(
    secrets: dict[str, bytes],
    *,
    files: dict[str, str] | None = None,
    build_args: dict[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    return buildkit.command(
        CLI,
        request(secrets, build_args),
        url=None,
        network="",
        iidfile="/tmp/iid",
        environ={"PATH": "/usr/bin"},
        secret_files=files,
    )


def secret_flags(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == "--secret"]


def test_a_secret_travels_in_the_environment_under_a_name_of_its_own() -> None:
    argv, env = command({"npm_token": TOKEN, "db.password": b"hunter2-and-more"})
    flags = secret_flags(argv)
    assert flags == [
        "id=db.password,env=RECONCILER_BUILD_SECRET_0",
        "id=npm_token,env=RECONCILER_BUILD_SECRET_1",
    ]
    assert env["RECONCILER_BUILD_SECRET_0"] == "hunter2-and-more"
    assert env["RECONCILER_BUILD_SECRET_1"] == TOKEN.decode()
    assert not any(TOKEN.decode() in arg or "hunter2" in arg for arg in argv)


def test_a_build_arg_named_like_a_secret_variable_cannot_replace_it() -> None:
    """Such a build-arg goes on the command line; the variable keeps the secret."""
    argv, env = command({"token": TOKEN}, build_args={"RECONCILER_BUILD_SECRET_0": "public value"})
    assert env["RECONCILER_BUILD_SECRET_0"] == TOKEN.decode()
    assert "RECONCILER_BUILD_SECRET_0=public value" in argv


@pytest.mark.parametrize(
    "value",
    [b"with\x00nul", b"\xff\xfe not utf-8", b"x" * (buildkit.SECRET_ENV_MAX + 1)],
    ids=["NUL", "not UTF-8", "too long for the environment"],
)
def test_a_value_the_environment_cannot_carry_goes_in_a_private_file(
    tmp_path: Path, value: bytes
) -> None:
    files = buildkit.write_secret_files(str(tmp_path), {"cert": value, "token": TOKEN})
    assert list(files) == ["cert"]  # the token still travels in the environment
    written = Path(files["cert"])
    assert written.read_bytes() == value
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    argv, env = command({"cert": value, "token": TOKEN}, files=files)
    assert secret_flags(argv) == [
        f"id=cert,src={written}",
        "id=token,env=RECONCILER_BUILD_SECRET_1",
    ]
    assert not any(key.startswith("RECONCILER_BUILD_SECRET_0") for key in env)


def test_a_file_path_with_a_comma_is_quoted_as_the_cli_reads_its_flag() -> None:
    argv, _ = command({"cert": b"\x00"}, files={"cert": "/tmp/a,b/secret-0"})
    assert secret_flags(argv) == ['id=cert,"src=/tmp/a,b/secret-0"']


def test_no_secret_no_flag() -> None:
    argv, env = command({})
    assert "--secret" not in argv
    assert not any(key.startswith(buildkit.SECRET_ENV_PREFIX) for key in env)
