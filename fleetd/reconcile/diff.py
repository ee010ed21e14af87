"""``fleetd diff``: what the daemon would change on one cluster — without a daemon and without a write.

Like ``terraform plan`` or ``flux diff``. The answer is only worth something
if it is the daemon's answer, so every step is the daemon's own code:

* the source is fetched with `GitSourceFetcher` into a throw-away directory,
  as ``fleetd check`` does — never the daemon's state directory, where a
  second writer to its git mirror could corrupt it;
* each sync is rendered as the reconciler renders it (`desired_objects`):
  `RenderCache` with API discovery deciding what is cluster-scoped, the
  fleet's decryption hook, fleetd's ownership labels (`owned`), and the
  keep-live paths of ignore rules and HPA-scaled replicas;
* each object is planned by the `Applier` (`dry_run_plan`): GET the live
  object, then a server-side *dry-run* apply (field manager ``fleetd``,
  force). Objects waiting for a Namespace or CRD this sync creates cannot be
  validated yet; they are shown as created;
* would-prune candidates are the ledger's entries (``fleetd-system/<fleet>.<sync>``
  in the spoke) that are no longer rendered and that prune would really
  delete: still labelled for this fleet and sync, not ``fleetd.dev/prune:
  disabled``. A sync that fails to render or validate prunes nothing in the
  daemon, so it lists no prunes here either.

Read-only by construction: GETs and dry runs only. The daemon's planning also
*adopts* fields that ``kubectl`` wrote (a managedFields patch — a write), so
that the apply removes what git does not set. Diff skips the patch and
predicts its effect locally (`taken_over`): a field only kubectl manages and
git does not set is dropped from the predicted result. Only map fields are
predicted; list items keyed by ``k:`` are left as the dry run shows them.

An object is ``changed`` when the normalized predicted result differs from the
normalized live object; the report shows a unified diff of the two as YAML
with sorted keys, status and server bookkeeping stripped (`normalized`).

Secrets: before anything is formatted, every value of a Secret's ``data`` and
``stringData`` (and a kubectl last-applied annotation, which may copy them) is
replaced by ``***`` on both sides; the sha256 of the real values decides
whether the new side reads ``*** (changed)``. Planning errors are scrubbed of
the sync's secret values; rendering never puts plaintext in its errors.

Exit codes of `run`: 0 nothing would change, 1 something would, 2 the diff
could not be made (invalid inventory, unknown cluster or sync, cluster
unreachable, a sync that fails to render, decrypt or validate).

The revision is the head of the source's ref, what the daemon fetches next; a
cluster that rollout waves hold back gets it only when its wave's turn comes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import difflib
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from fleetd.daemon.root import decryptor
from fleetd.daemon.store import StateStore
from fleetd.daemon.worker import new_session
from fleetd.errors import FleetdError, InventoryError
from fleetd.inventory import Cluster, Fleet, Sync, load_fleet
from fleetd.kube.client import KubeClient, NotFound, connect
from fleetd.kube.discovery import UnknownKind
from fleetd.kube.objects import (
    BUILTIN_GROUPS,
    FIELD_MANAGER,
    Entry,
    ObjRef,
    apply_rank,
    is_prerequisite,
)
from fleetd.reconcile.apply import (
    KUBECTL_MANAGERS,
    Applier,
    ApplyError,
    Desired,
    crd_kind,
    merge_fieldsets,
    normalized,
    waits_on,
)
from fleetd.reconcile.ledger import Ledger
from fleetd.reconcile.prune import refuses
from fleetd.reconcile.sync import ClusterSession, desired_objects
from fleetd.render import RenderCache, RenderError
from fleetd.source.git import GitSourceFetcher, Snapshot, remove_tree

Action = Literal["created", "changed", "unchanged", "pruned"]
EXIT_SAME, EXIT_CHANGES, EXIT_ERROR = 0, 1, 2
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
            return await _diff_syncs(fleet, target, syncs, snapshot, scratch, orphans=sync is None)
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
    fleet: Fleet, cluster: Cluster, syncs: list[Sync], snapshot: Snapshot, scratch: Path, *, orphans: bool
) -> DiffReport:
    async with await connect(cluster.name, cluster.kubeconfig, cluster.context) as client:
        await client.version()  # an unreachable cluster is named before any render
        session = read_only_session(fleet, cluster, client, scratch)
        results = [await diff_sync(session, s, snapshot) for s in syncs]
        if orphans and not cluster.suspend:
            results += await _removed_syncs(session)
    return DiffReport(
        cluster=cluster.name, revision=snapshot.revision, ref=snapshot.ref, syncs=tuple(results)
    )


def read_only_session(fleet: Fleet, cluster: Cluster, client: KubeClient, scratch: Path) -> ClusterSession:
    """The worker's session for `cluster`, its local state in `scratch`; diff only reads through it."""
    session = new_session(fleet.name, cluster, client, StateStore(scratch / "state"), RenderCache(), None)
    session.decrypt = decryptor(fleet.decryption)
    return session


async def diff_sync(session: ClusterSession, sync: Sync, snapshot: Snapshot) -> SyncDiff:
    """Render, dry-run and classify one sync, then find what its reconcile would prune."""
    if session.cluster.suspend or sync.suspend:
        return SyncDiff(name=sync.name, note="suspended: the daemon changes nothing here")
    try:
        desired = await desired_objects(session, sync, snapshot)
    except RenderError as exc:
        return SyncDiff(name=sync.name, errors=(str(exc),))
    planned, errors = await plan_sync(session.applier, desired, force=sync.force)
    objects = tuple(classify(p) for p in planned)
    if errors:  # the daemon would apply and prune nothing
        return SyncDiff(name=sync.name, objects=objects, errors=tuple(scrub(e, desired) for e in errors))
    if not sync.prune:
        return SyncDiff(name=sync.name, objects=objects, note="prune = false: objects that left git stay")
    ledger = await session.ledgers.read(sync.name)
    rendered = {p.desired.ref for p in planned}
    stale = [e for e in (ledger.entries if ledger else ()) if e.ref not in rendered]
    return SyncDiff(name=sync.name, objects=(*objects, *await _prunable(session, sync.name, stale)))


# --- planning (GETs and dry runs only) ------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Planned:
    """One object as the applier would see it."""

    desired: Desired
    """As it would be sent: namespace defaulted, keep-live values filled in."""
    live: dict[str, Any] | None
    result: dict[str, Any] | None
    """The server's dry-run answer; None when it cannot be validated before its Namespace or CRD exists."""
    recreate: bool = False
    """An immutable field changed and the object would be deleted and created again."""


async def dry_run_plan(applier: Applier, desired: Desired, *, force: bool) -> Planned:
    """The applier's own planning (GET + dry-run apply), without adopting kubectl's fields (a write)."""
    plan = await applier.plan(desired, force, adopt=False)
    return Planned(desired=plan.desired, live=plan.live, result=plan.dry, recreate=plan.recreate)


async def plan_sync(
    applier: Applier, desired: Sequence[Desired], *, force: bool
) -> tuple[list[Planned], list[str]]:
    """Plan prerequisites, then the rest; objects that wait for a new Namespace or CRD are not dry-run."""
    ordered = sorted(desired, key=lambda d: apply_rank(d.ref))
    first, errors = await _plan_group(applier, [d for d in ordered if is_prerequisite(d.ref)], force)
    new = [p.desired.obj for p in first if p.live is None]
    kinds = {crd_kind(o) for o in new if o.get("kind") == "CustomResourceDefinition"}
    namespaces = {str(o["metadata"]["name"]) for o in new if o.get("kind") == "Namespace"}
    rest = [d for d in ordered if not is_prerequisite(d.ref)]
    later = [Planned(desired=d, live=None, result=None) for d in rest if waits_on(d, kinds, namespaces)]
    now, more = await _plan_group(applier, [d for d in rest if not waits_on(d, kinds, namespaces)], force)
    planned = sorted([*first, *now, *later], key=lambda p: apply_rank(p.desired.ref))
    return planned, [*errors, *more]


async def _plan_group(
    applier: Applier, desired: list[Desired], force: bool
) -> tuple[list[Planned], list[str]]:
    results = await asyncio.gather(
        *(dry_run_plan(applier, d, force=force) for d in desired), return_exceptions=True
    )
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, ApplyError):
            raise r
    plans = [r for r in results if isinstance(r, Planned)]
    return plans, [str(r) for r in results if isinstance(r, ApplyError)]


def classify(p: Planned) -> ObjectDiff:
    """created, changed (with its diff) or unchanged."""
    ref, origin = p.desired.ref, p.desired.origin
    if p.live is None:
        waits = () if p.result is not None else ("validated once its Namespace or CRD exists",)
        return ObjectDiff(ref=ref, action="created", origin=origin, notes=waits)
    if p.recreate or p.result is None:
        again = ("an immutable field changed: it would be deleted and created again",)
        return ObjectDiff(ref=ref, action="changed", origin=origin, notes=again)
    after = taken_over(p.result, p.live, p.desired.obj)
    if _canonical(normalized(after)) == _canonical(normalized(p.live)):
        return ObjectDiff(ref=ref, action="unchanged", origin=origin)
    notes = tuple(f"fields written by {m} are taken over" for m in sorted(_kubectl_managers(p.live)))
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


class _Dumper(yaml.SafeDumper):
    """YAML for people: multi-line strings (config files in ConfigMaps) as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def object_diff(live: dict[str, Any], after: dict[str, Any]) -> str:
    """Unified diff of the normalized objects as sorted-key YAML; Secret values masked first."""
    before, later = masked(normalized(live), normalized(after))
    lines = difflib.unified_diff(_yaml(before), _yaml(later), "live", "after apply", lineterm="")
    return "\n".join(lines)


def _yaml(obj: dict[str, Any]) -> list[str]:
    text: str = yaml.dump(obj, Dumper=_Dumper, sort_keys=True, default_flow_style=False)
    return text.splitlines()


_SIGN = {"created": "+", "changed": "~", "pruned": "-"}
_WORDS = {"created": "created", "changed": "changed", "pruned": "would prune"}
_COLOURS = {"+": "32", "~": "33", "-": "31", "@": "36", "!": "31;1"}


def label(ref: ObjRef) -> str:
    """``Deployment demo/web``; custom kinds keep their group (``Widget.example.com demo/w``)."""
    kind = ref.kind if ref.group in BUILTIN_GROUPS else f"{ref.kind}.{ref.group}"
    return f"{kind} {ref.namespace}/{ref.name}" if ref.namespace else f"{kind} {ref.name}"


def render_report(report: DiffReport, *, color: bool) -> str:
    """The human report: per sync its +/~/- lines with indented diffs, then the totals."""
    paint = _painter(color)
    lines = [f"cluster {report.cluster} at {report.revision[:12]} ({report.ref})"]
    for sync in report.syncs:
        lines += _sync_lines(sync, paint)
    lines.append(summary(report))
    return "\n".join(lines)


def summary(report: DiffReport) -> str:
    created, changed, pruned = (report.count(a) for a in ("created", "changed", "pruned"))
    return f"{created} to create, {changed} to change, {pruned} to prune"


def _painter(color: bool) -> Callable[[str, str], str]:
    def paint(text: str, key: str) -> str:
        code = _COLOURS.get(key)
        return f"\x1b[{code}m{text}\x1b[0m" if color and code else text

    return paint


def _sync_lines(sync: SyncDiff, paint: Callable[[str, str], str]) -> list[str]:
    shown = [o for o in sync.objects if o.action != "unchanged"]
    note = f" ({sync.note})" if sync.note else ""
    if sync.errors:
        return [paint(f"! sync {sync.name}: could not be diffed ({len(sync.errors)} error(s))", "!")]
    if not shown:
        return [f"sync {sync.name}: no changes{note}"]
    lines = [f"sync {sync.name}:{note}"]
    for obj in shown:
        sign = _SIGN[obj.action]
        lines.append(paint(f"{sign} {label(obj.ref)} ({_WORDS[obj.action]})", sign))
        lines += [f"    note: {n}" for n in obj.notes]
        lines += ["    " + paint(line, line[:1]) for line in obj.diff.splitlines()]
    return lines


def report_json(report: DiffReport) -> dict[str, Any]:
    """The machine document: the same content as `render_report`, unchanged objects included."""
    return {
        "ok": not report.errors,
        "changes": report.has_changes,
        "cluster": report.cluster,
        "revision": report.revision,
        "ref": report.ref,
        "summary": {a: report.count(a) for a in ("created", "changed", "pruned")},
        "syncs": [_sync_json(s) for s in report.syncs],
    }


def _sync_json(sync: SyncDiff) -> dict[str, Any]:
    objects = [
        {
            "action": o.action, "kind": o.ref.kind, "group": o.ref.group, "namespace": o.ref.namespace,
            "name": o.ref.name, "origin": o.origin, "diff": o.diff, "notes": list(o.notes),
        }
        for o in sync.objects
    ]  # fmt: skip
    return {"name": sync.name, "note": sync.note, "errors": list(sync.errors), "objects": objects}


# --- prune candidates (read-only) -----------------------------------------------------------------


async def _prunable(session: ClusterSession, sync: str, entries: Iterable[Entry]) -> list[ObjectDiff]:
    """Those of `entries` that prune would delete, in prune order."""
    ordered = sorted(entries, key=lambda e: apply_rank(e.ref), reverse=True)
    ours = await asyncio.gather(*(_still_ours(session, sync, e) for e in ordered))
    return [ObjectDiff(ref=e.ref, action="pruned") for e, yes in zip(ordered, ours, strict=True) if yes]


async def _still_ours(session: ClusterSession, sync: str, entry: Entry) -> bool:
    """prune's own rules, without the delete: present, labelled for this fleet and sync, not protected."""
    try:
        resource = await session.discovery.resolve(entry.api_version, entry.ref.kind)
        live = await session.client.request("GET", resource.path(entry.ref.namespace, entry.ref.name))
    except (UnknownKind, NotFound):
        return False
    return refuses(live, session.fleet, sync) is None and not live["metadata"].get("deletionTimestamp")


async def _removed_syncs(session: ClusterSession) -> list[SyncDiff]:
    """Syncs this fleet once applied here but no longer assigns: the daemon prunes them."""
    assigned = {s.name for s in session.cluster.syncs}
    ledgers = [ledger for ledger in await session.ledgers.read_all() if ledger.sync not in assigned]
    return [await _removed_sync(session, ledger) for ledger in ledgers]


async def _removed_sync(session: ClusterSession, ledger: Ledger) -> SyncDiff:
    if not ledger.prune:
        return SyncDiff(
            name=ledger.sync, note="removed from this cluster; it did not prune, so its objects stay"
        )
    objects = await _prunable(session, ledger.sync, ledger.entries)
    return SyncDiff(name=ledger.sync, objects=tuple(objects), note="removed from this cluster")


# --- the command ----------------------------------------------------------------------------------


async def run(config: Path, cluster: str, sync: str | None, as_json: bool) -> int:
    """``fleetd diff``: print the report; 0 no change, 1 changes, 2 the diff could not be made."""
    try:
        fleet = await asyncio.to_thread(load_fleet, config)
        report = await diff_cluster(fleet, cluster, sync)
    except InventoryError as exc:
        return _fail(f"the inventory is invalid ({len(exc.problems)} problem(s)):", as_json, exc.problems)
    except FleetdError as exc:
        return _fail(str(exc), as_json)
    print(json.dumps(report_json(report), indent=2) if as_json else render_report(report, color=_colour()))
    for error in report.errors:
        print(f"fleetd diff: cluster {report.cluster}, {error}", file=sys.stderr)
    if report.errors:
        return EXIT_ERROR
    return EXIT_CHANGES if report.has_changes else EXIT_SAME


def _fail(message: str, as_json: bool, details: Iterable[object] = ()) -> int:
    lines = [str(d) for d in details]
    print(f"fleetd diff: {message}", *(f"  {line}" for line in lines), sep="\n", file=sys.stderr)
    if as_json:
        print(json.dumps({"ok": False, "error": message, "details": lines}, indent=2))
    return EXIT_ERROR


def _colour() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ
