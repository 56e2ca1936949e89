"""The `reconciler` command: run, validate, plan, status, sync, cluster, sandbox.

Errors are one line on stderr and a non-zero exit, never a traceback: 2 for bad input
(config, arguments), 1 for a failure to reach the daemon or AWS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from reconciler import __version__
from reconciler.config import Config, load_config
from reconciler.errors import ConfigError, ReconcilerError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEFAULT_URL = "http://127.0.0.1:8088"
THREAD_GRACE = 1.0  # after the daemon stopped, worker threads get this long to return


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        self.code = code
        super().__init__(message)


def _config_path(args: argparse.Namespace) -> Path:
    value = args.config or os.environ.get("RECONCILER_CONFIG", "")
    if not value:
        raise CliError("no config: pass --config PATH or set RECONCILER_CONFIG", EXIT_USAGE)
    return Path(value)


def _load(args: argparse.Namespace) -> tuple[Path, Config]:
    path = _config_path(args)
    try:
        return path, load_config(path)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        raise CliError("", EXIT_USAGE) from exc


# Commands --------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    path, config = _load(args)
    print(
        f"{path}: valid, {len(config.apps)} app(s): {', '.join(a.name for a in config.apps) or '-'}"
    )
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from reconciler import logs
    from reconciler.daemon.root import Daemon

    path, config = _load(args)
    logs.configure(log_format=config.daemon.log_format)
    daemon = Daemon(config=config, config_path=path)
    try:
        _run_until_complete(daemon.run())
    except ReconcilerError as exc:
        logs.get_logger().critical("daemon_failed", error=str(exc))
        return EXIT_FAILURE
    except Exception:
        logs.get_logger().critical("daemon_crashed", exc_info=True)
        return EXIT_FAILURE
    _exit_now_if_threads_hang(EXIT_OK)
    return EXIT_OK


def _run_until_complete(main: Coroutine[Any, Any, None]) -> None:
    """Like asyncio.run(), but without waiting for the default executor's threads.

    asyncio.run() joins every worker thread before it returns. A git fetch blocked on a
    silent server holds one for up to the socket timeout, far past the 10 s a stop may take.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main)
    finally:
        try:
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()  # shuts the executor down with wait=False


def _exit_now_if_threads_hang(code: int) -> None:
    """Exit at once if worker threads are still busy after a short grace.

    The interpreter would otherwise join them at exit; everything they could still do is
    abandoned work of a stopped daemon (the next start observes afresh).
    """
    me = threading.current_thread()
    busy = [t for t in threading.enumerate() if t is not me and not t.daemon]
    deadline = time.monotonic() + THREAD_GRACE
    for thread in busy:
        thread.join(max(0.0, deadline - time.monotonic()))
    hung = [t.name for t in busy if t.is_alive()]
    if hung:
        from reconciler import logs

        logs.get_logger().warning("exiting_with_busy_threads", threads=hung)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def cmd_plan(args: argparse.Namespace) -> int:
    _, config = _load(args)
    apps = [a for a in config.apps if not args.app or a.name == args.app]
    if args.app and not apps:
        raise CliError(f"unknown app {args.app!r}", EXIT_USAGE)
    rows = asyncio.run(_plan_rows(config, apps))
    if args.json:
        print(json.dumps({"apps": rows}, indent=2))
    else:
        _print_table(rows, ["app", "desired", "live", "action"])
    return EXIT_FAILURE if any(r.get("error") for r in rows) else EXIT_OK


async def _plan_rows(config: Config, apps: list[Any]) -> list[dict[str, Any]]:
    from reconciler.app.stages.observe import desired_of, observe
    from reconciler.app.stages.resolve import resolve
    from reconciler.cluster.admin import memories
    from reconciler.daemon.root import open_adapters
    from reconciler.decisions.plan import plan

    memory_of = await memories(config)
    rows: list[dict[str, Any]] = []
    # Git mirrors go to a scratch directory: `plan` writes nothing, not even to state_dir.
    with tempfile.TemporaryDirectory(prefix="reconciler-plan-") as scratch:
        daemon = config.daemon.model_copy(update={"state_dir": Path(scratch)})
        async with open_adapters(config.model_copy(update={"daemon": daemon})) as io:
            for app in apps:
                row: dict[str, Any] = {"app": app.name}
                try:
                    revision = await resolve(app, memory_of=memory_of, git=io.git)
                    desired = await desired_of(app, io, revision=revision)
                    obs = await observe(app, io, desired=desired, memory=memory_of(app.name))
                    action = plan(obs)
                    row.update(
                        desired=str(obs.desired.image),
                        revision=revision,
                        live=obs.live.image or "-",
                        task_definition=obs.live.task_definition,
                        action=_describe_action(action),
                    )
                except ReconcilerError as exc:
                    row.update(desired="-", live="-", action=f"error: {exc}", error=str(exc))
                rows.append(row)
    return rows


def _describe_action(action: object) -> str:
    from reconciler.decisions.model import (
        AwaitRollout,
        Deploy,
        FailedUnwatched,
        Held,
        InSync,
        Refused,
        ReportOnly,
        RollBack,
    )

    match action:
        case InSync():
            return "nothing (in sync)"
        case ReportOnly():
            return "nothing (suspended)"
        case Refused(reason=reason):
            return f"nothing (refused: {reason})"
        case Held(reason=reason):
            return f"nothing (held: {reason})"
        case RollBack(task_definition=td):
            return f"roll back to {td}"
        case FailedUnwatched(reason=reason):
            return f"nothing (hold: {reason})"
        case AwaitRollout(deployment_id=dep):
            return f"wait for rollout {dep}"
        case Deploy(build=True):
            return "build, push, deploy"
        case Deploy(build=False):
            return "deploy existing image"
    return repr(action)


def _url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    if os.environ.get("RECONCILER_URL"):
        return os.environ["RECONCILER_URL"].rstrip("/")
    if args.config or os.environ.get("RECONCILER_CONFIG"):
        _, config = _load(args)
        host = config.daemon.host
        # A daemon listening on every address is reached on loopback.
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
        return (
            f"http://[{host}]:{config.daemon.port}"
            if ":" in host
            else f"http://{host}:{config.daemon.port}"
        )
    return DEFAULT_URL


def _request(
    url: str, *, method: str = "GET", token: str | None = None, body: Any = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, method=method, data=data)  # noqa: S310 - operator-given
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return int(answer.status), json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read() or b"null")
        except ValueError:
            body = None
        return int(exc.code), body
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(f"cannot reach the daemon at {url}: {reason}") from exc


def cmd_status(args: argparse.Namespace) -> int:
    base = _url(args)
    if args.app:
        return _status_of_one(base, args.app, as_json=args.json)
    code, body = _request(f"{base}/status")
    if code != 200 or not isinstance(body, dict):
        raise CliError(f"{base}/status answered HTTP {code}")
    if args.json:
        print(json.dumps(body, indent=2))
        return EXIT_OK
    rows = [
        {
            "app": a["name"],
            "phase": a["phase"],
            "desired": (a["desired"].get("revision") or "-")[:12],
            "live": a["live"].get("image") or "-",
            "since": a["last_transition"],
            "error": (a.get("last_error") or "").splitlines()[0][:60]
            if a.get("last_error")
            else "",
            "owner": a.get("owner") or "-",
        }
        for a in body.get("apps", [])
    ]
    columns = ["app", "phase", "desired", "live", "since", "error"]
    if any("owner" in a for a in body.get("apps", [])):
        columns.insert(2, "owner")  # several daemons share the apps
    _print_table(rows, columns)
    return EXIT_OK


def _status_of_one(base: str, app: str, *, as_json: bool) -> int:
    code, body = _request(f"{base}/status/{urllib.parse.quote(app, safe='')}")
    if code == 404:
        raise CliError(f"unknown app {app!r}", EXIT_USAGE)
    if code != 200 or not isinstance(body, dict):
        raise CliError(f"{base}/status/{app} answered HTTP {code}")
    if as_json:
        print(json.dumps(body, indent=2))
        return EXIT_OK
    lines = [
        f"app:        {body['name']}",
        f"phase:      {body['phase']} since {body['last_transition']}",
        f"desired:    {body['desired'].get('image') or '-'}",
        f"live:       {body['live'].get('image') or '-'} ({body['live'].get('task_definition')})",
    ]
    rollout = body.get("rollout")
    if rollout:
        counts = f"{rollout.get('running')}/{rollout.get('desired')} running"
        lines.append(
            f"rollout:    {rollout['kind']} {rollout['strategy']} {rollout.get('status') or '-'}"
            f" stage {rollout.get('stage') or '-'}, {counts}, "
            f"{rollout.get('failed_tasks', 0)} failed tasks"
        )
        if rollout.get("alarms_triggered"):
            lines.append(f"alarms:     {', '.join(rollout['alarms_triggered'])}")
        lines.append(
            f"            started {rollout.get('started_at')}, "
            f"finished {rollout.get('finished_at') or '-'}"
        )
    if body.get("last_error"):
        lines.append("last error: " + body["last_error"].replace("\n", "\n            "))
    print("\n".join(lines))
    history = [
        {
            "revision": (h["revision"] or "")[:12],
            "result": h["result"],
            "finished": h["finished_at"],
            "error": (h.get("error") or "").splitlines()[0][:60] if h.get("error") else "",
        }
        for h in body.get("history", [])
    ]
    if history:
        print()
        _print_table(history, ["revision", "result", "finished", "error"])
    return EXIT_OK


def _token(args: argparse.Namespace) -> str | None:
    token_file = args.token_file or os.environ.get("RECONCILER_API_TOKEN_FILE")
    if not token_file:
        return None
    try:
        return Path(token_file).read_text().strip()
    except OSError as exc:
        raise CliError(f"cannot read token file {token_file}: {exc.strerror}", EXIT_USAGE) from exc


def _steer(args: argparse.Namespace, action: str, body: Any = None) -> Any:
    """POST /apps/APP/<action>; the answer's body when the daemon accepted it (202)."""
    app = urllib.parse.quote(args.app, safe="")
    code, answer = _request(
        f"{_url(args)}/apps/{app}/{action}", method="POST", token=_token(args), body=body
    )
    if code == 202:
        return answer
    message = answer.get("error") if isinstance(answer, dict) else None
    raise CliError(
        f"{action} of {args.app} refused: HTTP {code}: {message or 'no detail'}",
        EXIT_USAGE if code in {400, 404, 409} else EXIT_FAILURE,
    )


def cmd_cleanup(args: argparse.Namespace) -> int:
    from reconciler import logs
    from reconciler.cli.cleanup import cleanup_rows

    _, config = _load(args)
    # The table goes to stdout; what is done on the way is logged to stderr.
    logs.configure(log_format="console", stream=sys.stderr)
    if args.app and args.app not in {a.name for a in config.apps}:
        raise CliError(f"unknown app {args.app!r}", EXIT_USAGE)
    rows = asyncio.run(cleanup_rows(config, [args.app] if args.app else [], dry_run=args.dry_run))
    _print_table(rows, ["app", "action", "item", "detail"])
    failed = any(r["action"] == "error" or r["action"].endswith("failed") for r in rows)
    return EXIT_FAILURE if failed else EXIT_OK


def cmd_sync(args: argparse.Namespace) -> int:
    _steer(args, "sync")
    print(f"sync of {args.app} started")
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    answer = _steer(args, "rollback", {"revision": args.to} if args.to else {})
    print(f"{args.app} pinned to {answer['pinned']} (until `reconciler unpin {args.app}`)")
    return EXIT_OK


def cmd_unpin(args: argparse.Namespace) -> int:
    answer = _steer(args, "unpin")
    said = "back to following git" if answer.get("unpinned") else "was not pinned"
    print(f"{args.app}: {said}")
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    app = urllib.parse.quote(args.app, safe="")
    code, body = _request(f"{_url(args)}/status/{app}")
    if code == 404:
        raise CliError(f"unknown app {args.app!r}", EXIT_USAGE)
    if code != 200 or not isinstance(body, dict):
        raise CliError(f"/status/{args.app} answered HTTP {code}")
    if args.json:
        print(json.dumps(body.get("history", []), indent=2))
        return EXIT_OK
    rows = [
        {
            "revision": h["revision"][:12],
            "result": h["result"],
            "started": h["started_at"],
            "finished": h["finished_at"],
            "error": (h.get("error") or "").splitlines()[0][:60] if h.get("error") else "",
        }
        for h in body.get("history", [])
    ]
    _print_table(rows, ["revision", "result", "started", "finished", "error"])
    return EXIT_OK


def cmd_cluster(args: argparse.Namespace) -> int:
    from reconciler.cluster import admin

    _, config = _load(args)
    if args.action == "init":
        created = asyncio.run(admin.init(config))
        table = config.cluster.lease_table
        print(f"created table {table}" if created else f"table {table} exists already")
        return EXIT_OK
    document = asyncio.run(admin.status(config))
    if args.json:
        print(json.dumps(document, indent=2))
        return EXIT_OK
    daemons = [
        {
            "daemon": d["host_id"],
            "alive": "yes" if d["alive"] else "no (lease running out)",
            "heartbeat": f"{d['heartbeat_age_seconds']} s ago",
            "apps": str(len(d["apps"])),
            "url": d["url"] or "-",
        }
        for d in document["daemons"]
    ]
    _print_table(daemons, ["daemon", "alive", "heartbeat", "apps", "url"])
    print()
    leases = [
        {
            "app": a["app"],
            "owner": a["owner"] or "- (free)",
            "held for": f"{a['held_for_seconds']} s" if a["held_for_seconds"] is not None else "-",
            "version": str(a["version"]),
        }
        for a in document["apps"]
    ]
    _print_table(leases, ["app", "owner", "held for", "version"])
    return EXIT_OK


def cmd_sandbox(args: argparse.Namespace) -> int:
    from reconciler.sandbox.run import run_sandbox

    _, config = _load(args)
    return run_sandbox(config, outcome=args.outcome, after=args.after)


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns).rstrip())


def _housekeeping_command(sub: Any) -> None:
    cleanup = sub.add_parser(
        "cleanup",
        help="deregister old task definitions and delete old images, as [apps.cleanup] says",
    )
    cleanup.add_argument("--config", help="config file (default: $RECONCILER_CONFIG)")
    cleanup.add_argument("--app")
    cleanup.add_argument("--dry-run", action="store_true", help="only list what would go")
    cleanup.set_defaults(func=cmd_cleanup)


def _steering_commands(sub: Any) -> None:
    """history, rollback and unpin: an app's past, and an operator's pin on it."""
    history = sub.add_parser("history", help="an app's last outcomes as a table")
    history.add_argument("app")
    history.add_argument("--url")
    history.add_argument("--config")
    history.add_argument("--json", action="store_true")
    history.set_defaults(func=cmd_history)
    rollback = sub.add_parser(
        "rollback", help="deploy an earlier successful revision now and keep it until unpin"
    )
    rollback.add_argument("app")
    rollback.add_argument("--to", help="the revision (full or short SHA); default: the one before")
    unpin = sub.add_parser("unpin", help="end a rollback pin: follow git again")
    unpin.add_argument("app")
    for command, func in ((rollback, cmd_rollback), (unpin, cmd_unpin)):
        command.add_argument("--url")
        command.add_argument("--config")
        command.add_argument("--token-file")
        command.set_defaults(func=func)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="reconciler", description="Keep ECS services on the image built from a git revision."
    )
    top.add_argument("--version", action="version", version=f"reconciler {__version__}")
    sub = top.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="config file (default: $RECONCILER_CONFIG)")

    run = sub.add_parser("run", help="run the daemon")
    with_config(run)
    run.set_defaults(func=cmd_run)
    validate = sub.add_parser("validate", help="check a config file")
    with_config(validate)
    validate.set_defaults(func=cmd_validate)
    plan = sub.add_parser(
        "plan", help="show desired vs live and the action each app needs; writes nothing"
    )
    with_config(plan)
    plan.add_argument("--app")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(func=cmd_plan)
    status = sub.add_parser("status", help="the daemon's status as a table")
    status.add_argument("app", nargs="?", help="one app in detail: its rollout and history")
    status.add_argument("--url")
    status.add_argument("--config")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    sync = sub.add_parser("sync", help="start a pass now and clear a Failed hold")
    sync.add_argument("app")
    sync.add_argument("--url")
    sync.add_argument("--config")
    sync.add_argument("--token-file")
    sync.set_defaults(func=cmd_sync)
    _steering_commands(sub)
    _housekeeping_command(sub)
    cluster = sub.add_parser(
        "cluster", help="the lease table several daemons share: create it, or who holds what"
    )
    cluster.add_argument("action", choices=["init", "status"])
    with_config(cluster)
    cluster.add_argument("--json", action="store_true")
    cluster.set_defaults(func=cmd_cluster)
    sandbox = sub.add_parser(
        "sandbox", help="embedded AWS (moto) with rolling updates, for trying it out"
    )
    with_config(sandbox)
    sandbox.add_argument(
        "--outcome",
        choices=["complete", "fail", "alarm", "rollback_fail", "stick"],
        default="complete",
        help="what every rollout does: complete, fail (circuit breaker, rolled back), alarm "
        "(an alarm rolls it back), rollback_fail (its rollback fails too), stick",
    )
    sandbox.add_argument("--after", type=float, default=3.0, help="seconds a rollout takes")
    sandbox.set_defaults(func=cmd_sandbox)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        if str(exc):
            print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except ReconcilerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:
        # An operator gets one line, not a traceback; `run` logs its crashes in full itself.
        print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
