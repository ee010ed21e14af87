"""REST mapping per cluster: which resource path serves a kind, and is it namespaced?

fleetd applies arbitrary kinds by REST path, so it must map ``(apiVersion,
kind)`` to ``/apis/<group>/<version>/[namespaces/<ns>/]<plural>``. The map
comes from *aggregated discovery* (two requests, ``/api`` and ``/apis``,
for every group the server knows) and is cached per cluster. A kind the
cache does not know triggers one refresh — a CRD applied a moment ago is
found — and only then is it reported unknown. Refreshes are serialised and
rate-limited so a burst of unknown kinds costs one round trip.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from fleetd.errors import FleetdError
from fleetd.kube.client import KubeClient
from fleetd.kube.objects import split_api_version

_AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
_MIN_REFRESH_INTERVAL = 1.0


class UnknownKind(FleetdError):
    """The cluster serves no resource for this apiVersion and kind (is its CRD applied?)."""

    def __init__(self, cluster: str, api_version: str, kind: str) -> None:
        super().__init__(
            f"cluster {cluster}: no resource for {kind} in {api_version}; "
            "check the apiVersion, or apply its CustomResourceDefinition first"
        )
        self.api_version = api_version
        self.kind = kind


@dataclass(frozen=True, slots=True, kw_only=True)
class Resource:
    """One REST resource of a cluster."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, namespace: str = "", name: str = "") -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        scope = f"/namespaces/{namespace}" if self.namespaced and namespace else ""
        tail = f"/{name}" if name else ""
        return f"{base}{scope}/{self.plural}{tail}"


class Discovery:
    """Cached REST mapping of one cluster."""

    def __init__(self, client: KubeClient) -> None:
        self._client = client
        self._by_gvk: dict[tuple[str, str, str], Resource] = {}
        self._lock = asyncio.Lock()
        self._refreshed_at = float("-inf")

    async def resolve(self, api_version: str, kind: str) -> Resource:
        """The resource serving ``kind`` at ``api_version``; refresh once if unknown."""
        group, version = split_api_version(api_version)
        key = (group, version, kind)
        if key not in self._by_gvk:
            await self.refresh(if_older_than=_MIN_REFRESH_INTERVAL)
        if key not in self._by_gvk:
            raise UnknownKind(self._client.cluster, api_version, kind)
        return self._by_gvk[key]

    def known(self, api_version: str, kind: str) -> Resource | None:
        """The cached resource, without asking the server."""
        group, version = split_api_version(api_version)
        return self._by_gvk.get((group, version, kind))

    async def refresh(self, *, if_older_than: float = 0.0) -> None:
        """Reload the mapping, unless another caller did so within ``if_older_than`` seconds."""
        async with self._lock:
            if time.monotonic() - self._refreshed_at < if_older_than:
                return
            mapping: dict[tuple[str, str, str], Resource] = {}
            for root in ("/api", "/apis"):
                doc = await self._client.request("GET", root, accept=_AGGREGATED)
                mapping.update(_parse_aggregated(doc))
            self._by_gvk = mapping
            self._refreshed_at = time.monotonic()


def _parse_aggregated(doc: dict[str, Any]) -> dict[tuple[str, str, str], Resource]:
    found: dict[tuple[str, str, str], Resource] = {}
    for group_doc in doc.get("items", []):
        group = (group_doc.get("metadata") or {}).get("name", "") or ""
        for version_doc in group_doc.get("versions", []):
            version = version_doc["version"]
            for res in version_doc.get("resources", []):
                kind = (res.get("responseKind") or {}).get("kind")
                if not kind:
                    continue
                found[(group, version, kind)] = Resource(
                    group=group,
                    version=version,
                    kind=kind,
                    plural=res["resource"],
                    namespaced=res.get("scope") == "Namespaced",
                )
    return found
