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

from dataclasses import dataclass
from typing import Any

from fleetd.kube.client import KubeClient, NotFound
from fleetd.kube.objects import FIELD_MANAGER, LABEL_FLEET, LABEL_MANAGED_BY, LABEL_SYNC, Entry

SYSTEM_NAMESPACE = "fleetd-system"
_CONFIGMAPS = f"/api/v1/namespaces/{SYSTEM_NAMESPACE}/configmaps"


@dataclass(frozen=True, slots=True, kw_only=True)
class Ledger:
    """The objects one sync applied to one cluster at one revision."""

    sync: str
    revision: str
    prune: bool
    entries: frozenset[Entry]

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
            },
        }

    @classmethod
    def from_configmap(cls, cm: dict[str, Any]) -> Ledger:
        data = cm.get("data") or {}
        lines = [ln for ln in str(data.get("entries", "")).splitlines() if ln.strip()]
        return cls(
            sync=str(cm["metadata"]["labels"][LABEL_SYNC]),
            revision=str(data.get("revision", "")),
            prune=data.get("prune", "true") == "true",
            entries=frozenset(Entry.decode(ln) for ln in lines),
        )


def ledger_name(fleet: str, sync: str) -> str:
    return f"{fleet}.{sync}"


def _namespace() -> dict[str, Any]:
    labels = {LABEL_MANAGED_BY: FIELD_MANAGER}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE, "labels": labels}}


class LedgerStore:
    """Reads and writes one cluster's ledgers."""

    def __init__(self, client: KubeClient, fleet: str) -> None:
        self._client = client
        self._fleet = fleet
        self._namespace_ready = False

    async def read(self, sync: str) -> Ledger | None:
        try:
            cm = await self._client.request("GET", f"{_CONFIGMAPS}/{ledger_name(self._fleet, sync)}")
        except NotFound:
            return None
        return Ledger.from_configmap(cm)

    async def read_all(self) -> list[Ledger]:
        """Every ledger this fleet keeps in the cluster."""
        try:
            listed = await self._client.request(
                "GET", _CONFIGMAPS, query={"labelSelector": f"{LABEL_FLEET}={self._fleet}"}
            )
        except NotFound:
            return []
        return [Ledger.from_configmap(cm) for cm in listed.get("items", [])]

    async def write(self, ledger: Ledger) -> None:
        """Store the ledger (server-side apply; a write only when it changed)."""
        await self._ensure_namespace()
        body = ledger.to_configmap(self._fleet)
        current = await self.read(ledger.sync)
        if current == ledger:
            return
        await self._apply(f"{_CONFIGMAPS}/{ledger_name(self._fleet, ledger.sync)}", body)

    async def delete(self, sync: str) -> None:
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
        query = [("fieldManager", FIELD_MANAGER), ("force", "true")]
        await self._client.request(
            "PATCH", path, query=query, body=body, content_type="application/apply-patch+yaml"
        )
