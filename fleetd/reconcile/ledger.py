"""What each sync applied to a cluster, remembered for pruning — in the spoke itself.

One ConfigMap per (fleet, sync) in the spoke's ``fleetd-system`` namespace
lists the objects the last successful reconcile applied. Keeping it in the
spoke means a rebuilt hub, or a second hub taking over, prunes correctly;
listing all of a fleet's ledgers in a spoke finds syncs that were removed
from (or moved away from) that cluster, so nothing is orphaned. The state
directory keeps a local copy for status and for when a ledger was deleted
by hand.

Format: ``data.entries`` holds one ``group|version|kind|namespace|name``
line per object, sorted; ``data.prune`` remembers whether the sync pruned,
so a sync that disappeared from the inventory is cleaned up as it was
configured.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fleetd.errors import FleetdError
from fleetd.kube.client import KubeClient, NotFound
from fleetd.kube.objects import FIELD_MANAGER, LABEL_FLEET, LABEL_MANAGED_BY, LABEL_SYNC, Entry
from fleetd.reconcile.guard import Guard, unguarded

log = logging.getLogger(__name__)

SYSTEM_NAMESPACE = "fleetd-system"


class LedgerError(FleetdError):
    """A ledger ConfigMap in a spoke cannot be read (edited or corrupted by hand).

    fleetd then prunes nothing it recorded: a corrupt ledger is never a reason to delete.
    """


_CONFIGMAPS = f"/api/v1/namespaces/{SYSTEM_NAMESPACE}/configmaps"


@dataclass(frozen=True, slots=True, kw_only=True)
class Ledger:
    """The objects one sync applied to one cluster at one revision."""

    sync: str
    revision: str
    prune: bool
    entries: frozenset[Entry]
    cluster: str = ""
    """The inventory cluster that wrote it ("" in ledgers from before fleetd recorded it)."""

    def to_configmap(self, fleet: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": ledger_name(fleet, self.sync),
                "namespace": SYSTEM_NAMESPACE,
                "labels": {LABEL_FLEET: fleet, LABEL_SYNC: self.sync, LABEL_MANAGED_BY: FIELD_MANAGER},
            },
            "data": {
                "entries": "\n".join(sorted(e.encode() for e in self.entries)),
                "revision": self.revision,
                "prune": "true" if self.prune else "false",
                "cluster": self.cluster,
            },
        }

    @classmethod
    def from_configmap(cls, cm: dict[str, Any], cluster: str = "") -> Ledger:
        """Parse a ledger ConfigMap; anything malformed raises `LedgerError` naming it and the fix."""
        meta = cm.get("metadata") if isinstance(cm, dict) else None
        name = str((meta or {}).get("name", "?")) if isinstance(meta, dict) else "?"
        where = f"ledger {SYSTEM_NAMESPACE}/{name}" + (f" in cluster {cluster}" if cluster else "")
        fix = (
            "it was edited by hand; restore it, or delete it and fleetd rebuilds it from the hub's copy "
            "(objects it listed are then not pruned until recorded again)"
        )
        labels = (meta or {}).get("labels") if isinstance(meta, dict) else None
        sync = labels.get(LABEL_SYNC) if isinstance(labels, dict) else None
        data = cm.get("data")
        if not isinstance(sync, str) or not sync or not isinstance(data, dict):
            raise LedgerError(f"{where} has no {LABEL_SYNC} label or no data map: {fix}")
        entries = []
        for number, line in enumerate(str(data.get("entries", "")).splitlines(), 1):
            if not line.strip():
                continue
            try:
                entries.append(Entry.decode(line))
            except ValueError:
                raise LedgerError(f"{where}, entries line {number}: {line[:80]!r} is not "
                                  f"group|version|kind|namespace|name: {fix}") from None  # fmt: skip
        prune = data.get("prune", "true")
        if prune not in ("true", "false"):
            raise LedgerError(f"{where}: prune is {str(prune)[:20]!r}, not true or false: {fix}")
        writer = data.get("cluster", "")
        return cls(
            sync=sync,
            revision=str(data.get("revision", "")),
            prune=prune == "true",
            entries=frozenset(entries),
            cluster=writer if isinstance(writer, str) else "",
        )


def ledger_name(fleet: str, sync: str) -> str:
    return f"{fleet}.{sync}"


def _namespace() -> dict[str, Any]:
    labels = {LABEL_MANAGED_BY: FIELD_MANAGER}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE, "labels": labels}}


class LedgerStore:
    """Reads and writes one cluster's ledgers."""

    def __init__(self, client: KubeClient, fleet: str, *, guard: Guard = unguarded) -> None:
        self._client = client
        self._fleet = fleet
        self._guard = guard  # asked before every write (`fleetd.reconcile.guard`)
        self._namespace_ready = False

    async def read(self, sync: str) -> Ledger | None:
        try:
            cm = await self._client.request("GET", f"{_CONFIGMAPS}/{ledger_name(self._fleet, sync)}")
        except NotFound:
            return None
        return Ledger.from_configmap(cm, self._client.cluster)

    async def read_all(self) -> list[Ledger]:
        """Every readable ledger this fleet keeps in the cluster; corrupt ones are logged and left alone."""
        try:
            listed = await self._client.request(
                "GET", _CONFIGMAPS, query={"labelSelector": f"{LABEL_FLEET}={self._fleet}"}
            )
        except NotFound:
            return []
        ledgers = []
        for cm in (listed or {}).get("items") or []:
            try:
                ledgers.append(Ledger.from_configmap(cm, self._client.cluster))
            except LedgerError as exc:
                log.warning("%s", exc)
        return ledgers

    async def write(self, ledger: Ledger) -> None:
        """Store the ledger (server-side apply; a write only when it changed)."""
        await self._ensure_namespace()
        body = ledger.to_configmap(self._fleet)
        current = await self.read(ledger.sync)
        if current == ledger:
            return
        await self._apply(f"{_CONFIGMAPS}/{ledger_name(self._fleet, ledger.sync)}", body)

    async def delete(self, sync: str) -> None:
        self._guard()
        try:
            await self._client.request("DELETE", f"{_CONFIGMAPS}/{ledger_name(self._fleet, sync)}")
        except NotFound:
            return

    async def _ensure_namespace(self) -> None:
        if self._namespace_ready:
            return
        try:
            await self._client.request("GET", f"/api/v1/namespaces/{SYSTEM_NAMESPACE}")
        except NotFound:
            await self._apply(f"/api/v1/namespaces/{SYSTEM_NAMESPACE}", _namespace())
        self._namespace_ready = True

    async def _apply(self, path: str, body: dict[str, Any]) -> None:
        self._guard()
        query = [("fieldManager", FIELD_MANAGER), ("force", "true")]
        await self._client.request(
            "PATCH", path, query=query, body=body, content_type="application/apply-patch+yaml"
        )
