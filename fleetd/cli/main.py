"""The ``fleetd`` command line.

Exit codes, shared by every subcommand:

* 0 — success, nothing wrong found;
* 1 — the command ran and found problems (``check``: a cluster unreachable or
  missing permissions, the source unreadable, or an encrypted file no
  configured key opens; ``status``: a sync not ready);
* 2 — the command could not run: invalid inventory or bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from fleetd import __version__
from fleetd.cli import commands
from fleetd.cli import diff as diff_command
from fleetd.cli import mcp as mcp_command
from fleetd.cli.check import check_everything, render_secrets, render_table
from fleetd.cli.status import render_status, rollout_lines, shard_lines, with_owners
from fleetd.daemon.root import serve
from fleetd.daemon.status import status_rows
from fleetd.daemon.store import StateStore, StoreError
from fleetd.errors import InventoryError
from fleetd.inventory import Fleet, load_fleet
from fleetd.shard.ownership import read_ownership
from fleetd.util import logs

EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2
DEFAULT_CONFIG = Path(os.environ.get("FLEETD_CONFIG", "/etc/fleetd/fleetd.toml"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleetd",
        description="Keep a fleet of Kubernetes clusters equal to what a git repository says.",
        epilog="Exit codes: 0 ok, 1 problems found, 2 invalid inventory or usage.",
    )
    parser.add_argument("--version", action="version", version=f"fleetd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = sub.add_parser(
        "check",
        help="validate the inventory, check every cluster's connection and permissions, and the secrets",
        description="Validate the inventory, then connect to every cluster concurrently: "
        "TLS, authentication, server version and the permissions fleetd needs. At the same time, "
        "fetch the source into a temporary directory and try the configured keys on every "
        "SOPS-encrypted file the syncs use (no value is ever printed).",
    )
    _add_config(check)
    check.add_argument("--json", action="store_true", help="print a JSON document instead of a table")
    check.add_argument(
        "--timeout", type=float, default=15.0, metavar="SECONDS", help="per-cluster deadline (default 15)"
    )
    run = sub.add_parser(
        "run",
        help="run the daemon: keep every cluster equal to git",
        description="Fetch the repository once per revision and reconcile every cluster concurrently "
        "until SIGTERM or SIGINT (stops within 10 seconds).",
    )
    _add_config(run)
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    status = sub.add_parser(
        "status",
        help="show per cluster and sync: revision, result, objects, last error, age",
        description="Read the daemon's state directory (works whether or not the daemon runs).",
    )
    _add_config(status)
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    commands.add_parsers(sub, _add_config)
    diff = sub.add_parser(
        "diff",
        help="show what the daemon would change on a cluster (writes nothing)",
        description="Fetch the source into a temporary directory, render the cluster's syncs as the daemon "
        "does and compare them with the live objects by server-side dry run. Secret values are masked. "
        "Works without a running daemon. Exit codes: 0 no change, 1 changes, 2 error.",
    )
    _add_config(diff)
    diff.add_argument("cluster", metavar="CLUSTER", help="cluster name from the inventory")
    diff.add_argument(
        "sync", metavar="SYNC", nargs="?", help="only this sync (default: all of the cluster's)"
    )
    diff.add_argument("--json", action="store_true", help="print a JSON document instead of the report")
    mcp_command.add_parser(sub, _add_config)
    sub.add_parser("version", help="print fleetd's version")
    return parser


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=DEFAULT_CONFIG,
        help=f"fleet-wide TOML file (default {DEFAULT_CONFIG}, or $FLEETD_CONFIG)",
    )


def _load(path: Path, as_json: bool) -> Fleet | None:
    try:
        return load_fleet(path)
    except InventoryError as exc:
        if as_json:
            problems = [
                {"file": str(p.file), "line": p.line, "key": p.key, "message": p.message}
                for p in exc.problems
            ]
            print(
                json.dumps(
                    {"ok": False, "inventory": {"ok": False, "problems": problems}, "clusters": []}, indent=2
                )
            )
        else:
            print(f"fleetd: the inventory is invalid ({len(exc.problems)} problem(s)):", file=sys.stderr)
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
        return None


def _check(args: argparse.Namespace) -> int:
    fleet = _load(args.config, args.json)
    if fleet is None:
        return EXIT_ERROR
    reports, secrets = asyncio.run(check_everything(fleet, timeout=args.timeout))
    ok = all(r.ok for r in reports) and secrets.ok
    if args.json:
        doc = {
            "ok": ok,
            "inventory": {"ok": True, "file": str(fleet.file), "clusters": len(fleet.clusters)},
            "clusters": [r.to_json() for r in reports],
            "source": secrets.source_json(),
            "secrets": [f.to_json() for f in secrets.files],
        }
        print(json.dumps(doc, indent=2))
    else:
        print(f"inventory {fleet.file}: ok ({len(fleet.clusters)} cluster(s))")
        print(render_table(reports))
        print(render_secrets(secrets))
    return EXIT_OK if ok else EXIT_PROBLEMS


def _run(args: argparse.Namespace) -> int:
    logs.setup(args.log_level)
    return asyncio.run(serve(args.config))


def _status(args: argparse.Namespace) -> int:
    fleet = _load(args.config, args.json)
    if fleet is None:
        return EXIT_ERROR
    try:
        state = StateStore(fleet.state_dir)
        rows = status_rows(fleet, state)
        lines = [] if args.json else rollout_lines(fleet, state)
    except StoreError as exc:
        print(f"fleetd status: {exc}", file=sys.stderr)
        return EXIT_ERROR
    ok = all(r["result"] == "ready" for r in rows)
    if fleet.sharding is not None:  # rows name their owner; this replica answers for its own clusters
        ownership = asyncio.run(read_ownership(fleet.sharding, fleet.name))
        ok = with_owners(rows, fleet.sharding.identity, ownership)
        lines += (
            []
            if args.json
            else shard_lines(fleet.sharding.identity, ownership, [c.name for c in fleet.clusters])
        )
    warnings = [] if args.json else [f"warning: {w}" for w in fleet.warnings]
    print(json.dumps(rows, indent=2) if args.json else "\n".join([render_status(rows), *lines, *warnings]))
    return EXIT_OK if ok else EXIT_PROBLEMS


def _diff(args: argparse.Namespace) -> int:
    return asyncio.run(diff_command.run(args.config, args.cluster, args.sync, args.json))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "check": _check, "run": _run, "status": _status, "diff": _diff, "mcp": mcp_command.run,
    }  # fmt: skip
    handlers |= dict.fromkeys(("reconcile", "suspend", "resume", "rollout", "reload", "prune"), commands.run)
    if args.command == "version":
        print(f"fleetd {__version__}")
        return EXIT_OK
    return handlers[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
