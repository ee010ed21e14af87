"""What the daemon would change on one cluster — computed without a daemon and without a write.

Like ``terraform plan`` or ``flux diff``. The answer is only worth something
if it is the daemon's answer, so it *is* the daemon's code: the source is
fetched with `GitSourceFetcher` into a throw-away directory (never the
daemon's state directory, where a second writer to its mirror could corrupt
it), and each sync goes through `ClusterReconciler.plan` — the same render,
ownership labels, keep-live paths, staging and dry-run planner the
reconcile runs, and the same prune-candidate rule (`fleetd.reconcile.prune`).
Objects waiting for a Namespace or CRD this sync creates cannot be
validated yet; they are shown as created. A sync that fails to render or
validate prunes nothing in the daemon, so it lists no prunes here either.

Read-only by construction: GETs and dry runs only. The daemon's apply also
*adopts* fields that ``kubectl`` wrote (a managedFields patch — a write), so
that the apply removes what git does not set. Diff skips the patch and
predicts its effect locally (`taken_over`): a field only kubectl manages and
git does not set is dropped from the predicted result. Only map fields are
predicted; list items keyed by ``k:`` are left as the dry run shows them.

An object is ``changed`` when the normalized predicted result differs from the
normalized live object; the report carries a unified diff of the two as YAML
with sorted keys, status and server bookkeeping stripped (`normalized`).

Secrets: before anything is formatted, every value of a Secret's ``data`` and
``stringData`` (and a kubectl last-applied annotation, which may copy them) is
replaced by ``***`` on both sides; the sha256 of the real values decides
whether the new side reads ``*** (changed)``. Planning errors are scrubbed of
the sync's secret values; rendering never puts plaintext in its errors.

The revision is the head of the source's ref, what the daemon fetches next; a
cluster that rollout waves hold back gets it only when its wave's turn comes.
Presentation (tables, JSON, exit codes) is `fleetd.cli.diff`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import difflib
import hashlib
import json
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fleetd.errors import FleetdError
from fleetd.inventory import Cluster, Fleet, Sync
from fleetd.kube.objects import FIELD_MANAGER, ObjRef, apply_rank
from fleetd.reconcile.ledger import Ledger
from fleetd.reconcile.plan import KUBECTL_MANAGERS, Desired, Plan, merge_fieldsets, normalized
from fleetd.reconcile.prune import candidates
from fleetd.reconcile.reconciler import ClusterReconciler
from fleetd.render import RenderCache, RenderError
from fleetd.secrets.decryptor import decryptor
from fleetd.source import GitSourceFetcher, Snapshot, remove_tree
from fleetd.util.yamldoc import dump

Action = Literal["created", "changed", "unchanged", "pruned"]
MASK = "***"
MASK_CHANGED = "*** (changed)"
#: Written by ``kubectl apply`` (client-side); on a Secret it holds the values in plain text.
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
#: Shorter secret values are not scrubbed from messages: replacing "1" or "ab" would garble them.
MIN_SCRUBBED = 4


class DiffError(FleetdError):
    """The diff cannot be made at all: unknown cluster or sync, or no answer in time."""


# --- the report -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectDiff:
    """What applying (or pruning) one object would do."""

    ref: ObjRef
    action: Action
    origin: str | None = None
    """Where git declares it (``apps/web.yaml#1``); None for prunes."""
    diff: str = ""
    """Unified diff live → after apply (``changed`` only); Secret values masked."""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncDiff:
    """One sync's objects; `errors` non-empty when it could not be diffed (render, decrypt, dry run)."""

    name: str
    objects: tuple[ObjectDiff, ...] = ()
    note: str | None = None
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class DiffReport:
    """What the daemon would change on one cluster at one revision."""

    cluster: str
    revision: str
    ref: str
    """How the revision was chosen, e.g. ``branch main``."""
    syncs: tuple[SyncDiff, ...]

    def count(self, action: Action) -> int:
        return sum(o.action == action for s in self.syncs for o in s.objects)

    @property
    def errors(self) -> list[str]:
        return [f"sync {s.name}: {e}" for s in self.syncs for e in s.errors]

    @property
    def has_changes(self) -> bool:
        return any(o.action != "unchanged" for s in self.syncs for o in s.objects)


# --- computing it ---------------------------------------------------------------------------------


async def diff_cluster(fleet: Fleet, cluster: str, sync: str | None, *, timeout: float = 60) -> DiffReport:
    """Fetch the source, then diff `sync` (or every sync) of `cluster`, all within `timeout` seconds."""
    target = _cluster(fleet, cluster)
    syncs = _selected(target, sync)
    scratch = Path(tempfile.mkdtemp(prefix="fleetd-diff-"))
    try:
        async with asyncio.timeout(timeout):
            snapshot = await GitSourceFetcher(fleet.source, scratch).fetch()
            return await _diff_syncs(fleet, target, syncs, snapshot, orphans=sync is None)
    except TimeoutError:
        raise DiffError(
            f"cluster {cluster}: no complete answer within {timeout:g}s (is the API server overloaded?)"
        ) from None
    finally:
        await asyncio.to_thread(remove_tree, scratch)


def _cluster(fleet: Fleet, name: str) -> Cluster:
    try:
        return fleet.cluster(name)
    except KeyError:
        known = ", ".join(c.name for c in fleet.clusters) or "none"
        raise DiffError(f'no cluster "{name}" in the inventory of {fleet.file} (clusters: {known})') from None


def _selected(cluster: Cluster, sync: str | None) -> list[Sync]:
    if sync is None:
        return list(cluster.syncs)
    try:
        return [cluster.sync(sync)]
    except KeyError:
        known = ", ".join(s.name for s in cluster.syncs) or "none"
        raise DiffError(
            f'cluster {cluster.name} has no sync "{sync}" (syncs: {known}); see {cluster.file}'
        ) from None


async def _diff_syncs(
    fleet: Fleet, cluster: Cluster, syncs: list[Sync], snapshot: Snapshot, *, orphans: bool
) -> DiffReport:
    async with ClusterReconciler.open(
        fleet=fleet.name, cluster=cluster, renders=RenderCache(), decrypt=decryptor(fleet.decryption)
    ) as reconciler:
        await reconciler.client.version()  # an unreachable cluster is named before any render
        results = [await diff_sync(reconciler, s, snapshot) for s in syncs]
        if orphans and not cluster.suspend:
            results += await _removed_syncs(reconciler)
    return DiffReport(
        cluster=cluster.name, revision=snapshot.revision, ref=snapshot.ref, syncs=tuple(results)
    )


async def diff_sync(reconciler: ClusterReconciler, sync: Sync, snapshot: Snapshot) -> SyncDiff:
    """The daemon's own plan of one sync (`ClusterReconciler.plan`), classified for people."""
    if reconciler.cluster.suspend or sync.suspend:
        return SyncDiff(name=sync.name, note="suspended: the daemon changes nothing here")
    try:
        plan = await reconciler.plan(sync, snapshot)
    except RenderError as exc:
        return SyncDiff(name=sync.name, errors=(str(exc),))
    changes = plan.changes
    waiting = [
        ObjectDiff(ref=d.ref, action="created", origin=d.origin, notes=(WAITS,)) for d in changes.deferred
    ]
    objects = tuple(sorted([*(classify(p) for p in changes.plans), *waiting], key=_order(plan.desired)))
    if changes.errors:  # the daemon would apply and prune nothing
        errors = tuple(scrub(str(e), plan.desired) for e in changes.errors)
        return SyncDiff(name=sync.name, objects=objects, errors=errors)
    if not sync.prune:
        return SyncDiff(name=sync.name, objects=objects, note="prune = false: objects that left git stay")
    pruned = [ObjectDiff(ref=c.entry.ref, action="pruned") for c in plan.prunable]
    return SyncDiff(name=sync.name, objects=(*objects, *pruned))


WAITS = "validated once its Namespace or CRD exists"


def _order(desired: list[Desired]) -> Any:
    rank = {d.ref: i for i, d in enumerate(sorted(desired, key=lambda d: apply_rank(d.ref)))}
    return lambda o: rank.get(o.ref, len(rank))


def classify(p: Plan) -> ObjectDiff:
    """created, changed (with its diff) or unchanged."""
    ref, origin = p.desired.ref, p.desired.origin
    if p.live is None:
        return ObjectDiff(ref=ref, action="created", origin=origin)
    if p.recreate:
        again = ("an immutable field changed: it would be deleted and created again",)
        return ObjectDiff(ref=ref, action="changed", origin=origin, notes=again)
    after = taken_over(p.dry, p.live, p.desired.obj)
    if _canonical(normalized(after)) == _canonical(normalized(p.live)):
        return ObjectDiff(ref=ref, action="unchanged", origin=origin)
    notes = tuple(f"fields written by {m} are taken over" for m in sorted(_kubectl_managers(p.live)))
    if p.desired.sensitive and ref.kind != "Secret":
        hidden = "its values come from SOPS-encrypted data in git and are not shown"
        return ObjectDiff(ref=ref, action="changed", origin=origin, notes=(*notes, hidden))
    return ObjectDiff(ref=ref, action="changed", origin=origin, diff=object_diff(p.live, after), notes=notes)


def _canonical(obj: dict[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True)


# --- kubectl's fields, taken over -----------------------------------------------------------------


def taken_over(result: dict[str, Any], live: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """`result` as the apply leaves it once fleetd has adopted kubectl's fields.

    After adoption fleetd owns what kubectl wrote, and an apply removes owned
    fields its configuration no longer sets: so a map field that only kubectl
    manages (no other manager) and git does not set is dropped.
    """
    theirs, others = _field_sets(live)
    out = copy.deepcopy(result)
    for path in _leaves(theirs):
        if not _present(desired, path) and not _present(others, tuple(f"f:{p}" for p in path)):
            _remove(out, path)
    return out


def _field_sets(live: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """fieldsV1 of the managers fleetd adopts, and of every other manager but fleetd's apply."""
    theirs: dict[str, Any] = {}
    others: dict[str, Any] = {}
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        fields = entry.get("fieldsV1") or {}
        if entry.get("manager") in KUBECTL_MANAGERS and not entry.get("subresource"):
            theirs = merge_fieldsets(theirs, fields)
        elif (entry.get("manager"), entry.get("operation")) != (FIELD_MANAGER, "Apply"):
            others = merge_fieldsets(others, fields)
    return theirs, others


def _kubectl_managers(live: dict[str, Any]) -> set[str]:
    entries = (live.get("metadata") or {}).get("managedFields") or []
    return {
        e["manager"] for e in entries if e.get("manager") in KUBECTL_MANAGERS and not e.get("subresource")
    }


def _leaves(fields: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Paths of the map fields a fieldsV1 tree owns (``f:`` keys; list items are not followed)."""
    for key, child in fields.items():
        if not key.startswith("f:"):
            continue
        path = (*prefix, key[2:])
        if not child or "." in child:
            yield path
        if isinstance(child, dict):
            yield from _leaves(child, path)


def _present(doc: Any, path: tuple[str, ...]) -> bool:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return False
        doc = doc[key]
    return True


def _remove(doc: dict[str, Any], path: tuple[str, ...]) -> None:
    node: Any = doc
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(path[-1], None)


# --- secrets --------------------------------------------------------------------------------------


def masked(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Copies of a Secret's two sides with every value ``***``; changed values read ``*** (changed)``.

    Anything but a Secret is returned as it is.
    """
    if "Secret" not in (before.get("kind"), after.get("kind")):
        return before, after
    before, after = copy.deepcopy(before), copy.deepcopy(after)
    for field in ("data", "stringData"):
        _mask(before.get(field), after.get(field))
    _mask(_annotations(before), _annotations(after), only=LAST_APPLIED)
    return before, after


def _annotations(obj: dict[str, Any]) -> Any:
    return (obj.get("metadata") or {}).get("annotations")


def _mask(before: Any, after: Any, only: str | None = None) -> None:
    before = before if isinstance(before, dict) else {}
    after = after if isinstance(after, dict) else {}
    digests = {k: _sha256(v) for k, v in before.items()}
    for key, value in after.items():
        if only in (None, key):
            changed = key in digests and digests[key] != _sha256(value)
            after[key] = MASK_CHANGED if changed else MASK
    for key in before:
        if only in (None, key):
            before[key] = MASK


def _sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def scrub(message: str, objs: Iterable[Desired | dict[str, Any]]) -> str:
    """`message` with every secret value of `objs` (and its base64 decoding) replaced by ``***``."""
    for value in sorted(_secret_values(objs), key=len, reverse=True):
        message = message.replace(value, MASK)
    return message


def _secret_values(objs: Iterable[Desired | dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for item in objs:
        obj = item.obj if isinstance(item, Desired) else item
        if obj.get("kind") != "Secret":
            continue
        data = [v for v in (obj.get("data") or {}).values() if isinstance(v, str)]
        plain = [v for v in (obj.get("stringData") or {}).values() if isinstance(v, str)]
        found |= {*data, *plain, *map(_b64, data), *(base64.b64encode(v.encode()).decode() for v in plain)}
        found.add(str((_annotations(obj) or {}).get(LAST_APPLIED, "")))
    return {v for v in found if len(v) >= MIN_SCRUBBED}


def _b64(value: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return ""


# --- formatting -----------------------------------------------------------------------------------


def object_diff(live: dict[str, Any], after: dict[str, Any]) -> str:
    """Unified diff of the normalized objects as sorted-key YAML; Secret values masked first."""
    before, later = masked(normalized(live), normalized(after))
    lines = difflib.unified_diff(_yaml(before), _yaml(later), "live", "after apply", lineterm="")
    return "\n".join(lines)


def _yaml(obj: dict[str, Any]) -> list[str]:
    return dump(obj, sort_keys=True).splitlines()


# --- syncs removed from the cluster (read-only) ----------------------------------------------------


async def _removed_syncs(reconciler: ClusterReconciler) -> list[SyncDiff]:
    """Syncs this fleet once applied here but no longer assigns: the daemon prunes them."""
    assigned = {s.name for s in reconciler.cluster.syncs}
    ledgers = [ledger for ledger in await reconciler.ledgers.read_all() if ledger.sync not in assigned]
    return [await _removed_sync(reconciler, ledger) for ledger in ledgers]


async def _removed_sync(reconciler: ClusterReconciler, ledger: Ledger) -> SyncDiff:
    if not ledger.prune:
        return SyncDiff(
            name=ledger.sync, note="removed from this cluster; it did not prune, so its objects stay"
        )
    found, _ = await candidates(
        reconciler.client, reconciler.discovery, ledger.entries, fleet=reconciler.fleet, sync=ledger.sync
    )
    objects = [ObjectDiff(ref=c.entry.ref, action="pruned") for c in found]
    return SyncDiff(name=ledger.sync, objects=tuple(objects), note="removed from this cluster")
