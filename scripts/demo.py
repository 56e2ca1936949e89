"""The demo: a git commit becomes a running ECS deployment (the `web` app's release: its web
service, then its queue worker, then a nightly EventBridge rule and a Scheduler schedule
that run the worker's task), then a webhook redeploys, then a commit whose test fails is
held and the next one that passes goes live; then a change of the `api` app's task
definition file waits for an approval (api is production), is approved and deployed, and an
edit of it in the "console" is shown as drift.

Runs everything on this machine: the sandbox AWS (moto with rolling updates and one-off
tasks), the local registry and dockerd (started by scripts/demo), a git repository it makes,
and the daemon itself. Watch the daemon's log lines: build, test, push, task definition, the
migration task, service update, rollout, `latest` moved.

    scripts/demo           # keeps running; commit to the printed work tree and watch
    scripts/demo --once    # exits 0 after the deploys and the held-then-fixed commit
    scripts/demo --join    # while a first `scripts/demo` runs: a second daemon on the same
                           # sandbox and lease table takes half the apps over

Both daemons share the apps through the sandbox's DynamoDB (`[cluster].lease_table`): each
app is reconciled by one of them, and when the second stops (Ctrl-C, SIGTERM) the first
takes its apps back at once.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from reconciler.sandbox.baseimage import ensure_base_image  # noqa: E402

VENV_BIN = ROOT / ".venv" / "bin"
SECRET = "demo-webhook-secret"


def say(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def git(work: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Demo",
        "GIT_AUTHOR_EMAIL": "demo@example.com",
        "GIT_COMMITTER_NAME": "Demo",
        "GIT_COMMITTER_EMAIL": "demo@example.com",
    }
    return subprocess.run(
        ["git", "-C", str(work), *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


def make_repo(workdir: Path) -> tuple[Path, Path]:
    remote, work = workdir / "web.git", workdir / "web"
    subprocess.run(
        ["git", "init", "-q", "--bare", "--initial-branch=main", str(remote)], check=True
    )
    subprocess.run(["git", "init", "-q", "--initial-branch=main", str(work)], check=True)
    (work / "Dockerfile").write_text(
        f"FROM {ensure_base_image()}\nCOPY index.html /srv/index.html\n"
    )
    (work / "index.html").write_text("<h1>hello, version 1</h1>\n")
    (work / "deploy" / "api").mkdir(parents=True)
    (work / API_DEFINITION).write_text(api_definition(memory="512", level="info"))
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "First version")
    git(work, "remote", "add", "origin", str(remote))
    git(work, "push", "-q", "origin", "main")
    return remote, work


API_DEFINITION = "deploy/api/task-definition.json"


def api_definition(*, memory: str, level: str) -> str:
    """The `api` app's task definition as its repository holds it (a Jinja2 template)."""
    container = {
        "name": "app",
        "image": "{{ image }}",
        "essential": True,
        "portMappings": [{"containerPort": 8080}],
        "environment": [
            {"name": "LOG_LEVEL", "value": level},
            {"name": "REVISION", "value": "{{ revision }}"},
        ],
    }
    definition = {
        "family": "api",
        "requiresCompatibilities": ["FARGATE"],
        "networkMode": "awsvpc",
        "cpu": "256",
        "memory": memory,
        "containerDefinitions": [container],
    }
    return json.dumps(definition, indent=2) + "\n"


def write_config(
    workdir: Path, remote: Path, *, listen_port: int, admin_port: int, aws_port: int
) -> Path:
    (workdir / "webhook-secret").write_text(SECRET + "\n")
    config = workdir / "reconciler.toml"
    config.write_text(f"""\
[daemon]
listen = "127.0.0.1:{listen_port}"
admin_listen = "127.0.0.1:{admin_port}"
poll_interval = "30s"
state_dir = "{workdir / "state"}"
log_format = "console"

[aws]
region = "us-east-1"
endpoint_url = "http://127.0.0.1:{aws_port}"
registry = "127.0.0.1:5000"

[webhook]
github_secret_file = "{workdir / "webhook-secret"}"

[build]
network = "none"

[cluster]
lease_table = "demo-leases"
lease_ttl = "10s"
host_id = "demo-1"

[[apps]]
name = "web"
repo = "{remote.as_uri()}"
branch = "main"
ecr_repository = "demo/web"
cluster = "demo"
services = ["web", "worker"]    # one release: the web, then the queue worker
schedules = ["rule/nightly-report", "schedule/default/cleanup"]   # follow each release
rollout_timeout = "2m"
extra_tags = ["latest"]

[apps.test]
command = ["grep", "-q", "hello", "/srv/index.html"]
timeout = "1m"

[apps.pre_deploy]
command = ["sh", "-c", "echo migrating the database"]
timeout = "2m"

[[apps]]
name = "api"
repo = "{remote.as_uri()}"
branch = "main"
ecr_repository = "demo/api"
cluster = "demo"
service = "api"
rollout_timeout = "2m"
definitions = "deploy/api"

[apps.approval]                 # api is production: a person approves each release
expire_after = "1h"
""")
    return config


# Set once the sandbox says it is ready: every app provisioned, the lease table made.
SANDBOX_READY = threading.Event()
READY_LINE = "sandbox: AWS on "


def pump(process: subprocess.Popen[str], prefix: str) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        print(f"{prefix} {line}", end="", flush=True)
        if line.startswith(READY_LINE):
            SANDBOX_READY.set()


SANDBOX_ENV = {
    **os.environ,
    "AWS_ACCESS_KEY_ID": "sandbox",
    "AWS_SECRET_ACCESS_KEY": "sandbox",
    "PYTHONUNBUFFERED": "1",
}


def start(args: list[str], prefix: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=SANDBOX_ENV
    )
    threading.Thread(target=pump, args=(process, prefix), daemon=True).start()
    return process


@dataclass(frozen=True)
class Admin:
    """The daemon's admin listener, called with the admin token it keeps in its state_dir."""

    url: str
    state_dir: Path

    def token(self) -> str:
        return (self.state_dir / "admin.token").read_text().strip()

    def get_json(self, path: str) -> Any:
        request = urllib.request.Request(  # noqa: S310 - loopback only
            self.url + path, headers={"Authorization": f"Bearer {self.token()}"}
        )
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
            return json.loads(answer.read())


def wait_for(what: str, check: Any, *, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except OSError as exc:  # not listening yet
            last_error = exc
        time.sleep(0.3)
    raise SystemExit(f"demo failed: timed out waiting for {what} ({last_error})")


def failed(status: dict[str, Any], revision: str) -> bool:
    """Whether the app is Failed at `revision`: its last attempt was of that revision. (The
    desired revision moves as soon as git answers, a moment before a new attempt starts.)"""
    history = status["history"]
    return status["phase"] == "Failed" and bool(history) and history[0]["revision"] == revision


def failed_at(admin: Admin, revision: str) -> Any:
    status = admin.get_json("/status/web")
    return status if failed(status, revision) else None


def in_sync_at(admin: Admin, revision: str, app: str = "web") -> Any:
    status = admin.get_json(f"/status/{app}")
    if failed(status, revision):
        raise SystemExit(f"demo failed: {app} is Failed: {status['last_error']}")
    return (
        status
        if status["phase"] == "InSync" and status["desired"]["revision"] == revision
        else None
    )


def awaiting_at(admin: Admin, revision: str, app: str) -> Any:
    status = admin.get_json(f"/status/{app}")
    if failed(status, revision):
        raise SystemExit(f"demo failed: {app} is Failed: {status['last_error']}")
    waiting = status["phase"] == "AwaitingApproval" and status["desired"]["revision"] == revision
    return status if waiting else None


def signed_push(base: str, remote: Path, head: str) -> dict[str, Any]:
    body = json.dumps(
        {"ref": "refs/heads/main", "after": head, "repository": {"clone_url": remote.as_uri()}}
    ).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(  # noqa: S310 - loopback only
        f"{base}/hooks/github",
        data=body,
        method="POST",
        headers={
            "X-GitHub-Event": "push",
            "X-Hub-Signature-256": signature,
            "X-GitHub-Delivery": f"demo-{head[:12]}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
        return {"status": answer.status, **json.loads(answer.read())}


def hold_a_failing_test_then_deploy_the_fix(
    base: str, admin: Admin, remote: Path, work: Path
) -> None:
    (work / "index.html").write_text("<h1>oops, the greeting is gone</h1>\n")
    git(work, "commit", "-q", "-am", "Drop the greeting")
    git(work, "push", "-q", "origin", "main")
    broken = git(work, "rev-parse", "HEAD")
    say(f"Pushed {broken[:12]}, whose test fails; it must be held, never pushed")
    signed_push(base, remote, broken)
    status = wait_for(f"web to hold {broken[:12]}", lambda: failed_at(admin, broken))
    say(f"Held: {status['history'][0]['result']}: {status['last_error'].splitlines()[0]}")

    (work / "index.html").write_text("<h1>hello again, version 4</h1>\n")
    git(work, "commit", "-q", "-am", "Bring the greeting back")
    git(work, "push", "-q", "origin", "main")
    fixed = git(work, "rev-parse", "HEAD")
    signed_push(base, remote, fixed)
    status = wait_for(f"web to run {fixed[:12]}", lambda: in_sync_at(admin, fixed))
    say(f"Fixed commit deployed: web is InSync, running {status['live']['image']}")


def sandbox_ecs(aws_port: int) -> Any:
    import boto3

    return boto3.client(
        "ecs",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{aws_port}",
        aws_access_key_id=SANDBOX_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=SANDBOX_ENV["AWS_SECRET_ACCESS_KEY"],
    )


def live_api(ecs: Any) -> dict[str, Any]:
    arn = ecs.describe_services(cluster="demo", services=["api"])["services"][0]["taskDefinition"]
    return dict(ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"])


def level_of(definition: dict[str, Any]) -> str:
    environment = definition["containerDefinitions"][0].get("environment", [])
    return next((e["value"] for e in environment if e["name"] == "LOG_LEVEL"), "?")


def deploy_a_definition_change_then_detect_a_console_edit(
    base: str, admin: Admin, remote: Path, work: Path, *, config: Path, aws_port: int
) -> None:
    (work / API_DEFINITION).write_text(api_definition(memory="1024", level="debug"))
    git(work, "commit", "-q", "-am", "api: more memory, debug logs")
    git(work, "push", "-q", "origin", "main")
    changed = git(work, "rev-parse", "HEAD")
    say(f"Pushed {changed[:12]}, changing only {API_DEFINITION} (memory, LOG_LEVEL)")
    signed_push(base, remote, changed)
    waiting = wait_for(
        f"api's release of {changed[:12]} to wait for approval",
        lambda: awaiting_at(admin, changed, "api"),
    )
    say(
        "api is production: its release waits for an approval, pushed and registered, "
        f"image {waiting['approval']['digest'][:19]}...; approving it: reconciler approve api"
    )
    reconciler = str(VENV_BIN / "reconciler")
    approve = [reconciler, "approve", "api", "--comment", "demo", "--config", str(config)]
    subprocess.run(approve, check=True)
    status = wait_for(f"api to run {changed[:12]}", lambda: in_sync_at(admin, changed, "api"))
    say(f"Approved by {status['history'][0].get('by') or 'someone'}; the release went out")
    ecs = sandbox_ecs(aws_port)
    live = live_api(ecs)
    say(
        f"Definition change deployed: api runs {live['taskDefinitionArn'].rsplit('/', 1)[-1]}"
        f" with memory {live['memory']} and LOG_LEVEL={level_of(live)}"
    )

    # What an edit in the console does: a new revision of the live one, the service on it.
    edited = {
        key: live[key]
        for key in ("family", "containerDefinitions", "requiresCompatibilities", "networkMode")
    }
    edited.update(cpu=live["cpu"], memory=live["memory"])
    for variable in edited["containerDefinitions"][0]["environment"]:
        if variable["name"] == "LOG_LEVEL":
            variable["value"] = "trace"
    registered = ecs.register_task_definition(**edited)["taskDefinition"]["taskDefinitionArn"]
    ecs.update_service(cluster="demo", service="api", taskDefinition=registered)
    say("Edited api in the 'console': LOG_LEVEL=trace; asking for a pass (reconciler sync api)")
    subprocess.run([reconciler, "sync", "api", "--config", str(config)], check=False)
    drift = wait_for("api to show drift", lambda: admin.get_json("/status/api").get("drift"))
    say(
        f'Console edit detected as drift, nothing written (drift = "alert"): '
        f"{'; '.join(drift['changes'])}"
    )
    diff = [reconciler, "diff", "api", "--config", str(config)]
    subprocess.run(diff, check=False, env=SANDBOX_ENV)


def cluster_status(config: Path) -> dict[str, Any]:
    listed = subprocess.run(
        [str(VENV_BIN / "reconciler"), "cluster", "status", "--json", "--config", str(config)],
        check=True,
        capture_output=True,
        text=True,
        env=SANDBOX_ENV,
    )
    return dict(json.loads(listed.stdout))


def held_by(config: Path) -> dict[str, list[str]]:
    """Live daemon -> the apps it holds."""
    return {d["host_id"]: d["apps"] for d in cluster_status(config)["daemons"] if d["alive"]}


def shared(held: dict[str, list[str]]) -> dict[str, list[str]] | None:
    """`held` when two daemons hold apps each, else None (not yet)."""
    return held if len(held) == 2 and all(held.values()) else None


def alone(held: dict[str, list[str]]) -> dict[str, list[str]] | None:
    """`held` when the first daemon alone holds both apps, else None (not yet)."""
    return held if list(held) == ["demo-1"] and len(held["demo-1"]) == 2 else None


def join(workdir: Path, *, once: bool) -> int:
    """A second daemon for the demo already running in `workdir`."""
    first = workdir / "reconciler.toml"
    if not first.exists():
        raise SystemExit(
            f"demo failed: no demo runs in {workdir}: start `scripts/demo` first, then "
            "`scripts/demo --join` in another terminal"
        )
    text = first.read_text()
    listen_line = next(line for line in text.splitlines() if line.startswith("listen = "))
    admin_line = next(line for line in text.splitlines() if line.startswith("admin_listen = "))
    port = free_port()
    second = workdir / "second.toml"
    second.write_text(
        text.replace(listen_line, f'listen = "127.0.0.1:{port}"')
        .replace(admin_line, f'admin_listen = "127.0.0.1:{free_port()}"')
        .replace(f'state_dir = "{workdir / "state"}"', f'state_dir = "{workdir / "state-2"}"')
        .replace('host_id = "demo-1"', 'host_id = "demo-2"')
    )
    reconciler = str(VENV_BIN / "reconciler")
    say(f"Starting a second daemon on 127.0.0.1:{port}, sharing the lease table demo-leases")
    daemon = start([reconciler, "run", "--config", str(second)], "[daemon 2]")
    try:
        split = wait_for(
            "the two daemons to share the apps",
            lambda: shared(held_by(second)),
            timeout=120,
        )
        say(f"Two daemons share the apps: {json.dumps(split, sort_keys=True)}")
        subprocess.run(
            [reconciler, "cluster", "status", "--config", str(second)], check=False, env=SANDBOX_ENV
        )
        if not once:
            say("Ctrl-C stops the second daemon; the first takes its apps back at once.")
            with contextlib.suppress(KeyboardInterrupt):
                until_stopped()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        back = wait_for(
            "the first daemon to hold every app again",
            lambda: alone(held_by(first)),
            timeout=60,
        )
        say(f"Second daemon stopped; its apps went back: {json.dumps(back, sort_keys=True)}")
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()


def stop_in_order(processes: Iterable[subprocess.Popen[str]]) -> None:
    """SIGTERM each process and wait for it to exit before the next: the daemon hands its
    leases back through the sandbox's table, so the sandbox must outlive it."""
    for process in processes:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def until_stopped() -> None:
    """Wait for Ctrl-C or SIGTERM; both raise KeyboardInterrupt (see main)."""
    while True:
        signal.pause()


def main() -> int:
    # SIGTERM unwinds like Ctrl-C, so the sandbox and the daemons this script started are
    # stopped on the way out, whichever way it is stopped.
    signal.signal(signal.SIGTERM, _interrupted)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--once", action="store_true", help="exit 0 after the webhook redeploy")
    parser.add_argument(
        "--join", action="store_true", help="add a second daemon to the demo running now"
    )
    parser.add_argument("--workdir", type=Path, default=ROOT / ".run" / "demo")
    args = parser.parse_args()
    if args.join:
        return join(args.workdir.resolve(), once=args.once)

    workdir: Path = args.workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    listen_port, admin_port, aws_port = free_port(), free_port(), free_port()
    remote, work = make_repo(workdir)
    config = write_config(
        workdir, remote, listen_port=listen_port, admin_port=admin_port, aws_port=aws_port
    )
    base = f"http://127.0.0.1:{listen_port}"  # webhooks
    admin = Admin(f"http://127.0.0.1:{admin_port}", workdir / "state")
    reconciler = str(VENV_BIN / "reconciler")
    processes: list[subprocess.Popen[str]] = []
    try:
        say(f"Starting the sandbox AWS on 127.0.0.1:{aws_port} (moto + rolling updates)")
        processes.append(
            start([reconciler, "sandbox", "--config", str(config), "--after", "2"], "[aws]")
        )
        # Listening is not enough: the daemon starts once the apps and the lease table are
        # there (it refuses to run on a lease table that does not exist).
        wait_for("the sandbox", SANDBOX_READY.is_set)

        say(f"Starting the daemon: reconciler run --config {config}")
        processes.append(start([reconciler, "run", "--config", str(config)], "[daemon]"))
        first = git(work, "rev-parse", "HEAD")
        status = wait_for(f"web to run {first[:12]}", lambda: in_sync_at(admin, first))
        say(f"Dashboard: {admin.url}/login?token={admin.token()}  (live; open it in a browser)")
        say(f"First deploy done: web is InSync, running {status['live']['image']}")
        parts = ", ".join(f"{p['name']} {p['phase']}" for p in status.get("parts", []))
        say(f"One release moved every part of the app, in order: {parts}")

        (work / "index.html").write_text("<h1>hello, version 2</h1>\n")
        git(work, "commit", "-q", "-am", "Second version")
        git(work, "push", "-q", "origin", "main")
        second = git(work, "rev-parse", "HEAD")
        say(f"Pushed a second commit {second[:12]}; sending a signed GitHub webhook")
        print(json.dumps(signed_push(base, remote, second)), flush=True)
        status = wait_for(f"web to run {second[:12]}", lambda: in_sync_at(admin, second))
        say(f"Webhook redeploy done: web is InSync, running {status['live']['image']}")

        hold_a_failing_test_then_deploy_the_fix(base, admin, remote, work)
        deploy_a_definition_change_then_detect_a_console_edit(
            base, admin, remote, work, config=config, aws_port=aws_port
        )
        subprocess.run([reconciler, "status", "--config", str(config)], check=False)

        if args.once:
            say("Demo complete")
            return 0
        say(
            "Still running. Try:\n"
            f"    cd {work} && echo v3 > index.html\n"
            "    git commit -qam v3 && git push -q origin main\n"
            f"    {reconciler} status --config {config}   (the daemon polls git every 30s)\n"
            f"    {reconciler} sync web --config {config}  (or start a pass now)\n"
            f"    curl -s -H 'Authorization: Bearer {admin.token()}' {admin.url}/metrics\n"
            "    scripts/demo --join                 (a second daemon shares the apps)\n"
            "Ctrl-C stops everything."
        )
        until_stopped()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        stop_in_order(reversed(processes))


if __name__ == "__main__":
    sys.exit(main())
