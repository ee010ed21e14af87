"""``fleetd check``: is the inventory valid and can fleetd do its job on every cluster?

For every cluster, concurrently and each under its own deadline, it loads the
kubeconfig, reaches the API server (TLS and authentication), reads the
server version, and asks the server itself (SelfSubjectAccessReview) whether
fleetd's identity holds the permissions reconciling needs. One slow or dead
cluster costs its own timeout and never hides the others' results.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from fleetd.inventory import Cluster, Fleet
from fleetd.kube import KubeClient, KubeError, connect

#: Namespace where fleetd keeps its per-sync inventories in each spoke.
SYSTEM_NAMESPACE = "fleetd-system"


@dataclass(frozen=True, slots=True, kw_only=True)
class Permission:
    """One permission fleetd needs, phrased for the person who must grant it."""

    verb: str
    group: str
    resource: str
    namespace: str | None = None
    why: str

    def describe(self) -> str:
        group = "all API groups" if self.group == "*" else (self.group or "core")
        resource = "all resources" if self.resource == "*" else self.resource
        where = f"in namespace {self.namespace}" if self.namespace else "cluster-wide"
        return f"{self.verb} {resource} ({group}) {where}: {self.why}"


def _all(verb: str, why: str) -> Permission:
    return Permission(verb=verb, group="*", resource="*", why=why)


#: What reconciling arbitrary manifests needs: read, watch, apply and prune any kind.
REQUIRED: tuple[Permission, ...] = (
    _all("get", "read live objects to diff them"),
    _all("list", "find managed objects"),
    _all("watch", "notice drift within seconds"),
    _all("create", "create objects (server-side apply)"),
    _all("patch", "apply changes (server-side apply)"),
    _all("delete", "prune objects that left git"),
    Permission(verb="create", group="", resource="namespaces", why="create target namespaces"),
    Permission(
        verb="update",
        group="",
        resource="configmaps",
        namespace=SYSTEM_NAMESPACE,
        why="store the prune inventory in the spoke",
    ),
)


@dataclass(slots=True, kw_only=True)
class ClusterReport:
    """What ``check`` found for one cluster."""

    name: str
    kubeconfig: str
    context: str | None
    server: str | None = None
    version: str | None = None
    reachable: bool = False
    missing: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.reachable and not self.missing and self.error is None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


async def _probe(client: KubeClient, report: ClusterReport) -> None:
    version = await client.version()
    report.version = str(version.get("gitVersion", "unknown"))
    report.reachable = True
    allowed = await asyncio.gather(
        *(client.can_i(p.verb, p.group, p.resource, p.namespace) for p in REQUIRED)
    )
    report.missing = [p.describe() for p, ok in zip(REQUIRED, allowed, strict=True) if not ok]


async def check_cluster(cluster: Cluster, timeout: float) -> ClusterReport:
    """Check one cluster; never raises for cluster problems, records them instead."""
    report = ClusterReport(name=cluster.name, kubeconfig=str(cluster.kubeconfig), context=cluster.context)
    try:
        client = await connect(cluster.name, cluster.kubeconfig, cluster.context)
    except KubeError as exc:
        report.error = exc.detail
        return report
    report.server = client.server
    try:
        async with asyncio.timeout(timeout):
            await _probe(client, report)
    except TimeoutError:
        report.error = f"no complete answer from {client.server} within {timeout:g}s"
    except KubeError as exc:
        report.error = exc.detail
    finally:
        await client.close()
    return report


async def check_fleet(fleet: Fleet, timeout: float = 15.0) -> list[ClusterReport]:
    """Check every cluster of the fleet concurrently."""
    return list(await asyncio.gather(*(check_cluster(c, timeout) for c in fleet.clusters)))


def render_table(reports: Sequence[ClusterReport]) -> str:
    """A human table plus one detail line per problem."""
    rows = [("CLUSTER", "SERVER", "VERSION", "PERMISSIONS", "RESULT")]
    for r in reports:
        perms = "-" if not r.reachable else ("ok" if not r.missing else f"{len(r.missing)} missing")
        result = "ok" if r.ok else ("unreachable" if not r.reachable else "problem")
        rows.append((r.name, r.server or "-", r.version or "-", perms, result))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    for r in reports:
        if r.error:
            lines.append(f"{r.name}: {r.error}")
        lines.extend(f"{r.name}: missing permission: {m}" for m in r.missing)
    return "\n".join(lines)
