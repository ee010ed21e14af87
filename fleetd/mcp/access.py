"""How the MCP server reaches the fleet: the daemon's control socket, and its state directory read-only.

``fleetd mcp`` is a separate process started by an agent's client, running
as the daemon's user with the same ``--config``. It never writes to the
state directory and never talks to a spoke with anything but GETs and
server-side dry runs:

* **live state** (reachability, drift, rollout position) comes from the
  running daemon's status document over the control socket
  (``<state_dir>/fleetd.sock``, mode 0600: the socket's permissions are
  the authentication);
* when the daemon is not running, the **recorded state** is read from the
  state directory (statuses, rollout, suspensions), marked ``live: false``;
* **events** and the **ledgers** (the objects each sync manages) are read
  from the state directory's SQLite journal, which WAL mode lets a second
  process read while the daemon writes;
* **write tools** (``--read-write``) are commands to the daemon over the
  control socket, exactly like ``fleetd reconcile`` or ``fleetd suspend``,
  so each becomes the daemon's own ``operator.action`` or ``rollout.*``
  event. Nothing is changed around the daemon.

The inventory is read again on every call, so the server follows the
daemon's live reloads.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fleetd.api.control import ControlError, call
from fleetd.daemon.events import Event
from fleetd.daemon.status import status_rows
from fleetd.daemon.store import StateStore, StoreError
from fleetd.errors import FleetdError, InventoryError
from fleetd.inventory import Fleet, load_fleet
from fleetd.reconcile.ledger import Ledger
from fleetd.source import redact


class ToolFailure(FleetdError):
    """A tool cannot answer; the message says why and what to ask instead."""


class FleetAccess:
    """The daemon and its state directory, for one inventory file."""

    def __init__(self, config: Path) -> None:
        self.config = config

    async def fleet(self) -> Fleet:
        try:
            return await asyncio.to_thread(load_fleet, self.config)
        except InventoryError as exc:
            raise ToolFailure(f"the inventory {self.config} is invalid:\n{exc}") from exc

    async def status(self) -> dict[str, Any]:
        """The daemon's status document (``live: true``), or the recorded one when it is not running."""
        fleet = await self.fleet()
        try:
            doc = await call(fleet.state_dir, "GET", "/v1/status")
        except ControlError as exc:
            recorded = await asyncio.to_thread(self._recorded, fleet)
            return recorded | {"live": False, "daemon": str(exc)}
        return doc | {"live": True}

    def _recorded(self, fleet: Fleet) -> dict[str, Any]:
        """The status document's shape, from the state directory alone."""
        try:
            store = StateStore(fleet.state_dir)
            rows, waves, held = status_rows(fleet, store), store.rollout(), store.flag("rollout_held")
            suspended = {c.name: store.suspensions(c.name) for c in fleet.clusters}
        except StoreError as exc:
            raise ToolFailure(f"the daemon is not running and its state cannot be read: {exc}") from exc
        clusters = []
        for cluster in fleet.clusters:
            syncs = [
                {k: v for k, v in row.items() if k not in ("cluster", "wave", "sync")}
                | {
                    "name": row["sync"],
                    "drifted": None,
                    "drifted_objects": None,
                    "suspended": cluster.suspend or bool({"", row["sync"]} & suspended[cluster.name]),
                }
                for row in rows
                if row["cluster"] == cluster.name
            ]
            clusters.append(
                {
                    "name": cluster.name,
                    "wave": cluster.wave,
                    "revision": waves.get(cluster.wave),
                    "reachable": None,
                    "last_error": None,
                    "syncs": syncs,
                }
            )
        return {
            "fleet": fleet.name,
            "source": {"url": redact(fleet.source.url), "ref": str(fleet.source.ref), "revision": None},
            "rollout": {
                "target": None,
                "waves": {str(w): r for w, r in sorted(waves.items())},
                "reached_wave": None,
                "halted_at_wave": None,
                "held": held,
            },
            "clusters": clusters,
        }

    async def events(self, **filters: Any) -> list[Event]:
        fleet = await self.fleet()
        return await asyncio.to_thread(self._read, fleet, lambda store: store.events(**filters))

    async def ledger(self, cluster: str, sync: str) -> Ledger | None:
        fleet = await self.fleet()
        return await asyncio.to_thread(self._read, fleet, lambda store: store.ledger(cluster, sync))

    @staticmethod
    def _read(fleet: Fleet, read: Any) -> Any:
        try:
            return read(StateStore(fleet.state_dir))
        except StoreError as exc:
            raise ToolFailure(f"the state directory cannot be read: {exc}") from exc

    async def command(self, path: str, body: dict[str, Any] | None = None) -> str:
        """Send a command to the running daemon; its answer's message."""
        fleet = await self.fleet()
        try:
            answer = await call(fleet.state_dir, "POST", path, body)
        except ControlError as exc:
            raise ToolFailure(str(exc)) from exc
        return str(answer.get("message") or "done")
