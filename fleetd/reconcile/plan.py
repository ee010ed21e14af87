"""The planner: a server-side dry run of a sync's objects, giving a change set. It never writes.

One piece of code answers "what would applying these objects do?" for
every caller: the reconcile (which then writes what differs), ``fleetd
diff`` (which prints it) and drift confirmation (which decides whether a
suspected drift is real). So the staging order, the kubectl-takeover rule
and the immutable-field rule exist here once.

For every object the planner reads the live object, overlays the live
values of keep-live paths (ignore rules, HPA-owned replicas), and asks the
server for a *dry-run* server-side apply (field manager ``fleetd``, force).
The object ``differs`` when the dry-run result, without status and server
bookkeeping, is not the live object.

**Staging.** Prerequisites (CRDs, Namespaces and cluster-wide class objects,
see `fleetd.kube.objects`) form stage one; everything else stage two.
Stage-two objects whose CRD or Namespace this very sync creates cannot be
validated before stage one exists: they are *deferred*, and the applier
plans them right after stage one is written. Every other object is
validated before the first write, so nothing is applied half-way because of
an invalid object.

**kubectl takeover.** Fields that ``kubectl`` wrote by hand (edit, scale,
client-side apply...) are folded into fleetd's own managedFields entry, so
that the apply really removes what git does not set. That fold is a write,
so it is a separate step (`Planner.adopt`) which only the applier calls;
planning for diff and drift never adopts and predicts its effect instead.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleetd.errors import FleetdError
from fleetd.kube.client import ApiError, Invalid, KubeClient, KubeError, NotFound
from fleetd.kube.discovery import Discovery, Resource, UnknownKind
from fleetd.kube.objects import (
    ANNOTATION_FORCE,
    ENABLED,
    FIELD_MANAGER,
    ObjRef,
    annotations_of,
    apply_rank,
    is_prerequisite,
    ref_of,
)
from fleetd.util.pointers import overlay

APPLY_PATCH = "application/apply-patch+yaml"
JSON_PATCH = "application/json-patch+json"
#: Managers whose hand-made changes fleetd adopts and then reverts.
KUBECTL_MANAGERS = frozenset(
    {
        "kubectl", "kubectl-client-side-apply", "kubectl-edit", "kubectl-patch", "kubectl-label",
        "kubectl-annotate", "kubectl-set", "kubectl-replace", "kubectl-create", "before-first-apply",
    }
)  # fmt: skip
_NOISE = ("resourceVersion", "managedFields", "generation", "creationTimestamp", "uid", "selfLink")


class ApplyError(FleetdError):
    """One object could not be planned or applied; names the object and where it came from."""

    def __init__(self, ref: ObjRef, origin: str, message: str, *, temporary: bool = False) -> None:
        super().__init__(f"{ref} (from {origin}): {message}")
        self.ref, self.origin, self.detail = ref, origin, message
        self.temporary = temporary


@dataclass(frozen=True, slots=True, kw_only=True)
class Desired:
    """An object to apply and where it came from (``apps/web.yaml#2``) for messages."""

    obj: dict[str, Any]
    origin: str
    #: JSON pointers whose live values are kept (ignore rules, HPA-owned replicas).
    keep_live: tuple[str, ...] = ()
    #: Its values came out of SOPS-encrypted data: reports show no value of it, whatever its kind.
    sensitive: bool = False

    @property
    def ref(self) -> ObjRef:
        return ref_of(self.obj)


@dataclass(slots=True, kw_only=True)
class Plan:
    """What applying one object would do, as the server says in a dry run."""

    desired: Desired
    """The object as it would be sent: scoped, live values kept where asked."""
    resource: Resource
    live: dict[str, Any] | None
    dry: dict[str, Any]
    """The dry-run result (the live object when it must be recreated)."""
    differs: bool
    recreate: bool = False
    """An immutable field changed; the object is deleted and created again."""


@dataclass(slots=True, kw_only=True)
class ChangeSet:
    """A sync's plan in apply order: stage one, stage two, and what waits for stage one."""

    first: list[Plan] = field(default_factory=list)
    rest: list[Plan] = field(default_factory=list)
    deferred: list[Desired] = field(default_factory=list)
    """Stage-two objects whose CRD or Namespace this sync creates: planned after stage one."""
    errors: list[ApplyError] = field(default_factory=list)

    @property
    def plans(self) -> list[Plan]:
        return sorted([*self.first, *self.rest], key=lambda p: apply_rank(p.desired.ref))


def normalized(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without status and server bookkeeping, for comparing desired with live."""
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _NOISE}
    out["metadata"] = meta
    return out


def merge_fieldsets(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Union of two managedFields ``fieldsV1`` trees."""
    out = copy.deepcopy(a)
    for key, value in b.items():
        out[key] = merge_fieldsets(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def adopted_managed_fields(live: dict[str, Any]) -> list[dict[str, Any]] | None:
    """managedFields with kubectl's entries folded into fleetd's apply entry, or None if none to adopt."""
    entries = (live.get("metadata") or {}).get("managedFields") or []
    foreign = [e for e in entries if e.get("manager") in KUBECTL_MANAGERS and not e.get("subresource")]
    if not foreign:
        return None
    kept = [e for e in entries if e not in foreign]
    ours = next(
        (e for e in kept if e.get("manager") == FIELD_MANAGER and e.get("operation") == "Apply"), None
    )
    if ours is None:
        ours = {**foreign[0], "manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": {}}
        kept.append(ours)
    for entry in foreign:
        ours["fieldsV1"] = merge_fieldsets(ours.get("fieldsV1") or {}, entry.get("fieldsV1") or {})
    return kept


def crd_kind(crd: dict[str, Any]) -> tuple[str, str]:
    spec = crd.get("spec") or {}
    return str(spec.get("group", "")), str((spec.get("names") or {}).get("kind", ""))


def waits_on(d: Desired, kinds: set[tuple[str, str]], namespaces: set[str]) -> bool:
    return (d.ref.group, d.ref.kind) in kinds or d.ref.namespace in namespaces


def staged(desired: Iterable[Desired]) -> tuple[list[Desired], list[Desired], list[Desired]]:
    """(stage one, stage two planned now, stage two deferred until stage one exists)."""
    ordered = sorted(desired, key=lambda d: apply_rank(d.ref))
    first = [d for d in ordered if is_prerequisite(d.ref)]
    kinds = {crd_kind(d.obj) for d in first if d.ref.kind == "CustomResourceDefinition"}
    namespaces = {d.ref.name for d in first if d.ref.kind == "Namespace"}
    rest = [d for d in ordered if not is_prerequisite(d.ref)]
    now = [d for d in rest if not waits_on(d, kinds, namespaces)]
    later = [d for d in rest if waits_on(d, kinds, namespaces)]
    return first, now, later


class Planner:
    """Plans objects against one cluster: GETs and dry runs only (plus `adopt`, used by the applier)."""

    def __init__(self, client: KubeClient, discovery: Discovery, *, concurrency: int = 8) -> None:
        self.client = client
        self.discovery = discovery
        self.limit = asyncio.Semaphore(concurrency)

    async def change_set(self, desired: Sequence[Desired], *, force: bool, adopt: bool) -> ChangeSet:
        """Plan a sync's objects in stages; errors are collected, not raised (see `ChangeSet`).

        Deferred objects are planned only when their CRD or Namespace exists
        already; otherwise the caller plans them after stage one.
        """
        first, now, later = staged(desired)
        plans1, errors1 = await self.plan_all(first, force=force, adopt=adopt)
        existing = {p.desired.ref for p in plans1 if p.live is not None}
        # A prerequisite that exists already does not make anything wait.
        waiting = [d for d in later if not _prerequisites_exist(d, first, existing)]
        ready = [d for d in later if d not in waiting]
        plans2, errors2 = await self.plan_all([*now, *ready], force=force, adopt=adopt)
        rest = sorted(plans2, key=lambda p: apply_rank(p.desired.ref))
        return ChangeSet(first=plans1, rest=rest, deferred=waiting, errors=[*errors1, *errors2])

    async def plan_all(
        self, desired: Iterable[Desired], *, force: bool, adopt: bool
    ) -> tuple[list[Plan], list[ApplyError]]:
        results = await asyncio.gather(
            *(self.plan(d, force=force, adopt=adopt) for d in desired), return_exceptions=True
        )
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, ApplyError):
                raise r
        return [r for r in results if isinstance(r, Plan)], [r for r in results if isinstance(r, ApplyError)]

    async def plan(self, d: Desired, *, force: bool, adopt: bool = False) -> Plan:
        """Plan one object; raises `ApplyError` naming it (an unreachable cluster raises `KubeError`)."""
        try:
            resource = await self.discovery.resolve(d.obj["apiVersion"], d.obj["kind"])
        except UnknownKind as exc:
            raise ApplyError(d.ref, d.origin, str(exc).split(": ", 1)[-1]) from exc
        obj = _scoped(d.obj, resource)
        path = resource.path(ref_of(obj).namespace, ref_of(obj).name)
        async with self.limit:
            live = await self.get(path)
            if live is not None and adopt:
                live = await self._adopt(path, live)
            if live is not None and d.keep_live:
                obj = overlay(obj, live, d.keep_live)
            d = Desired(obj=obj, origin=d.origin, keep_live=d.keep_live, sensitive=d.sensitive)
            try:
                dry = await self.ssa(path, obj, dry_run=True)
            except Invalid as exc:
                return _immutable(d, resource, live, exc, force)
            except ApiError as exc:
                raise ApplyError(d.ref, d.origin, exc.detail, temporary=exc.temporary) from exc
        return Plan(
            desired=d, resource=resource, live=live, dry=dry, differs=live is None or differs(dry, live)
        )

    async def get(self, path: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self.client.request("GET", path)
        except NotFound:
            return None
        return result

    async def ssa(self, path: str, obj: dict[str, Any], *, dry_run: bool) -> dict[str, Any]:
        query = [("fieldManager", FIELD_MANAGER), ("force", "true")] + (
            [("dryRun", "All")] if dry_run else []
        )
        result: dict[str, Any] = await self.client.request(
            "PATCH", path, query=query, body=obj, content_type=APPLY_PATCH
        )
        return result

    async def _adopt(self, path: str, live: dict[str, Any]) -> dict[str, Any]:
        """Fold kubectl's managedFields into fleetd's (a write, conditional on the version read)."""
        fields = adopted_managed_fields(live)
        if fields is None:
            return live
        patch = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": live["metadata"]["resourceVersion"]},
            {"op": "replace", "path": "/metadata/managedFields", "value": fields},
        ]
        try:
            result: dict[str, Any] = await self.client.request(
                "PATCH", path, body=patch, content_type=JSON_PATCH
            )
        except KubeError:
            return live  # changed meanwhile: the dry run below still tells the truth
        return result


def _prerequisites_exist(d: Desired, first: list[Desired], existing: set[ObjRef]) -> bool:
    needed = [
        p.ref
        for p in first
        if (p.ref.kind == "Namespace" and p.ref.name == d.ref.namespace)
        or (p.ref.kind == "CustomResourceDefinition" and crd_kind(p.obj) == (d.ref.group, d.ref.kind))
    ]
    return all(ref in existing for ref in needed)


def _immutable(
    d: Desired, resource: Resource, live: dict[str, Any] | None, exc: Invalid, force: bool
) -> Plan:
    if live is None or "immutable" not in exc.api_message:
        raise ApplyError(d.ref, d.origin, exc.api_message) from exc
    if not force and annotations_of(d.obj).get(ANNOTATION_FORCE) != ENABLED:
        raise ApplyError(
            d.ref,
            d.origin,
            f"{exc.api_message} — change it back, or let fleetd delete and recreate it: "
            f"annotate the object {ANNOTATION_FORCE}: {ENABLED}, or set force = true on the sync",
        ) from exc
    return Plan(desired=d, resource=resource, live=live, dry=live, differs=True, recreate=True)


def differs(dry: dict[str, Any], live: dict[str, Any]) -> bool:
    return json.dumps(normalized(dry), sort_keys=True) != json.dumps(normalized(live), sort_keys=True)


def _scoped(obj: dict[str, Any], resource: Resource) -> dict[str, Any]:
    """Give namespaced objects a namespace (``default``) and take it from cluster-scoped ones."""
    meta = dict(obj.get("metadata") or {})
    if resource.namespaced and not meta.get("namespace"):
        meta["namespace"] = "default"
    elif not resource.namespaced:
        meta.pop("namespace", None)
    return {**obj, "metadata": meta}
