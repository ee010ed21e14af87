"""Staged server-side apply that writes only what differs.

For every desired object fleetd reads the live object, takes over fields
that ``kubectl`` wrote by hand (so a manual edit is really reverted, not just
out-voted), and asks the server for a *dry-run* server-side apply. Only when
the dry-run result differs from the live object — ignoring status and
metadata noise — is the real apply sent, so a no-op reconcile writes nothing
and every resourceVersion stays put.

Nothing is applied half-way: every object is validated by its dry run before
the first write. Objects that cannot be validated yet because this very sync
creates their CustomResourceDefinition or Namespace are checked right after
the prerequisites stage, before anything of stage two is written.

Field manager ``fleetd``, conflicts forced: git wins over other appliers.
Immutable fields fail with a message saying so; an object annotated
``fleetd.dev/force: enabled`` is deleted and created again instead.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

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

Action = Literal["created", "configured", "unchanged", "recreated"]
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
    """One object could not be applied; names the object and where it came from."""

    def __init__(self, ref: ObjRef, origin: str, message: str) -> None:
        super().__init__(f"{ref} (from {origin}): {message}")
        self.ref, self.origin, self.detail = ref, origin, message


class ApplyFailed(FleetdError):
    """Some objects failed; ``applied`` says whether any write happened before the failure."""

    def __init__(self, errors: Sequence[BaseException], *, changes: Sequence[Change] = ()) -> None:
        self.errors, self.changes = list(errors), list(changes)
        self.applied = any(c.action != "unchanged" for c in self.changes)
        lines = "\n".join(f"  {e}" for e in errors)
        when = "after other objects were applied" if self.applied else "nothing was applied"
        super().__init__(f"{len(errors)} object(s) failed ({when}):\n{lines}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Desired:
    """An object to apply and where it came from (``apps/web.yaml#2``) for messages."""

    obj: dict[str, Any]
    origin: str
    #: JSON pointers whose live values are kept (ignore rules, HPA-owned replicas).
    keep_live: tuple[str, ...] = ()

    @property
    def ref(self) -> ObjRef:
        return ref_of(self.obj)


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """What applying one object did, and the object as the server has it afterwards."""

    ref: ObjRef
    action: Action
    version: str
    resource: Resource
    desired: Desired
    """The object as sent (scoped, live values kept where asked) and where it came from."""
    result: dict[str, Any]
    """The server's object after the apply (or the dry-run result when nothing changed)."""


@dataclass(slots=True, kw_only=True)
class Plan:
    desired: Desired
    resource: Resource
    live: dict[str, Any] | None
    dry: dict[str, Any]
    differs: bool
    recreate: bool = False


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
    entries = live.get("metadata", {}).get("managedFields") or []
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


class Applier:
    """Applies desired objects to one cluster, in stages, writing only differences."""

    def __init__(self, client: KubeClient, discovery: Discovery, *, concurrency: int = 8) -> None:
        self._client = client
        self._discovery = discovery
        self._limit = asyncio.Semaphore(concurrency)

    # -- public ----------------------------------------------------------

    async def apply(
        self, desired: Sequence[Desired], *, wait_timeout: float = 60.0, force: bool = False
    ) -> list[Change]:
        """Validate everything, then apply prerequisites, wait for them, then the rest.

        ``force``: recreate objects whose immutable fields changed (else only those annotated so).
        """
        ordered = sorted(desired, key=lambda d: apply_rank(d.ref))
        first = [d for d in ordered if is_prerequisite(d.ref)]
        rest = [d for d in ordered if not is_prerequisite(d.ref)]
        plans1, errors = await self._plan_all(first, force)
        plans2, deferred, errors2 = await self._plan_rest(rest, first, force)
        if errors or errors2:
            raise ApplyFailed([*errors, *errors2])
        changes: list[Change] = []
        await self._execute(plans1, changes)
        await self._wait_prerequisites([p.desired for p in plans1], wait_timeout)
        if deferred:
            await self._discovery.refresh()
            more, errors = await self._plan_all(deferred, force)
            if errors:
                raise ApplyFailed(errors, changes=changes)
            plans2 = sorted([*plans2, *more], key=lambda p: apply_rank(p.desired.ref))
        for _, group in itertools.groupby(plans2, key=lambda p: apply_rank(p.desired.ref)[:2]):
            await self._execute(list(group), changes)
        return changes

    # -- planning (reads and dry runs only) -------------------------------

    async def _plan_all(
        self, desired: Iterable[Desired], force: bool
    ) -> tuple[list[Plan], list[BaseException]]:
        results = await asyncio.gather(*(self.plan(d, force) for d in desired), return_exceptions=True)
        plans = [r for r in results if isinstance(r, Plan)]
        errors = [r for r in results if isinstance(r, BaseException)]
        for e in errors:
            if not isinstance(e, ApplyError | KubeError):
                raise e
        return plans, errors

    async def _plan_rest(
        self, rest: list[Desired], first: list[Desired], force: bool
    ) -> tuple[list[Plan], list[Desired], list[BaseException]]:
        """Plan stage two; objects waiting on this sync's own CRDs or Namespaces are deferred."""
        created_kinds = {crd_kind(d.obj) for d in first if d.ref.kind == "CustomResourceDefinition"}
        created_ns = {d.ref.name for d in first if d.ref.kind == "Namespace"}
        now = [d for d in rest if not waits_on(d, created_kinds, created_ns)]
        later = [d for d in rest if waits_on(d, created_kinds, created_ns)]
        plans, errors = await self._plan_all(now, force)
        return plans, later, errors

    async def plan(self, d: Desired, force: bool, adopt: bool = True) -> Plan:
        try:
            resource = await self._discovery.resolve(d.obj["apiVersion"], d.obj["kind"])
        except UnknownKind as exc:
            raise ApplyError(d.ref, d.origin, str(exc).split(": ", 1)[1]) from exc
        obj = _scoped(d.obj, resource)
        path = resource.path(ref_of(obj).namespace, ref_of(obj).name)
        async with self._limit:
            live = await self._get(path)
            if live is not None and adopt:
                live = await self._adopt_kubectl_fields(path, live)
            if live is not None and d.keep_live:
                obj = overlay(obj, live, d.keep_live)
            d = Desired(obj=obj, origin=d.origin, keep_live=d.keep_live)
            try:
                dry = await self._ssa(path, obj, dry_run=True)
            except Invalid as exc:
                return self._immutable(d, resource, live, exc, force)
            except ApiError as exc:
                raise ApplyError(d.ref, d.origin, exc.detail) from exc
        differs = live is None or _differs(dry, live)
        return Plan(desired=d, resource=resource, live=live, dry=dry, differs=differs)

    def _immutable(
        self, d: Desired, resource: Resource, live: dict[str, Any] | None, exc: Invalid, force: bool
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

    async def _get(self, path: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self._client.request("GET", path)
        except NotFound:
            return None
        return result

    async def _adopt_kubectl_fields(self, path: str, live: dict[str, Any]) -> dict[str, Any]:
        fields = adopted_managed_fields(live)
        if fields is None:
            return live
        patch = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": live["metadata"]["resourceVersion"]},
            {"op": "replace", "path": "/metadata/managedFields", "value": fields},
        ]
        result: dict[str, Any] = await self._client.request(
            "PATCH", path, body=patch, content_type=JSON_PATCH
        )
        return result

    async def _ssa(self, path: str, obj: dict[str, Any], *, dry_run: bool) -> dict[str, Any]:
        query = [("fieldManager", FIELD_MANAGER), ("force", "true")] + (
            [("dryRun", "All")] if dry_run else []
        )
        result: dict[str, Any] = await self._client.request(
            "PATCH", path, query=query, body=obj, content_type=APPLY_PATCH
        )
        return result

    # -- writing -------------------------------------------------------------

    async def _execute(self, plans: Sequence[Plan], done: list[Change]) -> None:
        """Write ``plans`` concurrently, adding what succeeded to ``done``; raise if any failed."""
        results = await asyncio.gather(*(self._write(p) for p in plans), return_exceptions=True)
        done += [r for r in results if isinstance(r, Change)]
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise ApplyFailed(errors, changes=done)

    async def _write(self, plan: Plan) -> Change:
        d, resource = plan.desired, plan.resource
        if not plan.differs:
            return Change(
                ref=d.ref, action="unchanged", version=resource.version, resource=resource,
                desired=d, result=plan.dry,
            )  # fmt: skip
        path = resource.path(d.ref.namespace, d.ref.name)
        async with self._limit:
            try:
                if plan.recreate:
                    await self._delete_and_wait(path)
                result = await self._ssa(path, d.obj, dry_run=False)
            except KubeError as exc:
                raise ApplyError(d.ref, d.origin, exc.detail) from exc
        action: Action = "recreated" if plan.recreate else ("created" if plan.live is None else "configured")
        return Change(
            ref=d.ref,
            action=action,
            version=resource.version,
            resource=resource,
            desired=d,
            result=result,
        )

    async def differs(self, desired: Desired) -> bool:
        """Would applying ``desired`` change the live object? (Reads and a dry run only; no adoption.)"""
        try:
            plan = await self.plan(desired, force=True, adopt=False)
        except ApplyError:
            return True
        return plan.differs

    async def _delete_and_wait(self, path: str, timeout: float = 60.0) -> None:
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        await self._client.request("DELETE", path, body=body)
        await _poll(lambda: self._gone(path), timeout, f"deletion of {path}")

    async def _gone(self, path: str) -> bool:
        return await self._get(path) is None

    async def _wait_prerequisites(self, desired: Sequence[Desired], timeout: float) -> None:
        crds = [d for d in desired if d.ref.kind == "CustomResourceDefinition"]
        if crds:
            await asyncio.gather(*(self._wait_established(d, timeout) for d in crds))
            await self._discovery.refresh()

    async def _wait_established(self, d: Desired, timeout: float) -> None:
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{d.ref.name}"

        async def established() -> bool:
            crd = await self._get(path) or {}
            conditions = (crd.get("status") or {}).get("conditions") or []
            return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)

        await _poll(established, timeout, f"CustomResourceDefinition {d.ref.name} to become Established")


def _differs(dry: dict[str, Any], live: dict[str, Any]) -> bool:
    return json.dumps(normalized(dry), sort_keys=True) != json.dumps(normalized(live), sort_keys=True)


def _scoped(obj: dict[str, Any], resource: Resource) -> dict[str, Any]:
    """Give namespaced objects a namespace (``default``) and take it from cluster-scoped ones."""
    meta = dict(obj.get("metadata") or {})
    if resource.namespaced and not meta.get("namespace"):
        meta["namespace"] = "default"
    elif not resource.namespaced:
        meta.pop("namespace", None)
    return {**obj, "metadata": meta}


def crd_kind(crd: dict[str, Any]) -> tuple[str, str]:
    spec = crd.get("spec") or {}
    return str(spec.get("group", "")), str((spec.get("names") or {}).get("kind", ""))


def waits_on(d: Desired, kinds: set[tuple[str, str]], namespaces: set[str]) -> bool:
    return (d.ref.group, d.ref.kind) in kinds or d.ref.namespace in namespaces


async def _poll(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            delay = 0.05
            while not await check():
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
    except TimeoutError:
        raise FleetdError(f"timed out after {timeout:g}s waiting for {what}") from None
