"""Staged server-side apply that writes only what differs.

The `Planner` (`fleetd.reconcile.plan`) dry-runs every object first; here
the change set is executed: stage one (prerequisites) is written and waited
for (CRDs until Established), then the deferred objects are planned, then
stage two is written group by group in kind order. Only objects whose
dry-run result differs from the live object are written, so a no-op
reconcile writes nothing and every resourceVersion stays put.

Nothing is applied half-way because of an invalid object: every object is
validated by its dry run before the first write (deferred objects right
after stage one, before anything of stage two is written). A write that
fails anyway (the cluster went away, a webhook refused) raises
`ApplyFailed`, which lists exactly what was written before the failure.

Field manager ``fleetd``, conflicts forced: git wins over other appliers.
Immutable fields fail with a message saying so; an object annotated
``fleetd.dev/force: enabled`` is deleted and created again instead.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fleetd.errors import FleetdError
from fleetd.kube.client import KubeError
from fleetd.kube.discovery import Resource
from fleetd.kube.objects import ObjRef, apply_rank
from fleetd.reconcile.guard import Guard, unguarded
from fleetd.reconcile.plan import ApplyError, Desired, Plan, Planner

__all__ = ["Action", "Applier", "ApplyError", "ApplyFailed", "Change", "Desired", "written_phrase"]

Action = Literal["created", "configured", "unchanged", "recreated"]


class ApplyFailed(FleetdError):
    """Some objects failed; ``changes`` are those that succeeded, ``written`` those that wrote."""

    def __init__(self, errors: Sequence[BaseException], *, changes: Sequence[Change] = ()) -> None:
        self.errors, self.changes = list(errors), list(changes)
        self.written = [c for c in self.changes if c.action != "unchanged"]
        self.applied = bool(self.written)
        self.temporary = any(getattr(e, "temporary", False) for e in errors)
        lines = "\n".join(f"  {e}" for e in errors)
        super().__init__(f"{len(errors)} object(s) failed ({written_phrase(self.written)}):\n{lines}")


def written_phrase(written: Sequence[Change]) -> str:
    """What a failed apply wrote before failing, for messages: never "nothing" when something was."""
    if not written:
        return "nothing was written"
    names = ", ".join(str(c.ref) for c in written[:5]) + (" ..." if len(written) > 5 else "")
    return f"{len(written)} object(s) were written before the failure: {names}"


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


class Applier:
    """Executes a sync's change set on one cluster, in stages, writing only differences."""

    def __init__(self, planner: Planner, *, guard: Guard = unguarded) -> None:
        self.planner = planner
        self.guard = guard  # asked before every batch and every write; raises `Fenced`

    async def apply(
        self, desired: Sequence[Desired], *, wait_timeout: float = 60.0, force: bool = False
    ) -> list[Change]:
        """Validate everything, then apply prerequisites, wait for them, then the rest.

        ``force``: recreate objects whose immutable fields changed (else only those annotated so).
        """
        self.guard()  # planning with adopt=True may fold kubectl's fields in: a write
        plan = await self.planner.change_set(desired, force=force, adopt=True)
        if plan.errors:
            raise ApplyFailed(plan.errors)
        changes: list[Change] = []
        await self._execute(plan.first, changes)
        await self._wait_prerequisites([p.desired for p in plan.first], wait_timeout)
        rest = plan.rest
        if plan.deferred:
            await self.planner.discovery.refresh()
            self.guard()
            more, errors = await self.planner.plan_all(plan.deferred, force=force, adopt=True)
            if errors:
                raise ApplyFailed(errors, changes=changes)
            rest = sorted([*rest, *more], key=lambda p: apply_rank(p.desired.ref))
        for _, group in itertools.groupby(rest, key=lambda p: apply_rank(p.desired.ref)[:2]):
            await self._execute(list(group), changes)
        return changes

    async def differs(self, desired: Desired) -> bool:
        """Would applying ``desired`` change the live object? (Reads and a dry run only.)"""
        try:
            plan = await self.planner.plan(desired, force=True)
        except ApplyError:
            return True
        return plan.differs

    # -- writing -------------------------------------------------------------

    async def _execute(self, plans: Sequence[Plan], done: list[Change]) -> None:
        """Write ``plans`` concurrently, adding what succeeded to ``done``; raise if any failed."""
        self.guard()
        results = await asyncio.gather(*(self._write(p) for p in plans), return_exceptions=True)
        done += [r for r in results if isinstance(r, Change)]
        errors = [r for r in results if isinstance(r, BaseException)]
        for e in errors:
            if not isinstance(e, FleetdError):
                raise e
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
        async with self.planner.limit:
            self.guard()
            try:
                if plan.recreate:
                    await self._delete_and_wait(path)
                result = await self.planner.ssa(path, d.obj, dry_run=False)
            except KubeError as exc:
                raise ApplyError(d.ref, d.origin, exc.detail, temporary=exc.temporary) from exc
        action: Action = "recreated" if plan.recreate else ("created" if plan.live is None else "configured")
        return Change(
            ref=d.ref, action=action, version=resource.version, resource=resource, desired=d, result=result
        )

    async def _delete_and_wait(self, path: str, timeout: float = 60.0) -> None:
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        self.guard()
        await self.planner.client.request("DELETE", path, body=body)
        await _poll(lambda: self._gone(path), timeout, f"deletion of {path}")

    async def _gone(self, path: str) -> bool:
        return await self.planner.get(path) is None

    async def _wait_prerequisites(self, desired: Sequence[Desired], timeout: float) -> None:
        crds = [d for d in desired if d.ref.kind == "CustomResourceDefinition"]
        if crds:
            await asyncio.gather(*(self._wait_established(d, timeout) for d in crds))
            await self.planner.discovery.refresh()

    async def _wait_established(self, d: Desired, timeout: float) -> None:
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{d.ref.name}"

        async def established() -> bool:
            crd = await self.planner.get(path) or {}
            conditions = (crd.get("status") or {}).get("conditions") or []
            return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)

        await _poll(established, timeout, f"CustomResourceDefinition {d.ref.name} to become Established")


async def _poll(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            delay = 0.05
            while not await check():
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
    except TimeoutError:
        raise FleetdError(f"timed out after {timeout:g}s waiting for {what}") from None
