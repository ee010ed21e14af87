"""The MCP server on the official ``mcp`` SDK: the SDK enters fleetd only here.

`build` registers the tools of `fleetd.mcp.tools` on an ``MCPServer``:
read-only ones always (annotated ``readOnlyHint``), write ones only when
``read_write`` is set (annotated ``destructiveHint: false``,
``idempotentHint`` where they are). A `ToolFailure` or any other
`FleetdError` becomes the SDK's ``ToolError``, so the agent reads the
message (it names the cluster, the sync and what to ask instead); anything
else is reported by the SDK as a crash, without its text.

`serve_stdio` runs it over stdin/stdout for ``fleetd mcp``; logging must
then go to stderr only (`fleetd.util.logs` does).
"""

from __future__ import annotations

import functools
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

from fleetd import __version__
from fleetd.errors import FleetdError
from fleetd.mcp.access import FleetAccess
from fleetd.mcp.tools import Tool, ToolSpec, read_tools, write_tools

INSTRUCTIONS = (
    "fleetd keeps a fleet of Kubernetes clusters equal to a git repository. Start with fleet_status; use "
    "explain_sync to find out why something is not ready, get_sync and list_events for detail, diff and "
    "rendered_manifests to compare git with a cluster, rollout_status for where a commit is deployed. "
    "Secret values are never returned. {mode}"
)
_READ_ONLY = "This server is read-only: to change anything, tell the user which fleetd command to run."
_READ_WRITE = (
    "Write tools (reconcile, suspend, resume, rollout_*) act on the running daemon; each is recorded."
)


def build(access: FleetAccess, *, read_write: bool = False) -> MCPServer[Any]:
    specs = read_tools(access) + (write_tools(access) if read_write else [])
    server: MCPServer[Any] = MCPServer(
        "fleetd",
        version=__version__,
        instructions=INSTRUCTIONS.format(mode=_READ_WRITE if read_write else _READ_ONLY),
        log_level="WARNING",
    )
    for spec in specs:
        server.add_tool(
            _translated(spec.fn),
            name=spec.name,
            title=spec.title,
            description=spec.description,
            annotations=_annotations(spec),
            structured_output=True,
        )
    return server


def _annotations(spec: ToolSpec) -> ToolAnnotations:
    if not spec.writes:
        return ToolAnnotations(title=spec.title, read_only_hint=True, open_world_hint=False)
    idempotent = spec.name != "reconcile"
    return ToolAnnotations(
        title=spec.title,
        read_only_hint=False,
        destructive_hint=False,
        idempotent_hint=idempotent,
        open_world_hint=False,
    )


def _translated(fn: Tool) -> Tool:
    @functools.wraps(fn)
    async def call(*args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return await fn(*args, **kwargs)
        except FleetdError as exc:
            raise ToolError(str(exc)) from exc

    return call


async def serve_stdio(access: FleetAccess, *, read_write: bool = False) -> None:
    """Serve one client over stdin/stdout until it closes the connection."""
    await build(access, read_write=read_write).run_stdio_async()
