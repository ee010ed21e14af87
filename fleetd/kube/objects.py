"""Object identity, fleetd's labels and annotations, and the order objects are applied in.

An object is identified by group, kind, namespace and name — not by version,
so moving a manifest from ``v1beta1`` to ``v1`` is a change, not a delete
plus a create. The version is kept next to the identity (``Entry``) because
the REST path needs one.

Apply order has two stages, as operators expect from Flux and Helm:

1. *prerequisites*: CustomResourceDefinitions, Namespaces and other
   cluster-scoped "class" objects (ClusterRoles, StorageClasses, ...), waited
   for until established or active;
2. everything else, in a stable kind order (ServiceAccounts and ConfigMaps
   before the workloads that mount them, webhooks last), custom resources
   after all built-in kinds.

Pruning walks the same order backwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FIELD_MANAGER = "fleetd"
LABEL_FLEET = "fleetd.dev/fleet"
LABEL_SYNC = "fleetd.dev/sync"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
#: ``fleetd.dev/prune: disabled`` keeps an object when it leaves git.
ANNOTATION_PRUNE = "fleetd.dev/prune"
#: ``fleetd.dev/force: enabled`` lets fleetd delete and recreate an object whose immutable fields changed.
ANNOTATION_FORCE = "fleetd.dev/force"
DISABLED, ENABLED = "disabled", "enabled"

PREREQUISITE_KINDS = (
    "CustomResourceDefinition",
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
    "RuntimeClass",
    "PersistentVolume",
)

KIND_ORDER = (
    *PREREQUISITE_KINDS,
    "ResourceQuota",
    "LimitRange",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "Role",
    "RoleBinding",
    "PersistentVolumeClaim",
    "Service",
    "PodDisruptionBudget",
    "DaemonSet",
    "Pod",
    "ReplicaSet",
    "Deployment",
    "StatefulSet",
    "HorizontalPodAutoscaler",
    "Job",
    "CronJob",
    "Ingress",
    "NetworkPolicy",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
)
_RANK = {kind: i for i, kind in enumerate(KIND_ORDER)}
#: Groups served by kube-apiserver itself; kinds elsewhere are custom and sort last.
BUILTIN_GROUPS = frozenset(
    {
        "", "apps", "batch", "autoscaling", "policy", "rbac.authorization.k8s.io", "networking.k8s.io",
        "storage.k8s.io", "scheduling.k8s.io", "node.k8s.io", "apiextensions.k8s.io",
        "admissionregistration.k8s.io", "apiregistration.k8s.io", "coordination.k8s.io",
        "discovery.k8s.io", "certificates.k8s.io", "flowcontrol.apiserver.k8s.io",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True, order=True)
class ObjRef:
    """Identity of one object in one cluster."""

    group: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind}{'.' + self.group if self.group else ''} {where}"


@dataclass(frozen=True, slots=True, order=True)
class Entry:
    """One applied object as remembered for pruning: identity plus the version it was applied with."""

    ref: ObjRef
    version: str

    @property
    def api_version(self) -> str:
        return f"{self.ref.group}/{self.version}" if self.ref.group else self.version

    def encode(self) -> str:
        r = self.ref
        return "|".join((r.group, self.version, r.kind, r.namespace, r.name))

    @classmethod
    def decode(cls, line: str) -> Entry:
        group, version, kind, namespace, name = line.split("|")
        if not (version and kind and name):
            raise ValueError(f"an entry needs a version, a kind and a name: {line!r}")
        return cls(ObjRef(group, kind, namespace, name), version)


def split_api_version(api_version: str) -> tuple[str, str]:
    """``apps/v1`` -> (``apps``, ``v1``); ``v1`` -> (``""``, ``v1``)."""
    group, _, version = api_version.rpartition("/")
    return group, version


def ref_of(obj: dict[str, Any]) -> ObjRef:
    group, _ = split_api_version(str(obj.get("apiVersion", "")))
    meta = obj.get("metadata") or {}
    return ObjRef(
        group, str(obj.get("kind", "")), str(meta.get("namespace") or ""), str(meta.get("name", ""))
    )


def is_prerequisite(ref: ObjRef) -> bool:
    return ref.group in BUILTIN_GROUPS and ref.kind in PREREQUISITE_KINDS and not ref.namespace


def apply_rank(ref: ObjRef) -> tuple[int, int, str, str, str]:
    """Sort key: stage, kind rank (custom kinds after built-ins), then identity for stability."""
    stage = 0 if is_prerequisite(ref) else 1
    rank = _RANK.get(ref.kind, len(KIND_ORDER)) if ref.group in BUILTIN_GROUPS else len(KIND_ORDER)
    return stage, rank, ref.kind, ref.namespace, ref.name


def labels_of(obj: dict[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def annotations_of(obj: dict[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})
