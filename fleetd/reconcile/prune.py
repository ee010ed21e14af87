"""Delete what left git — carefully.

Only objects in a sync's ledger are candidates, and each is read back before
deletion: it is deleted only if it still carries fleetd's labels for this
fleet and sync and is not protected with ``fleetd.dev/prune: disabled``. The
delete is conditional on the uid read, so an object recreated in between by
someone else survives. Deletion runs in reverse apply order (custom
resources before their CRDs, namespaced objects before namespaces).

The caller decides *whether* to prune; this module never runs after a failed
render, decryption or apply because the reconciler does not call it then.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from fleetd.kube.client import Conflict, KubeClient, NotFound
from fleetd.kube.discovery import Discovery, UnknownKind
from fleetd.kube.objects import (
    ANNOTATION_PRUNE,
    DISABLED,
    LABEL_FLEET,
    LABEL_SYNC,
    Entry,
    ObjRef,
    annotations_of,
    apply_rank,
    labels_of,
)
from fleetd.reconcile.guard import Guard, unguarded

Outcome = Literal["deleted", "gone", "protected", "foreign"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Pruned:
    """What pruning did with one stale object."""

    ref: ObjRef
    outcome: Outcome


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """A stale object prune would delete: what the ledger says, and the live object read back."""

    entry: Entry
    path: str
    live: dict[str, Any]


async def candidates(
    client: KubeClient, discovery: Discovery, stale: Iterable[Entry], *, fleet: str, sync: str
) -> tuple[list[Candidate], list[Pruned]]:
    """Read every stale object back: (those prune would delete, in prune order; those it leaves and why).

    Read-only: ``fleetd diff`` lists the first as "would prune", `prune` deletes them.
    """
    ordered = sorted(stale, key=lambda e: apply_rank(e.ref), reverse=True)
    found = await asyncio.gather(*(_read_back(client, discovery, e, fleet, sync) for e in ordered))
    return [c for c in found if isinstance(c, Candidate)], [c for c in found if isinstance(c, Pruned)]


async def _read_back(
    client: KubeClient, discovery: Discovery, entry: Entry, fleet: str, sync: str
) -> Candidate | Pruned:
    try:
        resource = await discovery.resolve(entry.api_version, entry.ref.kind)
        path = resource.path(entry.ref.namespace, entry.ref.name)
        live = await client.request("GET", path)
    except (UnknownKind, NotFound):
        return Pruned(ref=entry.ref, outcome="gone")
    if (live.get("metadata") or {}).get("deletionTimestamp"):
        return Pruned(ref=entry.ref, outcome="gone")
    refusal = refuses(live, fleet, sync)
    if refusal is not None:
        return Pruned(ref=entry.ref, outcome=refusal)
    return Candidate(entry=entry, path=path, live=live)


async def prune(
    client: KubeClient,
    discovery: Discovery,
    stale: Iterable[Entry],
    *,
    fleet: str,
    sync: str,
    guard: Guard = unguarded,
) -> list[Pruned]:
    """Delete stale objects owned by ``fleet``/``sync``, in reverse apply order.

    ``guard`` is asked before every delete (`fleetd.reconcile.guard`); `Fenced` stops the prune.
    """
    guard()
    found, left = await candidates(client, discovery, stale, fleet=fleet, sync=sync)
    results: list[Pruned] = list(left)
    for _, group in itertools.groupby(found, key=lambda c: apply_rank(c.entry.ref)[:2]):
        results += await asyncio.gather(*(_delete(client, c, guard) for c in group))
    return results


def refuses(live: dict[str, Any], fleet: str, sync: str) -> Outcome | None:
    """Why pruning must leave ``live`` alone (not this fleet's and sync's, or protected), or None."""
    labels = labels_of(live)
    if labels.get(LABEL_FLEET) != fleet or labels.get(LABEL_SYNC) != sync:
        return "foreign"
    if annotations_of(live).get(ANNOTATION_PRUNE) == DISABLED:
        return "protected"
    return None


async def _delete(client: KubeClient, candidate: Candidate, guard: Guard) -> Pruned:
    ref = candidate.entry.ref
    body = {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "propagationPolicy": "Background",
        "preconditions": {"uid": candidate.live["metadata"]["uid"]},
    }
    guard()
    try:
        await client.request("DELETE", candidate.path, body=body)
    except NotFound:
        return Pruned(ref=ref, outcome="gone")
    except Conflict:  # the uid precondition failed: someone recreated it; not ours to delete
        return Pruned(ref=ref, outcome="foreign")
    return Pruned(ref=ref, outcome="deleted")
