"""Target namespace: which objects get the sync's namespace, and duplicate objects.

With a sync namespace, namespaced objects without ``metadata.namespace`` get
it; an explicit namespace is kept. Cluster-scoped kinds never get one. A
kind is cluster-scoped when a CustomResourceDefinition of the same render
says ``scope: Cluster``, else when it is in `CLUSTER_SCOPED`, else when the
caller's ``cluster_scoped(apiVersion, kind)`` hook says so (the sync engine
backs it with API discovery); unknown kinds without a hook count as
namespaced.

An object (group, kind, namespace, name) may appear only once per sync: a
second one is an error naming both places.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fleetd.render.model import ClusterScoped, Rendered, api_group

#: (API group, kind) of the built-in cluster-scoped kinds.
CLUSTER_SCOPED = frozenset(
    {("", kind) for kind in ("Namespace", "Node", "PersistentVolume", "ComponentStatus")}
    | {("rbac.authorization.k8s.io", k) for k in ("ClusterRole", "ClusterRoleBinding")}
    | {("apiextensions.k8s.io", "CustomResourceDefinition"), ("apiregistration.k8s.io", "APIService")}
    | {("storage.k8s.io", k) for k in ("StorageClass", "CSIDriver", "CSINode", "VolumeAttachment")}
    | {("storage.k8s.io", "VolumeAttributesClass"), ("scheduling.k8s.io", "PriorityClass")}
    | {
        ("admissionregistration.k8s.io", f"{kind}{suffix}")
        for kind in ("ValidatingAdmissionPolicy", "MutatingAdmissionPolicy")
        for suffix in ("", "Binding")
    }
    | {("admissionregistration.k8s.io", f"{k}WebhookConfiguration") for k in ("Mutating", "Validating")}
    | {("networking.k8s.io", k) for k in ("IngressClass", "IPAddress", "ServiceCIDR")}
    | {("node.k8s.io", "RuntimeClass"), ("storagemigration.k8s.io", "StorageVersionMigration")}
    | {("certificates.k8s.io", k) for k in ("CertificateSigningRequest", "ClusterTrustBundle")}
    | {("flowcontrol.apiserver.k8s.io", k) for k in ("FlowSchema", "PriorityLevelConfiguration")}
    | {("resource.k8s.io", k) for k in ("DeviceClass", "ResourceSlice")}
)


def scope_predicate(objects: Iterable[Rendered], hook: ClusterScoped | None) -> ClusterScoped:
    """Whether (apiVersion, kind) is cluster-scoped: this render's CRDs, then built-ins, then `hook`."""
    crd_scopes = dict(filter(None, (_crd_scope(rendered.obj) for rendered in objects)))

    def cluster_scoped(api_version: str, kind: str) -> bool:
        key = (api_group(api_version), kind)
        if key in crd_scopes:
            return crd_scopes[key]
        return key in CLUSTER_SCOPED or (hook is not None and hook(api_version, kind))

    return cluster_scoped


def _crd_scope(obj: dict[str, Any]) -> tuple[tuple[str, str], bool] | None:
    """((group, kind), cluster-scoped) that a CustomResourceDefinition declares, else None."""
    if (api_group(obj["apiVersion"]), obj["kind"]) != ("apiextensions.k8s.io", "CustomResourceDefinition"):
        return None
    spec = obj.get("spec")
    names = spec.get("names") if isinstance(spec, dict) else None
    if not isinstance(spec, dict) or not isinstance(names, dict):
        return None
    group, kind = spec.get("group"), names.get("kind")
    if not isinstance(group, str) or not isinstance(kind, str):
        return None
    return (group, kind), spec.get("scope") == "Cluster"


def default_namespace(obj: dict[str, Any], namespace: str, cluster_scoped: ClusterScoped) -> None:
    """Give `obj` (a private copy) `namespace` unless it has one or its kind is cluster-scoped."""
    meta = obj["metadata"]
    if not meta.get("namespace") and not cluster_scoped(obj["apiVersion"], obj["kind"]):
        meta["namespace"] = namespace


def check_duplicates(objects: Iterable[Rendered]) -> None:
    """RenderError when two of `objects` are the same Kubernetes object."""
    seen: dict[tuple[str, str, str, str], Rendered] = {}
    for rendered in objects:
        obj, meta = rendered.obj, rendered.obj["metadata"]
        key = (api_group(obj["apiVersion"]), obj["kind"], meta.get("namespace") or "", meta["name"])
        first = seen.setdefault(key, rendered)
        if first is not rendered:
            raise rendered.error(
                f"defined twice: also in {first.where()} — an object may appear only once per sync"
            )
