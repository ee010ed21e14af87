"""The fleet's Leases in the management cluster (``coordination.k8s.io/v1``), read and written by version.

Two kinds of Lease, both labelled with the fleet, in the configured namespace:

* ``<fleet>.replica.<identity>`` — a replica's membership, renewed every
  renew period by the one process that holds it;
* ``<fleet>.cluster.<cluster>`` — who may write to a cluster; its holder
  stays the owner for as long as the holder's membership lives
  (`fleetd.shard.view`).

``spec.holderIdentity`` names one *process*: the replica identity, ``_``,
and a random incarnation drawn at start, so a replica restarted under the
same identity never mistakes its predecessor's Leases for its own.

Every change is conditional: `LeaseApi.replace` is a PUT carrying the
resourceVersion the caller last saw, `LeaseApi.create` fails if the Lease
exists, `LeaseApi.delete` carries a resourceVersion precondition. Losing a
race is `Conflict` (409), never a silent overwrite. Objects that do not
parse as one of ours (wrong name, wrong shape) are ignored, not trusted.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, replace
from typing import Any, Literal

from fleetd.kube.client import KubeClient, NotFound, ServerError
from fleetd.kube.discovery import Resource
from fleetd.kube.objects import LABEL_FLEET

LEASES = Resource(group="coordination.k8s.io", version="v1", kind="Lease", plural="leases", namespaced=True)
LABEL_KIND = "fleetd.dev/lease"
LABEL_SUBJECT = "fleetd.dev/subject"
Kind = Literal["replica", "cluster"]
KINDS: tuple[Kind, ...] = ("replica", "cluster")
#: Seconds one request to the management cluster may take.
REQUEST_TIMEOUT = 10.0


def lease_name(fleet: str, kind: Kind, subject: str) -> str:
    """``<fleet>.<kind>.<subject>``: a DNS subdomain, as fleet, cluster and replica names are DNS labels."""
    return f"{fleet}.{kind}.{subject}"


def new_holder(identity: str) -> str:
    """A holder identity for this process: the replica identity and a fresh incarnation."""
    return f"{identity}_{secrets.token_hex(4)}"


def replica_of(holder: str) -> str:
    """The replica identity of a holder identity ('' for none)."""
    return holder.rpartition("_")[0] or holder


def now_micro() -> str:
    """The current time as a Kubernetes MicroTime."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """One of the fleet's Leases as last read or written."""

    name: str
    kind: Kind
    subject: str
    """The replica identity or the cluster name the Lease is about."""
    holder: str = ""
    """``spec.holderIdentity``; '' when released."""
    version: str = ""
    """``metadata.resourceVersion``: every change is conditional on it."""
    duration: int = 0
    transitions: int = 0
    acquired: str | None = None
    renewed: str | None = None

    @property
    def replica(self) -> str:
        """The replica identity of the holder ('' when released)."""
        return replica_of(self.holder) if self.holder else ""

    @classmethod
    def parse(cls, fleet: str, obj: Any) -> Lease | None:
        """The Lease ``obj`` if it is one of ``fleet``'s, well formed; None otherwise."""
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        spec = (obj.get("spec") or {}) if isinstance(obj, dict) else None
        if not isinstance(meta, dict) or not isinstance(spec, dict):
            return None
        name, version = meta.get("name"), meta.get("resourceVersion")
        parts = name.split(".", 2) if isinstance(name, str) else []
        if len(parts) != 3 or parts[0] != fleet or parts[1] not in KINDS or not isinstance(version, str):
            return None
        kind, subject = parts[1], parts[2]
        holder, duration, transitions = (
            spec.get("holderIdentity"),
            spec.get("leaseDurationSeconds"),
            spec.get("leaseTransitions"),
        )
        return cls(
            name=str(name),
            kind="replica" if kind == "replica" else "cluster",
            subject=subject,
            holder=holder if isinstance(holder, str) else "",
            version=version,
            duration=duration if isinstance(duration, int) else 0,
            transitions=transitions if isinstance(transitions, int) else 0,
            acquired=_text(spec.get("acquireTime")),
            renewed=_text(spec.get("renewTime")),
        )

    def to_object(self, fleet: str, namespace: str) -> dict[str, Any]:
        spec: dict[str, Any] = {"leaseTransitions": self.transitions}
        if self.holder:
            spec["holderIdentity"] = self.holder
        if self.duration:
            spec["leaseDurationSeconds"] = self.duration
        if self.acquired:
            spec["acquireTime"] = self.acquired
        if self.renewed:
            spec["renewTime"] = self.renewed
        meta: dict[str, Any] = {
            "name": self.name,
            "namespace": namespace,
            "labels": {LABEL_FLEET: fleet, LABEL_KIND: self.kind, LABEL_SUBJECT: self.subject},
        }
        if self.version:
            meta["resourceVersion"] = self.version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}


class LeaseApi:
    """Conditional reads and writes of one fleet's Leases in one namespace of the management cluster."""

    def __init__(self, client: KubeClient, *, fleet: str, namespace: str) -> None:
        self.client, self.fleet, self.namespace = client, fleet, namespace
        self.selector = f"{LABEL_FLEET}={fleet}"

    def name(self, kind: Kind, subject: str) -> str:
        return lease_name(self.fleet, kind, subject)

    async def list(self) -> list[Lease]:
        listed = await self.client.request(
            "GET",
            LEASES.path(self.namespace),
            query={"labelSelector": self.selector},
            timeout=REQUEST_TIMEOUT,
        )
        found = (Lease.parse(self.fleet, o) for o in (listed or {}).get("items") or [])
        return [lease for lease in found if lease is not None]

    async def get(self, kind: Kind, subject: str) -> Lease | None:
        try:
            obj = await self.client.request(
                "GET", LEASES.path(self.namespace, self.name(kind, subject)), timeout=REQUEST_TIMEOUT
            )
        except NotFound:
            return None
        return Lease.parse(self.fleet, obj)

    async def create(self, kind: Kind, subject: str, *, holder: str, duration: int) -> Lease:
        """Create the Lease held by ``holder``; `Conflict` if it exists already."""
        now = now_micro()
        lease = Lease(
            name=self.name(kind, subject), kind=kind, subject=subject, holder=holder, duration=duration,
            acquired=now, renewed=now,
        )  # fmt: skip
        body = lease.to_object(self.fleet, self.namespace)
        return self._answer(
            await self.client.request("POST", LEASES.path(self.namespace), body=body, timeout=REQUEST_TIMEOUT)
        )

    async def replace(self, lease: Lease, *, holder: str, timeout: float = REQUEST_TIMEOUT) -> Lease:
        """Write ``lease`` held by ``holder`` ('' releases), renewed now; `Conflict` if it changed since."""
        now = now_micro()
        changed = holder != lease.holder
        updated = replace(
            lease, holder=holder, renewed=now if holder else None,
            acquired=now if changed and holder else (lease.acquired if holder else None),
            transitions=lease.transitions + (1 if changed and holder else 0),
        )  # fmt: skip
        body = updated.to_object(self.fleet, self.namespace)
        path = LEASES.path(self.namespace, lease.name)
        return self._answer(await self.client.request("PUT", path, body=body, timeout=timeout))

    async def delete(self, lease: Lease) -> None:
        """Delete ``lease`` if it is still at the version read; `Conflict` otherwise, gone is fine."""
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"resourceVersion": lease.version},
        }
        try:
            await self.client.request(
                "DELETE", LEASES.path(self.namespace, lease.name), body=body, timeout=REQUEST_TIMEOUT
            )
        except NotFound:
            return

    def _answer(self, obj: Any) -> Lease:
        lease = Lease.parse(self.fleet, obj)
        if lease is None:  # the server answered a write with something that is not the Lease written
            message = f"a Lease write was answered with {str(obj)[:80]!r}"
            raise ServerError(self.client.cluster, 200, "BadResponse", message)
        return lease


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
