"""``fleetd mcp``: the MCP server over stdio, for agents (`fleetd.mcp`).

stdout carries the protocol, so logs go to stderr (warnings and above by
default). The server is imported only when this command runs. Exit codes:
0 when the client closes the connection, 2 for an invalid inventory.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

from fleetd.errors import InventoryError
from fleetd.inventory import load_fleet
from fleetd.util import logs


def add_parser(sub: Any, add_config: Callable[[argparse.ArgumentParser], None]) -> None:
    parser = sub.add_parser(
        "mcp",
        help="serve the Model Context Protocol over stdio, for agents (read-only unless --read-write)",
        description="Answer an MCP client (an AI agent) on stdin/stdout: fleet status, clusters, syncs, "
        "events, diffs and rendered manifests with secrets masked, the rollout, and why a sync is not "
        "ready. Talks to the running daemon through its control socket and reads its state directory.",
    )
    add_config(parser)
    parser.add_argument(
        "--read-write",
        action="store_true",
        help="also offer reconcile, suspend, resume and rollout hold/resume/promote (each becomes an event)",
    )
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])


def run(args: argparse.Namespace) -> int:
    logs.setup(args.log_level)
    try:
        load_fleet(args.config)
    except InventoryError as exc:
        print(f"fleetd mcp: the inventory is invalid:\n{exc}", file=sys.stderr)
        return 2
    # Imported here: the MCP SDK takes over a second to import, which no other command should pay.
    from fleetd.mcp.access import FleetAccess
    from fleetd.mcp.server import serve_stdio

    asyncio.run(serve_stdio(FleetAccess(args.config), read_write=args.read_write))
    return 0
