"""Health of applied objects, kstatus-style, and waiting until they are healthy.

Applying an object only says the API server stored it; whether a Deployment
rolled out, a Job finished or a CRD is served is known later, from the status
its controller writes. :func:`assess` reads one live object and answers with
one of three words, the semantics of kstatus (sigs.k8s.io/cli-utils), which
Flux and ``kubectl apply --wait``-like tools share:

``current``
    The controller has seen the latest spec and the cluster is what it asked
    for: all replicas updated and available, the Job complete, the claim
    bound, the CRD established. Nothing more is going to happen on its own.
``in_progress``
    Not there *yet*, and it may still get there: a rollout under way, a spec
    change the controller has not observed (``metadata.generation`` ahead of
    ``status.observedGeneration``), an object being deleted, a
    ``Ready=False`` condition. Waiting longer may help; a deadline decides.
``failed``
    The controller itself says it gave up, so waiting cannot help: a
    Deployment past its ``progressDeadlineSeconds``, a failed Job, a CRD
    whose names conflict, a failed Pod, ``Stalled=True``. :func:`wait_healthy`
    stops at once on it.

Only a controller's own verdict counts as ``failed``; guesses from transient
signals (``Ready=False`` with a reason mentioning failure, a crash-looping
Pod) stay ``in_progress`` and are named in the message, because they often
recover — a timeout then reports them with the reason. Deliberate choices
beyond kstatus, each because waiting could never end otherwise:

- a suspended Job or a paused Deployment is ``current`` (git asked for it to
  stand still);
- a running Job is ``in_progress`` until Complete (kstatus calls a started
  Job current; fleetd waits for it to finish, as a migration Job needs);
- a Job's ``FailureTarget`` (set before ``Failed`` while its pods stop) is
  already ``failed``;
- a ReplicaSet with ``ReplicaFailure=True`` (pods cannot be created: quota,
  admission) is ``failed`` — a Deployment in that state is left to its own
  progress deadline;
- a PersistentVolumeClaim whose phase is ``Lost`` is ``failed``.

Kinds without a rule are ``current`` once they exist, unless they carry the
standard ``Ready`` condition: ``True`` is current, ``False``/``Unknown`` (or a
``Ready`` older than the spec) in progress.

:func:`wait_healthy` polls — one GET per object still not current, the
interval growing from ``interval`` to about 2 s — until all are current, one
is failed (:class:`HealthFailed`) or the deadline passes
(:class:`HealthTimeout`). Polling is simple and cheap for the handful to
hundreds of objects of one sync; watches come with drift detection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fleetd.errors import FleetdError
from fleetd.kube.client import ApiError, KubeClient, NotFound, Unreachable
from fleetd.kube.discovery import Discovery
from fleetd.kube.objects import BUILTIN_GROUPS, Entry, ObjRef, ref_of
from fleetd.util.durations import format_duration

Status = Literal["current", "in_progress", "failed"]
_Verdict = tuple[Status, str]
_Rule = Callable[[dict[str, Any]], _Verdict]

#: Polling slows down to this many seconds between reads of a pending object.
MAX_INTERVAL = 2.0
#: Workload kinds whose controllers always write status.observedGeneration.
_OBSERVED_KINDS = frozenset({("apps", k) for k in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet")})


@dataclass(frozen=True, slots=True)
class Health:
    """The health of one object and why, in words for the user (the message names the object)."""

    status: Status
    message: str

    @property
    def current(self) -> bool:
        return self.status == "current"


class HealthFailed(FleetdError):
    """Objects failed in a way waiting cannot mend; ``failed`` says which and why."""

    def __init__(self, cluster: str, failed: Mapping[ObjRef, Health]) -> None:
        super().__init__(f"cluster {cluster}: " + _listing(f"{len(failed)} objects failed", failed))
        self.cluster = cluster
        self.failed = dict(failed)


class HealthTimeout(FleetdError):
    """Objects were not healthy in time; ``pending`` says which and why."""

    def __init__(self, cluster: str, timeout: float, pending: Mapping[ObjRef, Health]) -> None:
        head = f"timed out after {format_duration(timeout)} waiting for"
        listing = _listing(f"{head} {len(pending)} objects", pending, single=f"{head}: ")
        super().__init__(f"cluster {cluster}: {listing}")
        self.cluster = cluster
        self.timeout = timeout
        self.pending = dict(pending)


def _listing(head: str, healths: Mapping[ObjRef, Health], *, single: str = "") -> str:
    messages = [h.message for _, h in sorted(healths.items())]
    if len(messages) == 1:
        return single + messages[0]
    return head + ":\n" + "\n".join(f"  {m}" for m in messages)


# -- evaluation ---------------------------------------------------------------


def assess(obj: dict[str, Any]) -> Health:
    """The health of one live object (as read from the API server)."""
    ref = ref_of(obj)
    rule = _RULES.get((ref.group, ref.kind), _ready_condition)
    status, detail = _generic(obj, ref) or rule(obj)
    label = label_of(ref)
    return Health(status, f"{label} failed: {detail}" if status == "failed" else f"{label}: {detail}")


def label_of(ref: ObjRef) -> str:
    """``Deployment demo/web``; custom kinds keep their group: ``Gadget.example.com demo/g1``."""
    kind = ref.kind if ref.group in BUILTIN_GROUPS else f"{ref.kind}.{ref.group}"
    return f"{kind} {ref.namespace}/{ref.name}" if ref.namespace else f"{kind} {ref.name}"


def _generic(obj: dict[str, Any], ref: ObjRef) -> _Verdict | None:
    """Checks for every kind: deletion, unobserved spec, and the Stalled/Reconciling conditions."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "in_progress", f"being deleted (since {meta['deletionTimestamp']})"
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if observed is None and (ref.group, ref.kind) in _OBSERVED_KINDS:
        return "in_progress", "not yet observed by its controller"
    if isinstance(generation, int) and isinstance(observed, int) and generation > observed:
        return "in_progress", f"generation {generation} not yet observed (controller saw {observed})"
    conditions = _conditions(obj)
    if stalled := _true(conditions, "Stalled"):
        return "failed", f"stalled: {_why(stalled)}"
    if reconciling := _true(conditions, "Reconciling"):
        return "in_progress", f"reconciling: {_why(reconciling)}"
    return None


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    items = (obj.get("status") or {}).get("conditions") or []
    return {str(c.get("type")): c for c in items if isinstance(c, dict)}


def _true(conditions: dict[str, dict[str, Any]], kind: str) -> dict[str, Any] | None:
    """The condition of type ``kind`` if its status is True, else None."""
    condition = conditions.get(kind)
    return condition if condition is not None and condition.get("status") == "True" else None


def _why(condition: dict[str, Any]) -> str:
    parts = [str(condition[k]) for k in ("reason", "message") if condition.get(k)]
    return ": ".join(parts) or "no reason given"


def _count(obj: dict[str, Any], field: str, default: int = 0) -> int:
    value = (obj.get("status") or {}).get(field)
    return value if isinstance(value, int) else default


def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj.get("spec") or {}
    return spec


def _wanted(obj: dict[str, Any]) -> int:
    replicas = _spec(obj).get("replicas")
    return replicas if isinstance(replicas, int) else 1


def _first_shortfall(checks: Sequence[tuple[bool, str]]) -> str | None:
    return next((text for short, text in checks if short), None)


# -- workloads ----------------------------------------------------------------


def _deployment(obj: dict[str, Any]) -> _Verdict:
    n, conditions = _wanted(obj), _conditions(obj)
    progressing = conditions.get("Progressing") or {}
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        available = f"{_count(obj, 'availableReplicas')} of {n} replicas available"
        return "failed", f"can no longer progress: {_why(progressing)} ({available})"
    if _spec(obj).get("paused"):
        return "current", "paused (rollout not waited for)"
    short = _first_shortfall(_replica_checks(obj, n) + _deployment_conditions(conditions))
    if short is None:
        return "current", f"{n} of {n} replicas updated and available"
    reason = progressing.get("reason")
    return "in_progress", f"{short} (Progressing: {reason})" if reason else short


def _replica_checks(obj: dict[str, Any], n: int) -> list[tuple[bool, str]]:
    updated, replicas = _count(obj, "updatedReplicas"), _count(obj, "replicas")
    available, ready = _count(obj, "availableReplicas"), _count(obj, "readyReplicas")
    return [
        (updated < n, f"{updated} of {n} replicas updated"),
        (replicas > n, f"{replicas - n} old replica(s) still to be removed"),
        (available < n, f"{available} of {n} replicas available"),
        (ready < n, f"{ready} of {n} replicas ready"),
    ]


def _deployment_conditions(conditions: dict[str, dict[str, Any]]) -> list[tuple[bool, str]]:
    progressing = conditions.get("Progressing") or {}
    return [
        (not _true(conditions, "Available"), "not Available"),
        (progressing.get("reason") != "NewReplicaSetAvailable", "rollout not finished"),
    ]


def _statefulset(obj: dict[str, Any]) -> _Verdict:
    n, strategy = _wanted(obj), _spec(obj).get("updateStrategy") or {}
    replicas, ready = _count(obj, "replicas"), _count(obj, "readyReplicas")
    available = _count(obj, "availableReplicas", default=ready)
    short = _first_shortfall(
        [
            (replicas < n, f"{replicas} of {n} replicas created"),
            (ready < n, f"{ready} of {n} replicas ready"),
            (available < n, f"{available} of {n} replicas available"),
            (replicas > n, f"{replicas - n} replica(s) above {n} still to be removed"),
        ]
    )
    if short is not None:
        return "in_progress", short
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return "current", f"{n} replicas ready (OnDelete: pods update when deleted)"
    return _statefulset_rollout(obj, n, int((strategy.get("rollingUpdate") or {}).get("partition") or 0))


def _statefulset_rollout(obj: dict[str, Any], n: int, partition: int) -> _Verdict:
    updated, status = _count(obj, "updatedReplicas"), obj.get("status") or {}
    if partition > 0:
        if updated < n - partition:
            return "in_progress", f"{updated} of {n - partition} replicas updated (partition {partition})"
        return "current", f"partitioned rollout complete ({updated} replicas updated)"
    if updated < n:
        return "in_progress", f"{updated} of {n} replicas updated"
    if status.get("currentRevision") != status.get("updateRevision"):
        return "in_progress", f"rolling out revision {status.get('updateRevision')}"
    return "current", f"{n} of {n} replicas updated and ready"


def _daemonset(obj: dict[str, Any]) -> _Verdict:
    desired = _count(obj, "desiredNumberScheduled")
    on_delete = (_spec(obj).get("updateStrategy") or {}).get("type") == "OnDelete"
    scheduled, updated = _count(obj, "currentNumberScheduled"), _count(obj, "updatedNumberScheduled")
    available, ready = _count(obj, "numberAvailable"), _count(obj, "numberReady")
    misscheduled = _count(obj, "numberMisscheduled")
    short = _first_shortfall(
        [
            (scheduled < desired, f"{scheduled} of {desired} nodes run a pod"),
            (not on_delete and updated < desired, f"{updated} of {desired} pods updated"),
            (available < desired, f"{available} of {desired} pods available"),
            (ready < desired, f"{ready} of {desired} pods ready"),
            (misscheduled > 0, f"{misscheduled} pod(s) still on nodes that should not run one"),
        ]
    )
    if short is None:
        return "current", f"{desired} of {desired} pods updated and available"
    return "in_progress", short


def _replicaset(obj: dict[str, Any]) -> _Verdict:
    if failure := _true(_conditions(obj), "ReplicaFailure"):
        return "failed", f"cannot create pods: {_why(failure)}"
    n, replicas = _wanted(obj), _count(obj, "replicas")
    available, ready = _count(obj, "availableReplicas"), _count(obj, "readyReplicas")
    short = _first_shortfall(
        [
            (replicas < n, f"{replicas} of {n} replicas created"),
            (available < n, f"{available} of {n} replicas available"),
            (ready < n, f"{ready} of {n} replicas ready"),
            (replicas > n, f"{replicas - n} replica(s) above {n} still to be removed"),
        ]
    )
    return ("in_progress", short) if short else ("current", f"{n} of {n} replicas available")


def _job(obj: dict[str, Any]) -> _Verdict:
    conditions = _conditions(obj)
    if failure := _true(conditions, "Failed") or _true(conditions, "FailureTarget"):
        return "failed", _why(failure)
    succeeded = _count(obj, "succeeded")
    completions = _spec(obj).get("completions")
    of = f" of {completions}" if isinstance(completions, int) else ""
    if _true(conditions, "Complete"):
        return "current", f"complete ({succeeded}{of} succeeded)"
    if _spec(obj).get("suspend"):
        return "current", "suspended (not waited for)"
    if not (obj.get("status") or {}).get("startTime"):
        return "in_progress", "not started yet"
    active, failed = _count(obj, "active"), _count(obj, "failed")
    return "in_progress", f"running: {active} active, {succeeded}{of} succeeded, {failed} failed"


def _pod(obj: dict[str, Any]) -> _Verdict:
    status = obj.get("status") or {}
    phase, conditions = status.get("phase") or "Unknown", _conditions(obj)
    if phase == "Succeeded":
        return "current", "succeeded"
    if phase == "Failed":
        return "failed", _why(status) if status.get("reason") or status.get("message") else "phase Failed"
    scheduled = conditions.get("PodScheduled")
    if scheduled and scheduled.get("status") == "False":
        return "in_progress", f"not scheduled: {_why(scheduled)}"
    if phase == "Running" and _true(conditions, "Ready"):
        return "current", "running and ready"
    waiting = _waiting_reasons(status)
    return "in_progress", f"{phase}, not ready" + (f" ({waiting})" if waiting else "")


def _waiting_reasons(status: dict[str, Any]) -> str:
    containers = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    reasons = [
        f"{c.get('name')}: {c['state']['waiting'].get('reason', 'waiting')}"
        for c in containers
        if (c.get("state") or {}).get("waiting")
    ]
    return ", ".join(reasons)


# -- other built-in kinds -----------------------------------------------------


def _pvc(obj: dict[str, Any]) -> _Verdict:
    status, spec = obj.get("status") or {}, _spec(obj)
    phase = status.get("phase") or "Pending"
    if phase == "Bound":
        return "current", f"bound to volume {spec.get('volumeName', '?')}"
    if phase == "Lost":
        return "failed", f"its volume {spec.get('volumeName', '?')} is lost"
    hint = " (a WaitForFirstConsumer storage class binds it only once a pod uses it)"
    return "in_progress", f"phase {phase}, not yet Bound{hint}"


def _service(obj: dict[str, Any]) -> _Verdict:
    kind = _spec(obj).get("type") or "ClusterIP"
    if kind != "LoadBalancer":
        return "current", f"type {kind}"
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    if not ingress:
        return "in_progress", "waiting for a load balancer address (status.loadBalancer.ingress is empty)"
    addresses = ", ".join(str(i.get("ip") or i.get("hostname") or "?") for i in ingress)
    return "current", f"load balancer at {addresses}"


def _crd(obj: dict[str, Any]) -> _Verdict:
    conditions = _conditions(obj)
    names = conditions.get("NamesAccepted")
    if names and names.get("status") == "False":
        return "failed", f"names not accepted: {_why(names)}"
    if _true(conditions, "Established"):
        return "current", "established"
    established = conditions.get("Established")
    return "in_progress", "not yet Established" + (f" ({_why(established)})" if established else "")


def _namespace(obj: dict[str, Any]) -> _Verdict:
    phase = (obj.get("status") or {}).get("phase") or "Unknown"
    return ("current", "active") if phase == "Active" else ("in_progress", f"phase {phase}")


def _ready_condition(obj: dict[str, Any]) -> _Verdict:
    """Any other kind: the standard Ready condition if it has one, else current once it exists."""
    ready = _conditions(obj).get("Ready")
    if ready is None:
        return "current", "exists"
    generation, seen = (obj.get("metadata") or {}).get("generation"), ready.get("observedGeneration")
    if isinstance(generation, int) and isinstance(seen, int) and seen < generation:
        return "in_progress", f"Ready is stale (for generation {seen}, spec is at {generation})"
    if ready.get("status") == "True":
        return "current", f"Ready ({_why(ready)})"
    state = "not Ready" if ready.get("status") == "False" else "Ready is Unknown"
    return "in_progress", f"{state}: {_why(ready)}"


_RULES: dict[tuple[str, str], _Rule] = {
    ("apps", "Deployment"): _deployment,
    ("apps", "StatefulSet"): _statefulset,
    ("apps", "DaemonSet"): _daemonset,
    ("apps", "ReplicaSet"): _replicaset,
    ("batch", "Job"): _job,
    ("", "Pod"): _pod,
    ("", "PersistentVolumeClaim"): _pvc,
    ("", "Service"): _service,
    ("", "Namespace"): _namespace,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _crd,
}


# -- waiting ------------------------------------------------------------------


async def wait_healthy(
    client: KubeClient,
    discovery: Discovery,
    refs: Sequence[tuple[ObjRef, str]],
    *,
    timeout: float,
    interval: float = 0.5,
    on_progress: Callable[[dict[ObjRef, Health]], None] | None = None,
    concurrency: int = 8,
) -> dict[ObjRef, Health]:
    """Poll the objects ``refs`` (each with the version to read it at) until all are current.

    Returns every object's final health. Raises :class:`HealthFailed` as soon as
    one is failed and :class:`HealthTimeout` after ``timeout`` seconds; an API
    error other than a transient one (unreachable, 429, 5xx) is raised as is.
    ``on_progress`` gets a copy of the map after every round of reads.
    """
    waiter = _Waiter(client, discovery, dict(refs), concurrency)
    timer = asyncio.timeout(timeout)
    try:
        async with timer:
            await waiter.run(interval, on_progress)
    except TimeoutError:
        if not timer.expired():
            raise
        raise HealthTimeout(client.cluster, timeout, waiter.pending()) from None
    return dict(waiter.healths)


class _Waiter:
    """The state of one wait: the last health of every object, and how to read one."""

    def __init__(
        self, client: KubeClient, discovery: Discovery, versions: dict[ObjRef, str], concurrency: int
    ) -> None:
        self._client, self._discovery, self._versions = client, discovery, versions
        self._limit = asyncio.Semaphore(concurrency)
        self.healths = {ref: Health("in_progress", f"{label_of(ref)}: not read yet") for ref in versions}

    def pending(self) -> dict[ObjRef, Health]:
        return {ref: h for ref, h in self.healths.items() if not h.current}

    async def run(self, interval: float, on_progress: Callable[[dict[ObjRef, Health]], None] | None) -> None:
        delay = interval
        while pending := self.pending():
            fresh = await self._read_all(list(pending))
            self.healths.update(fresh)
            if on_progress is not None:
                on_progress(dict(self.healths))
            failed = {ref: h for ref, h in fresh.items() if h.status == "failed"}
            if failed:
                raise HealthFailed(self._client.cluster, failed)
            if self.pending():
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, max(interval, MAX_INTERVAL))

    async def _read_all(self, refs: list[ObjRef]) -> dict[ObjRef, Health]:
        try:
            async with asyncio.TaskGroup() as group:
                tasks = {ref: group.create_task(self._read(ref)) for ref in refs}
        except* FleetdError as errors:
            raise errors.exceptions[0] from None  # one clear error, not a group of them
        return {ref: task.result() for ref, task in tasks.items()}

    async def _read(self, ref: ObjRef) -> Health:
        api_version = Entry(ref, self._versions[ref]).api_version
        async with self._limit:
            try:
                resource = await self._discovery.resolve(api_version, ref.kind)
                obj = await self._client.request("GET", resource.path(ref.namespace, ref.name))
            except NotFound:
                return Health("in_progress", f"{label_of(ref)}: not found (deleted, or not created yet)")
            except (Unreachable, ApiError) as exc:
                if isinstance(exc, ApiError) and not _transient(exc):
                    raise
                return Health("in_progress", f"{label_of(ref)}: cannot read it: {exc.detail}")
        return assess(obj)


def _transient(exc: ApiError) -> bool:
    return exc.status == 429 or exc.status >= 500
