"""CLI commands that act on the running daemon, through its control socket.

``reconcile``, ``suspend``, ``resume``, ``rollout hold|resume|promote`` and
``reload`` find the daemon of an inventory by its state directory (the
socket is ``<state_dir>/fleetd.sock``) and never act around it. Exit codes:
0 done, 2 the daemon is not running or refused (unknown cluster or sync).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

from fleetd.api.control import ControlError, call
from fleetd.errors import InventoryError
from fleetd.inventory import load_fleet

AddConfig = Callable[[argparse.ArgumentParser], None]


def add_parsers(sub: Any, add_config: AddConfig) -> None:
    """Register the daemon-facing subcommands on the CLI's subparsers."""
    reconcile = sub.add_parser(
        "reconcile",
        help="ask the running daemon to reconcile now",
        description="Ask the running daemon to fetch nothing new but reconcile now: the whole fleet, "
        "one cluster, or one sync — checking every object, even those the watches vouch for.",
    )
    _target(reconcile, add_config, cluster_required=False)
    for verb, text in (("suspend", "stop applying and correcting drift"), ("resume", "undo suspend")):
        p = sub.add_parser(
            verb, help=f"{text} for a cluster or one of its syncs", description=f"{text.capitalize()}."
        )
        _target(p, add_config, cluster_required=True)
    rollout = sub.add_parser(
        "rollout",
        help="hold, resume or promote the rollout across waves",
        description="hold: no wave takes a newer revision until resume. resume: continue. "
        "promote: give the next wave the newest revision even though the wave before is not healthy.",
    )
    add_config(rollout)
    rollout.add_argument("verb", choices=["hold", "resume", "promote"])
    prune = sub.add_parser(
        "prune",
        help="allow a prune the deletion budget holds",
        description="Let the next reconcile of a sync delete what left git although it is more than the "
        "sync's deletion budget (max_prune) allows, or empties the sync. Only that reconcile: a later "
        "revision is checked against the budget again.",
    )
    add_config(prune)
    prune.add_argument("--allow", action="store_true", required=True, help="allow the held prune")
    prune.add_argument("cluster", help="cluster name")
    prune.add_argument("sync", help="sync name")
    reload = sub.add_parser("reload", help="make the daemon re-read the inventory now (like SIGHUP)")
    add_config(reload)


def _target(parser: argparse.ArgumentParser, add_config: AddConfig, *, cluster_required: bool) -> None:
    add_config(parser)
    parser.add_argument("cluster", nargs=None if cluster_required else "?", help="cluster name")
    parser.add_argument("sync", nargs="?", help="sync name (default: every sync of the cluster)")


def run(args: argparse.Namespace) -> int:
    """Send the command to the daemon; print its answer."""
    try:
        fleet = load_fleet(args.config)
    except InventoryError as exc:
        print(f"fleetd: the inventory is invalid:\n{exc}", file=sys.stderr)
        return 2
    method, path, body = _request(args)
    try:
        answer = asyncio.run(call(fleet.state_dir, method, path, body))
    except ControlError as exc:
        print(f"fleetd: {exc}", file=sys.stderr)
        return 2
    print(answer.get("message") or json.dumps(answer, indent=2))
    return 0


def _request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    if args.command == "rollout":
        return "POST", f"/v1/rollout/{args.verb}", None
    if args.command == "reload":
        return "POST", "/v1/reload", None
    if args.command == "prune":
        return "POST", "/v1/prune/allow", {"cluster": args.cluster, "sync": args.sync}
    return "POST", f"/v1/{args.command}", {"cluster": args.cluster, "sync": args.sync}
