"""Drift within about a second: watch managed objects, confirm, then correct or report.

After every successful reconcile the worker registers what each sync
applied: the object as sent and the *expected* state — the server's object
after the apply, projected onto the fields fleetd sets (so server-side
defaults and normalised quantities are already in it) minus ignored paths.

One watch per resource type and cluster, selected by the fleet label, feeds
every change to a cheap local check:

* the object was deleted — drift;
* a field fleetd sets no longer has the expected value — suspected drift;
* a ``kubectl`` manager (edit, scale, label, client-side apply) appears in
  managedFields — suspected drift (a hand edit, even of fields git does not
  set);
* anything else (status updates, controllers' own fields, other managers'
  fields) — not drift, no API call.

A suspicion is confirmed by the API server, after a short debounce, under
the cluster's lock (never concurrently with a reconcile): under ``correct``
the object is re-applied through the same applier (dry run, write only if
it differs — so a false alarm writes nothing); under ``report`` only a dry
run decides and the object is marked drifted; ``ignore`` skips it all. The
periodic reconcile remains the slow full sweep behind the watches.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fleetd.inventory import DriftPolicy
from fleetd.kube.client import KubeClient, KubeError
from fleetd.kube.discovery import Resource
from fleetd.kube.objects import LABEL_FLEET, ObjRef, ref_of
from fleetd.kube.watch import ResourceWatch
from fleetd.reconcile.apply import Applier, ApplyFailed, Change, Desired
from fleetd.reconcile.guard import Fenced
from fleetd.reconcile.plan import KUBECTL_MANAGERS
from fleetd.util.pointers import without

log = logging.getLogger(__name__)

DEBOUNCE = 0.1
#: Observer of drift: (sync, object, kind, what, reason) with ``what`` one of ``corrected``,
#: ``reported`` (policy report), ``failed`` (correcting failed) or ``cleared`` (matches git again).
DriftObserver = Callable[[str, str, str, str, str], None]


@dataclass(slots=True)
class Managed:
    """One object a sync applied, and what it should look like."""

    sync: str
    policy: DriftPolicy
    desired: Desired
    expected: dict[str, Any]
    resource: Resource
    source: dict[str, Any]
    """The rendered object before scoping, to recognise it unchanged in the next revision."""


def project(desired: Any, result: Any) -> Any:
    """``result`` restricted to the fields present in ``desired`` (lists matched by position)."""
    if isinstance(desired, dict) and isinstance(result, dict):
        return {k: project(v, result[k]) for k, v in desired.items() if k in result and k != "status"}
    if isinstance(desired, list) and isinstance(result, list) and len(desired) == len(result):
        return [project(d, r) for d, r in zip(desired, result, strict=True)]
    return result


def first_difference(expected: Any, live: Any, path: str = "") -> str | None:
    """The JSON pointer of the first expected field ``live`` does not match, or None."""
    if isinstance(expected, dict):
        if not isinstance(live, dict):
            return path or "/"
        for key, value in expected.items():
            if key not in live:
                return f"{path}/{key}"
            found = first_difference(value, live[key], f"{path}/{key}")
            if found:
                return found
        return None
    if isinstance(expected, list):
        if not isinstance(live, list) or len(expected) != len(live):
            return path
        for i, (e, lv) in enumerate(zip(expected, live, strict=True)):
            found = first_difference(e, lv, f"{path}/{i}")
            if found:
                return found
        return None
    return None if expected == live else path


def hand_edits(live: dict[str, Any]) -> list[str]:
    """Managers in managedFields that mean a person changed the object with kubectl."""
    entries = (live.get("metadata") or {}).get("managedFields") or []
    return sorted({e["manager"] for e in entries if e.get("manager") in KUBECTL_MANAGERS})


def expected_state(change: Change) -> dict[str, Any]:
    """What the object should look like: the server's result on the fields fleetd sets, minus kept paths."""
    return without(project(as_stored(change.desired.obj), change.result), change.desired.keep_live)


def as_stored(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` as the server stores it where that changes field names: a Secret's ``stringData``
    becomes base64 ``data`` (the server never returns ``stringData``, so drift of it would go unseen)."""
    string_data = obj.get("stringData")
    if obj.get("kind") != "Secret" or not isinstance(string_data, dict):
        return obj
    data = dict(obj.get("data") or {})
    data.update({k: base64.b64encode(str(v).encode()).decode() for k, v in string_data.items()})
    return {**{k: v for k, v in obj.items() if k != "stringData"}, "data": data}


def managed_from(
    sync: str, policy: DriftPolicy, changes: Iterable[Change], sources: dict[str, dict[str, Any]]
) -> list[Managed]:
    """What the tracker needs from one reconcile's changes; ``sources`` maps origins to rendered objects."""
    return [
        Managed(
            sync=sync,
            policy=policy,
            desired=c.desired,
            expected=expected_state(c),
            resource=c.resource,
            source=sources[c.desired.origin],
        )
        for c in changes
    ]


class DriftTracker:
    """Watches one cluster's managed objects and handles their drift; see the module docstring."""

    def __init__(
        self,
        *,
        fleet: str,
        client: KubeClient,
        applier: Applier,
        lock: asyncio.Lock,
        observer: DriftObserver | None = None,
    ) -> None:
        self._fleet, self._client, self._applier, self._lock = fleet, client, applier, lock
        self._observer = observer
        self.managed: dict[ObjRef, Managed] = {}
        self.drifted: dict[ObjRef, str] = {}
        self._watches: dict[tuple[str, str, str], tuple[ResourceWatch, asyncio.Task[None]]] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._suspects: dict[ObjRef, str] = {}
        self._wake = asyncio.Event()
        self._last_seen: dict[ObjRef, dict[str, Any] | None] = {}
        self._diverged: set[ObjRef] = (
            set()
        )  # last seen not as expected (drift suspected, confirmed or ignored)

    # -- registration (called by the reconciler, under the cluster lock) ---------

    def register(self, sync: str, items: list[Managed]) -> None:
        """Replace what ``sync`` manages with ``items``; start watches for new resource types."""
        self.forget(sync)
        for item in items:
            ref = item.desired.ref
            self.managed[ref] = item
            self._suspects.pop(ref, None)
            self._diverged.discard(ref)
            self._ensure_watch(item.resource)

    def forget(self, sync: str) -> None:
        for ref in [r for r, m in self.managed.items() if m.sync == sync]:
            del self.managed[ref]
            self.drifted.pop(ref, None)
            self._suspects.pop(ref, None)
            self._diverged.discard(ref)

    def drifted_count(self, sync: str) -> int:
        return sum(1 for ref in self.drifted if ref in self.managed and self.managed[ref].sync == sync)

    def known_good(self, sync: str) -> dict[ObjRef, Managed]:
        """Objects of ``sync`` the watches vouch for, by their rendered identity; empty unless all are.

        The reconciler skips the dry run of every rendered object that is
        identical to one of these: the server already has it exactly so.
        """
        if not self.vouches_for(sync):
            return {}
        return {ref_of(m.source): m for m in self.managed.values() if m.sync == sync}

    def vouches_for(self, sync: str) -> bool:
        """True when every watch behind ``sync`` is established and nothing of it is suspected or drifted."""
        items = [m for m in self.managed.values() if m.sync == sync]
        if not items:
            return False
        for item in items:
            watch = self._watches.get(_key(item.resource))
            if watch is None or not watch[0].synced.is_set():
                return False
            if item.desired.ref in self._diverged:
                return False
        return True

    # -- running -------------------------------------------------------------

    def start(self, tasks: asyncio.TaskGroup) -> None:
        """Run the confirmation loop, and every watch started later, as named tasks of ``tasks``."""
        self._tasks = tasks
        self._runner = tasks.create_task(self.run(), name=f"drift/{self._client.cluster}")

    def stop(self) -> None:
        """Cancel the confirmation loop and every watch (the task group awaits them)."""
        if self._runner is not None:
            self._runner.cancel()
        for _, task in self._watches.values():
            task.cancel()
        self._watches.clear()
        self._tasks = None

    async def run(self) -> None:
        """Confirm suspicions until cancelled."""
        while True:
            await self._wake.wait()
            await asyncio.sleep(DEBOUNCE)  # let a burst of edits settle into one check
            self._wake.clear()
            suspects, self._suspects = self._suspects, {}
            for ref, reason in suspects.items():
                try:
                    await self._confirm(ref, reason)
                except KubeError as exc:  # the cluster went away: the next reconcile sees it
                    log.warning("cluster %s: drift of %s not confirmed: %s", self._client.cluster, ref, exc)
                except Fenced as exc:  # another replica owns the cluster now (the applier's guard)
                    log.info("cluster %s: drift of %s left alone: %s", self._client.cluster, ref, exc)

    def _ensure_watch(self, resource: Resource) -> None:
        key = _key(resource)
        if key in self._watches or self._tasks is None:
            return
        watch = ResourceWatch(
            self._client, resource, f"{LABEL_FLEET}={self._fleet}",
            on_event=self._on_event, on_list=lambda items: self._on_list(resource, items),
        )  # fmt: skip
        task = self._tasks.create_task(watch.run(), name=f"watch/{self._client.cluster}/{watch.name}")
        self._watches[key] = (watch, task)

    # -- events --------------------------------------------------------------

    async def _on_event(self, kind: str, obj: dict[str, Any]) -> None:
        ref = ref_of(obj)
        if ref not in self.managed:
            return
        self._observe(ref, None if kind == "DELETED" else obj)

    async def _on_list(self, resource: Resource, items: list[dict[str, Any]]) -> None:
        present = {ref_of(o): o for o in items}
        for ref, item in list(self.managed.items()):
            if _key(item.resource) == _key(resource):
                self._observe(ref, present.get(ref))

    def _observe(self, ref: ObjRef, live: dict[str, Any] | None) -> None:
        self._last_seen[ref] = live
        reason = self._reason(self.managed[ref], live)
        if reason is None:
            self._diverged.discard(ref)
            if self.drifted.pop(ref, None) is not None:
                log.info("cluster %s: %s matches git again", self._client.cluster, ref)
                self._notify(self.managed[ref].sync, ref, "cleared", "matches git again")
            return
        self._diverged.add(ref)  # even under `ignore`: the watches no longer vouch for it
        if self.managed[ref].policy != DriftPolicy.IGNORE:
            log.debug("cluster %s: %s suspected of drift: %s", self._client.cluster, ref, reason)
            self._suspects[ref] = reason
            self._wake.set()

    @staticmethod
    def _reason(item: Managed, live: dict[str, Any] | None) -> str | None:
        if live is None:
            return "deleted"
        edits = hand_edits(live)
        if edits:
            return f"edited by {', '.join(edits)}"
        path = first_difference(item.expected, live)
        return None if path is None else f"{path} changed"

    # -- confirmation ------------------------------------------------------------

    async def _confirm(self, ref: ObjRef, reason: str) -> None:
        async with self._lock:
            item = self.managed.get(ref)
            if item is None or (ref in self._last_seen and self._reason(item, self._last_seen[ref]) is None):
                return  # re-registered or back in line while we waited for the lock
            if item.policy == DriftPolicy.CORRECT:
                await self._correct(ref, item, reason)
            elif item.policy == DriftPolicy.REPORT:
                await self._report(ref, item, reason)

    async def _correct(self, ref: ObjRef, item: Managed, reason: str) -> None:
        try:
            (change,) = await self._applier.apply([item.desired])
        except ApplyFailed as exc:
            self.drifted[ref] = f"{reason}; correcting failed: {exc}"
            self._notify(item.sync, ref, "failed", self.drifted[ref])
            log.warning(
                "cluster %s: drift of %s (%s) could not be corrected: %s",
                self._client.cluster,
                ref,
                reason,
                exc,
            )
            return
        item.expected = expected_state(change)
        self._diverged.discard(ref)
        if change.action == "unchanged":
            return  # the server says it matches: a normalisation the local check did not know
        self._notify(item.sync, ref, "corrected", reason)
        self.drifted.pop(ref, None)
        fields = {"cluster": self._client.cluster, "sync": item.sync}
        log.info("cluster %s: drift of %s corrected (%s)", self._client.cluster, ref, reason, extra=fields)

    async def _report(self, ref: ObjRef, item: Managed, reason: str) -> None:
        if reason.startswith("edited by") or await self._applier.differs(item.desired):
            if ref not in self.drifted:
                self._notify(item.sync, ref, "reported", reason)
                log.warning(
                    "cluster %s: drift of %s reported, not corrected (%s)", self._client.cluster, ref, reason
                )
            self.drifted[ref] = reason

    def _notify(self, sync: str, ref: ObjRef, what: str, reason: str) -> None:
        if self._observer is not None:
            self._observer(sync, str(ref), ref.kind, what, reason)


def _key(resource: Resource) -> tuple[str, str, str]:
    return resource.group, resource.version, resource.plural
