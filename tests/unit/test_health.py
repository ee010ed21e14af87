"""kstatus-style health of live objects: every rule, on status documents as real controllers write them.

The documents spelled out in full (``NEVER_AVAILABLE``, ``JOB_PAST_DEADLINE``,
``RS_OVER_QUOTA``, ``CRD_NAME_CONFLICT``) were captured from the test bed's full
profile (kube-controller-manager, kube-scheduler and kwok, Kubernetes
v1.36); the builders produce the same shapes with one field changed.
"""

from __future__ import annotations

from typing import Any

import pytest

from fleetd.kube.objects import ObjRef
from fleetd.reconcile.health import Health, HealthFailed, HealthTimeout, assess, label_of

T0, T1 = "2026-11-22T04:25:56Z", "2026-11-22T04:26:02Z"


def ok(message: str) -> Health:
    return Health("current", message)


def waiting(message: str) -> Health:
    return Health("in_progress", message)


def failed(message: str) -> Health:
    return Health("failed", message)


def table(cases: dict[str, tuple[dict[str, Any], Health]]) -> pytest.MarkDecorator:
    """Parametrize ``(doc, expected)`` from ``{case id: (live object, expected health)}``."""
    return pytest.mark.parametrize(("doc", "expected"), list(cases.values()), ids=list(cases))


def obj(
    api_version: str,
    kind: str,
    name: str,
    *,
    namespace: str = "demo",
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    generation: int | None = 1,
    **meta: Any,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, **meta}
    if namespace:
        metadata["namespace"] = namespace
    if generation is not None:
        metadata["generation"] = generation
    doc: dict[str, Any] = {"apiVersion": api_version, "kind": kind, "metadata": metadata}
    if spec is not None:
        doc["spec"] = spec
    if status is not None:
        doc["status"] = status
    return doc


def cond(type_: str, status: str, reason: str = "", message: str = "", **extra: Any) -> dict[str, Any]:
    c = {"type": type_, "status": status, "lastTransitionTime": T0, **extra}
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


# -- verbatim documents from the test bed ------------------------------------

NEVER_AVAILABLE = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "never", "namespace": "demo", "generation": 1},
    "spec": {"replicas": 2, "progressDeadlineSeconds": 5},
    "status": {
        "conditions": [
            {
                "lastTransitionTime": "2026-11-22T04:25:56Z",
                "lastUpdateTime": "2026-11-22T04:25:56Z",
                "message": "Deployment does not have minimum availability.",
                "reason": "MinimumReplicasUnavailable",
                "status": "False",
                "type": "Available",
            },
            {
                "lastTransitionTime": "2026-11-22T04:26:02Z",
                "lastUpdateTime": "2026-11-22T04:26:02Z",
                "message": 'ReplicaSet "never-779f84497d" has timed out progressing.',
                "reason": "ProgressDeadlineExceeded",
                "status": "False",
                "type": "Progressing",
            },
        ],
        "observedGeneration": 1,
        "replicas": 2,
        "terminatingReplicas": 0,
        "unavailableReplicas": 2,
        "updatedReplicas": 2,
    },
}
JOB_PAST_DEADLINE_CONDITIONS = [
    {
        "lastProbeTime": "2026-11-22T04:25:57Z",
        "lastTransitionTime": "2026-11-22T04:25:57Z",
        "message": "Job was active longer than specified deadline",
        "reason": "DeadlineExceeded",
        "status": "True",
        "type": "FailureTarget",
    },
    {
        "lastProbeTime": "2026-11-22T04:25:58Z",
        "lastTransitionTime": "2026-11-22T04:25:58Z",
        "message": "Job was active longer than specified deadline",
        "reason": "DeadlineExceeded",
        "status": "True",
        "type": "Failed",
    },
]
JOB_PAST_DEADLINE = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "migrate", "namespace": "demo", "generation": 1},
    "spec": {"activeDeadlineSeconds": 1, "backoffLimit": 0, "completions": 1, "parallelism": 1},
    "status": {
        "conditions": JOB_PAST_DEADLINE_CONDITIONS,
        "failed": 1,
        "ready": 0,
        "startTime": "2026-11-22T04:25:56Z",
        "terminating": 0,
        "uncountedTerminatedPods": {},
    },
}
RS_OVER_QUOTA = {
    "apiVersion": "apps/v1",
    "kind": "ReplicaSet",
    "metadata": {"name": "rs", "namespace": "q", "generation": 1},
    "spec": {"replicas": 2},
    "status": {
        "conditions": [
            {
                "lastTransitionTime": "2026-11-22T04:26:28Z",
                "message": 'pods "rs-s5j4r" is forbidden: exceeded quota: none, requested: pods=1, '
                "used: pods=0, limited: pods=0",
                "reason": "FailedCreate",
                "status": "True",
                "type": "ReplicaFailure",
            }
        ],
        "observedGeneration": 1,
        "replicas": 0,
        "terminatingReplicas": 0,
    },
}
CRD_NAME_CONFLICT = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.ex.com", "generation": 1},
    "spec": {"group": "ex.com", "names": {"plural": "widgets", "singular": "widget", "kind": "Gadget"}},
    "status": {
        "conditions": [
            {
                "lastTransitionTime": "2026-11-22T04:26:21Z",
                "message": '"GadgetList" is already in use',
                "reason": "ListKindConflict",
                "status": "False",
                "type": "NamesAccepted",
            },
            {
                "lastTransitionTime": "2026-11-22T04:26:21Z",
                "message": "not all names are accepted",
                "reason": "NotAccepted",
                "status": "False",
                "type": "Established",
            },
        ],
    },
}

# -- builders -------------------------------------------------------------------

AVAILABLE = cond("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
UNAVAILABLE = cond("Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum.")
ROLLED_OUT = cond(
    "Progressing", "True", "NewReplicaSetAvailable", 'ReplicaSet "web-5" has successfully progressed.'
)
ROLLING = cond("Progressing", "True", "ReplicaSetUpdated", 'ReplicaSet "web-8" is progressing.')
PAUSED = cond("Progressing", "Unknown", "DeploymentPaused", "Deployment is paused")


def deployment(*, generation: int = 1, want: int = 2, paused: bool = False, **status: Any) -> dict[str, Any]:
    """A rolled-out Deployment of ``want`` replicas; keyword arguments override its status fields."""
    full: dict[str, Any] = {"observedGeneration": 1, "replicas": want, "updatedReplicas": want}
    full |= {"readyReplicas": want, "availableReplicas": want, "terminatingReplicas": 0}
    full["conditions"] = [AVAILABLE, ROLLED_OUT]
    spec = {"replicas": want, "progressDeadlineSeconds": 600, "paused": paused}
    return obj("apps/v1", "Deployment", "web", spec=spec, status=full | status, generation=generation)


def statefulset(*, strategy: dict[str, Any] | None = None, want: int = 2, **status: Any) -> dict[str, Any]:
    """A rolled-out StatefulSet; keyword arguments override its status fields."""
    full: dict[str, Any] = {"observedGeneration": 1, "replicas": want, "readyReplicas": want}
    full |= {"availableReplicas": want, "currentReplicas": want, "updatedReplicas": want}
    full |= {"currentRevision": "db-854b7c8d96", "updateRevision": "db-854b7c8d96", "collisionCount": 0}
    update = strategy or {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    spec = {"replicas": want, "serviceName": "db", "updateStrategy": update}
    return obj("apps/v1", "StatefulSet", "db", spec=spec, status=full | status)


def daemonset(*, strategy: str = "RollingUpdate", **status: Any) -> dict[str, Any]:
    """A DaemonSet rolled out on 3 nodes; keyword arguments override its status fields."""
    full: dict[str, Any] = {"observedGeneration": 1, "desiredNumberScheduled": 3, "currentNumberScheduled": 3}
    full |= {"updatedNumberScheduled": 3, "numberAvailable": 3, "numberReady": 3, "numberMisscheduled": 0}
    spec = {"updateStrategy": {"type": strategy}}
    return obj("apps/v1", "DaemonSet", "agent", spec=spec, status=full | status)


def replicaset(**status: Any) -> dict[str, Any]:
    full = {"observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "availableReplicas": 2} | status
    return obj("apps/v1", "ReplicaSet", "rs", namespace="q", spec={"replicas": 2}, status=full)


def job(status: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return obj("batch/v1", "Job", "migrate", spec={"completions": 1, "parallelism": 1, **spec}, status=status)


def pod(**status: Any) -> dict[str, Any]:
    return obj("v1", "Pod", "p", status=status, generation=None)


def pvc(phase: str, **spec: Any) -> dict[str, Any]:
    return obj("v1", "PersistentVolumeClaim", "data", generation=None, spec=spec, status={"phase": phase})


def service(kind: str, **load_balancer: Any) -> dict[str, Any]:
    status = {"loadBalancer": load_balancer}
    return obj("v1", "Service", "web", generation=None, spec={"type": kind}, status=status)


def crd(*conditions: dict[str, Any]) -> dict[str, Any]:
    spec = {"group": "ex.com", "names": {"plural": "gadgets", "kind": "Gadget"}}
    status = {"conditions": list(conditions)}
    kind, name = "CustomResourceDefinition", "gadgets.ex.com"
    return obj("apiextensions.k8s.io/v1", kind, name, namespace="", spec=spec, status=status)


def namespace(phase: str) -> dict[str, Any]:
    return obj("v1", "Namespace", "demo", namespace="", generation=None, status={"phase": phase})


def gadget(*conditions: dict[str, Any], generation: int = 1, observed: int | None = None) -> dict[str, Any]:
    """A custom resource (ex.com/v1 Gadget) with the given status conditions."""
    status: dict[str, Any] = {"conditions": list(conditions)}
    if observed is not None:
        status["observedGeneration"] = observed
    return obj("ex.com/v1", "Gadget", "g1", spec={"size": 1}, status=status, generation=generation)


# -- rules for every object -----------------------------------------------------


@table(
    {
        "spec-change-not-yet-observed": (
            deployment(generation=2),
            waiting("Deployment demo/web: generation 2 not yet observed (controller saw 1)"),
        ),
        "workload-never-seen-by-its-controller": (
            obj("apps/v1", "Deployment", "web", spec={"replicas": 2}),
            waiting("Deployment demo/web: not yet observed by its controller"),
        ),
        "custom-resource-not-yet-observed": (
            gadget(cond("Ready", "True", "Succeeded"), generation=3, observed=2),
            waiting("Gadget.ex.com demo/g1: generation 3 not yet observed (controller saw 2)"),
        ),
        "being-deleted": (
            obj("v1", "ConfigMap", "cfg", generation=None, deletionTimestamp=T1),
            waiting(f"ConfigMap demo/cfg: being deleted (since {T1})"),
        ),
        "stalled": (
            gadget(cond("Stalled", "True", "InvalidSpec", "size must be positive"), cond("Ready", "False")),
            failed("Gadget.ex.com demo/g1 failed: stalled: InvalidSpec: size must be positive"),
        ),
        "reconciling": (
            gadget(cond("Reconciling", "True", "Progressing", "creating volume"), cond("Ready", "True")),
            waiting("Gadget.ex.com demo/g1: reconciling: Progressing: creating volume"),
        ),
    }
)
def test_unobserved_specs_deletion_and_stalled_or_reconciling_conditions_apply_to_every_kind(
    doc: dict[str, Any], expected: Health
) -> None:
    assert assess(doc) == expected


# -- workloads ---------------------------------------------------------------------


@table(
    {
        "rolled-out": (deployment(), ok("Deployment demo/web: 2 of 2 replicas updated and available")),
        "mid-rollout": (
            deployment(replicas=3, updatedReplicas=1, conditions=[AVAILABLE, ROLLING]),
            waiting("Deployment demo/web: 1 of 2 replicas updated (Progressing: ReplicaSetUpdated)"),
        ),
        "old-replicas-left": (
            deployment(replicas=3, conditions=[AVAILABLE, ROLLING]),
            waiting(
                "Deployment demo/web: 1 old replica(s) still to be removed (Progressing: ReplicaSetUpdated)"
            ),
        ),
        "replicas-unavailable": (
            deployment(
                want=3, replicas=3, availableReplicas=1, readyReplicas=1, conditions=[UNAVAILABLE, ROLLING]
            ),
            waiting("Deployment demo/web: 1 of 3 replicas available (Progressing: ReplicaSetUpdated)"),
        ),
        "replicas-not-ready": (
            deployment(readyReplicas=1),
            waiting("Deployment demo/web: 1 of 2 replicas ready (Progressing: NewReplicaSetAvailable)"),
        ),
        "available-condition-false": (
            deployment(conditions=[UNAVAILABLE, ROLLED_OUT]),
            waiting("Deployment demo/web: not Available (Progressing: NewReplicaSetAvailable)"),
        ),
        "rollout-not-finished": (
            deployment(conditions=[AVAILABLE, ROLLING]),
            waiting("Deployment demo/web: rollout not finished (Progressing: ReplicaSetUpdated)"),
        ),
        "past-its-progress-deadline": (
            NEVER_AVAILABLE,
            failed(
                "Deployment demo/never failed: can no longer progress: ProgressDeadlineExceeded: "
                'ReplicaSet "never-779f84497d" has timed out progressing. (0 of 2 replicas available)'
            ),
        ),
        "paused": (
            deployment(paused=True, updatedReplicas=0, conditions=[AVAILABLE, PAUSED]),
            ok("Deployment demo/web: paused (rollout not waited for)"),
        ),
    }
)
def test_a_deployment_is_current_when_every_replica_is_updated_and_available(
    doc: dict[str, Any], expected: Health
) -> None:
    assert assess(doc) == expected


def test_a_deployment_without_replicas_in_its_spec_wants_one() -> None:
    doc = deployment(want=1)
    del doc["spec"]["replicas"]
    assert assess(doc).current


@table(
    {
        "rolled-out": (statefulset(), ok("StatefulSet demo/db: 2 of 2 replicas updated and ready")),
        "scaling-up": (
            statefulset(replicas=1),
            waiting("StatefulSet demo/db: 1 of 2 replicas created"),
        ),
        "replica-not-ready": (
            statefulset(readyReplicas=1, availableReplicas=1),
            waiting("StatefulSet demo/db: 1 of 2 replicas ready"),
        ),
        "replica-ready-not-yet-available": (
            statefulset(availableReplicas=1),
            waiting("StatefulSet demo/db: 1 of 2 replicas available"),
        ),
        "updating": (
            statefulset(updatedReplicas=1, currentReplicas=1, updateRevision="db-5d8f9c7b6"),
            waiting("StatefulSet demo/db: 1 of 2 replicas updated"),
        ),
        "revision-not-yet-current": (
            statefulset(currentReplicas=0, updateRevision="db-5d8f9c7b6"),
            waiting("StatefulSet demo/db: rolling out revision db-5d8f9c7b6"),
        ),
        "partitioned-rollout-done": (
            statefulset(
                want=4,
                strategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 3}},
                updatedReplicas=1,
                currentReplicas=3,
                updateRevision="db-5d8f9c7b6",
            ),
            ok("StatefulSet demo/db: partitioned rollout complete (1 replicas updated)"),
        ),
        "partitioned-rollout-under-way": (
            statefulset(
                want=4,
                strategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 2}},
                updatedReplicas=1,
                updateRevision="db-5d8f9c7b6",
            ),
            waiting("StatefulSet demo/db: 1 of 2 replicas updated (partition 2)"),
        ),
        "on-delete": (
            statefulset(strategy={"type": "OnDelete"}, updatedReplicas=0, updateRevision="db-5d8f9c7b6"),
            ok("StatefulSet demo/db: 2 replicas ready (OnDelete: pods update when deleted)"),
        ),
    }
)
def test_a_statefulset_is_current_when_ready_and_its_update_revision_is_current(
    doc: dict[str, Any], expected: Health
) -> None:
    assert assess(doc) == expected


@table(
    {
        "rolled-out": (daemonset(), ok("DaemonSet demo/agent: 3 of 3 pods updated and available")),
        "not-on-every-node": (
            daemonset(currentNumberScheduled=2),
            waiting("DaemonSet demo/agent: 2 of 3 nodes run a pod"),
        ),
        "updating": (
            daemonset(updatedNumberScheduled=1),
            waiting("DaemonSet demo/agent: 1 of 3 pods updated"),
        ),
        "unavailable": (
            daemonset(numberAvailable=2, numberReady=2),
            waiting("DaemonSet demo/agent: 2 of 3 pods available"),
        ),
        "misscheduled": (
            daemonset(numberMisscheduled=1),
            waiting("DaemonSet demo/agent: 1 pod(s) still on nodes that should not run one"),
        ),
        "on-delete": (
            daemonset(strategy="OnDelete", updatedNumberScheduled=0),
            ok("DaemonSet demo/agent: 3 of 3 pods updated and available"),
        ),
    }
)
def test_a_daemonset_is_current_when_every_scheduled_pod_is_updated_and_available(
    doc: dict[str, Any], expected: Health
) -> None:
    assert assess(doc) == expected


@table(
    {
        "available": (replicaset(), ok("ReplicaSet q/rs: 2 of 2 replicas available")),
        "partly-available": (
            replicaset(readyReplicas=1, availableReplicas=1),
            waiting("ReplicaSet q/rs: 1 of 2 replicas available"),
        ),
        "replica-failure": (
            RS_OVER_QUOTA,
            failed(
                'ReplicaSet q/rs failed: cannot create pods: FailedCreate: pods "rs-s5j4r" is forbidden: '
                "exceeded quota: none, requested: pods=1, used: pods=0, limited: pods=0"
            ),
        ),
    }
)
def test_a_replicaset_is_current_when_available_and_failed_when_it_cannot_create_pods(
    doc: dict[str, Any], expected: Health
) -> None:
    assert assess(doc) == expected


COMPLETE = [
    cond("SuccessCriteriaMet", "True", "CompletionsReached"),
    cond("Complete", "True", "CompletionsReached"),
]
BACKOFF = cond("Failed", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit")


@table(
    {
        "complete": (
            job({"succeeded": 1, "startTime": T0, "completionTime": T1, "conditions": COMPLETE}),
            ok("Job demo/migrate: complete (1 of 1 succeeded)"),
        ),
        "past-its-deadline": (
            JOB_PAST_DEADLINE,
            failed(
                "Job demo/migrate failed: DeadlineExceeded: Job was active longer than specified deadline"
            ),
        ),
        "backoff-limit-reached": (
            job({"failed": 7, "startTime": T0, "conditions": [BACKOFF]}),
            failed(
                "Job demo/migrate failed: BackoffLimitExceeded: Job has reached the specified backoff limit"
            ),
        ),
        "failure-target-set-before-failed": (
            job({"active": 1, "startTime": T0, "conditions": JOB_PAST_DEADLINE_CONDITIONS[:1]}),
            failed(
                "Job demo/migrate failed: DeadlineExceeded: Job was active longer than specified deadline"
            ),
        ),
        "running": (
            job({"active": 1, "ready": 1, "startTime": T0, "terminating": 0}),
            waiting("Job demo/migrate: running: 1 active, 0 of 1 succeeded, 0 failed"),
        ),
        "not-started": (job({}), waiting("Job demo/migrate: not started yet")),
        "suspended": (
            job({"conditions": [cond("Suspended", "True", "JobSuspended", "Job suspended")]}, suspend=True),
            ok("Job demo/migrate: suspended (not waited for)"),
        ),
    }
)
def test_a_job_is_current_when_complete_failed_when_failed_and_in_progress_while_running(
    doc: dict[str, Any], expected: Health
) -> None:
    assert assess(doc) == expected


RUNNING_READY = [cond(t, "True") for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]
UNSCHEDULABLE = cond("PodScheduled", "False", "Unschedulable", "0/1 nodes are available")
CRASHING = [{"name": "app", "ready": False, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]


@table(
    {
        "running-and-ready": (
            pod(phase="Running", conditions=RUNNING_READY),
            ok("Pod demo/p: running and ready"),
        ),
        "succeeded": (pod(phase="Succeeded"), ok("Pod demo/p: succeeded")),
        "failed": (
            pod(phase="Failed", reason="Evicted", message="The node was low on resource: memory."),
            failed("Pod demo/p failed: Evicted: The node was low on resource: memory."),
        ),
        "unschedulable": (
            pod(phase="Pending", conditions=[UNSCHEDULABLE]),
            waiting("Pod demo/p: not scheduled: Unschedulable: 0/1 nodes are available"),
        ),
        "crash-looping-stays-in-progress": (
            pod(phase="Running", conditions=[cond("Ready", "False")], containerStatuses=CRASHING),
            waiting("Pod demo/p: Running, not ready (app: CrashLoopBackOff)"),
        ),
    }
)
def test_a_pod_is_current_when_succeeded_or_running_and_ready(doc: dict[str, Any], expected: Health) -> None:
    assert assess(doc) == expected


# -- other built-in kinds --------------------------------------------------------

WFFC = " (a WaitForFirstConsumer storage class binds it only once a pod uses it)"


@table(
    {
        "pvc-bound": (
            pvc("Bound", volumeName="pv-1"),
            ok("PersistentVolumeClaim demo/data: bound to volume pv-1"),
        ),
        "pvc-pending": (
            pvc("Pending"),
            waiting(f"PersistentVolumeClaim demo/data: phase Pending, not yet Bound{WFFC}"),
        ),
        "pvc-lost": (
            pvc("Lost", volumeName="pv-1"),
            failed("PersistentVolumeClaim demo/data failed: its volume pv-1 is lost"),
        ),
        "load-balancer-without-ingress": (
            service("LoadBalancer"),
            waiting(
                "Service demo/web: waiting for a load balancer address (status.loadBalancer.ingress is empty)"
            ),
        ),
        "load-balancer-with-ingress": (
            service("LoadBalancer", ingress=[{"ip": "192.0.2.10", "ipMode": "VIP"}]),
            ok("Service demo/web: load balancer at 192.0.2.10"),
        ),
        "cluster-ip-service": (service("ClusterIP"), ok("Service demo/web: type ClusterIP")),
        "crd-established": (
            crd(
                cond("NamesAccepted", "True", "NoConflicts"),
                cond("Established", "True", "InitialNamesAccepted"),
            ),
            ok("CustomResourceDefinition gadgets.ex.com: established"),
        ),
        "crd-names-not-accepted": (
            CRD_NAME_CONFLICT,
            failed(
                "CustomResourceDefinition widgets.ex.com failed: names not accepted: "
                'ListKindConflict: "GadgetList" is already in use'
            ),
        ),
        "crd-not-yet-established": (
            crd(cond("NamesAccepted", "True", "NoConflicts")),
            waiting("CustomResourceDefinition gadgets.ex.com: not yet Established"),
        ),
        "namespace-active": (namespace("Active"), ok("Namespace demo: active")),
        "namespace-terminating": (namespace("Terminating"), waiting("Namespace demo: phase Terminating")),
    }
)
def test_claims_services_crds_and_namespaces_follow_their_own_status_fields(
    doc: dict[str, Any], expected: Health
) -> None:
    assert assess(doc) == expected


# -- any other kind --------------------------------------------------------------


@table(
    {
        "ready-true": (
            gadget(cond("Ready", "True", "Succeeded", "volume provisioned")),
            ok("Gadget.ex.com demo/g1: Ready (Succeeded: volume provisioned)"),
        ),
        "ready-false-with-a-failure-reason-stays-in-progress": (
            gadget(cond("Ready", "False", "ProvisioningFailed", "quota exceeded")),
            waiting("Gadget.ex.com demo/g1: not Ready: ProvisioningFailed: quota exceeded"),
        ),
        "ready-unknown": (
            gadget(cond("Ready", "Unknown", "Progressing", "reconciliation in progress")),
            waiting("Gadget.ex.com demo/g1: Ready is Unknown: Progressing: reconciliation in progress"),
        ),
        "ready-without-reason": (
            gadget(cond("Ready", "False")),
            waiting("Gadget.ex.com demo/g1: not Ready: no reason given"),
        ),
        "ready-older-than-the-spec": (
            gadget(cond("Ready", "True", "Succeeded", observedGeneration=1), generation=2),
            waiting("Gadget.ex.com demo/g1: Ready is stale (for generation 1, spec is at 2)"),
        ),
        "custom-resource-without-conditions": (gadget(), ok("Gadget.ex.com demo/g1: exists")),
        "configmap": (obj("v1", "ConfigMap", "cfg", generation=None), ok("ConfigMap demo/cfg: exists")),
        "cluster-scoped-kind": (
            obj("rbac.authorization.k8s.io/v1", "ClusterRole", "reader", namespace="", generation=None),
            ok("ClusterRole reader: exists"),
        ),
        "a-builtin-kind-name-in-another-group": (
            obj("ex.com/v1", "Deployment", "web", status={"replicas": 0}),
            ok("Deployment.ex.com demo/web: exists"),
        ),
    }
)
def test_other_kinds_follow_their_ready_condition_or_are_current_once_they_exist(
    doc: dict[str, Any], expected: Health
) -> None:
    assert assess(doc) == expected


# -- names and errors ----------------------------------------------------------


class TestMessages:
    def test_builtin_kinds_are_named_without_group_and_custom_kinds_with_it(self) -> None:
        assert label_of(ObjRef("apps", "Deployment", "demo", "web")) == "Deployment demo/web"
        assert label_of(ObjRef("", "Namespace", "", "demo")) == "Namespace demo"
        assert label_of(ObjRef("ex.com", "Gadget", "demo", "g1")) == "Gadget.ex.com demo/g1"

    def test_a_timeout_for_one_object_reads_as_one_sentence(self) -> None:
        ref = ObjRef("apps", "Deployment", "demo", "web")
        msg = "Deployment demo/web: 0 of 2 replicas available (Progressing: ReplicaSetUpdated)"
        error = HealthTimeout("pi5", 120, {ref: waiting(msg)})
        assert str(error) == f"cluster pi5: timed out after 2m waiting for: {msg}"

    def test_a_timeout_for_several_objects_lists_one_per_line(self) -> None:
        web, job_ref = ObjRef("apps", "Deployment", "demo", "web"), ObjRef("batch", "Job", "demo", "m")
        pending = {job_ref: waiting("Job demo/m: y"), web: waiting("Deployment demo/web: x")}
        error = HealthTimeout("pi5", 30, pending)
        lines = [
            "cluster pi5: timed out after 30s waiting for 2 objects:",
            "  Deployment demo/web: x",
            "  Job demo/m: y",
        ]
        assert str(error) == "\n".join(lines)
        assert error.pending == pending

    def test_a_failure_names_the_cluster_the_object_and_its_reason(self) -> None:
        ref = ObjRef("batch", "Job", "demo", "migrate")
        health = assess(JOB_PAST_DEADLINE)
        error = HealthFailed("pi5", {ref: health})
        assert str(error) == f"cluster pi5: {health.message}"
        assert error.failed == {ref: health}
