"""What the applier gets for a sync: the shared render, ownership labels and keep-live paths.

Rendering is shared across clusters (`fleetd.render`); what differs per
cluster is decided here, after the render: fleetd's ownership labels on
every object, the JSON pointers whose live values are kept (ignore rules
and replicas owned by a HorizontalPodAutoscaler), and which objects a
health wait covers.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any

from fleetd.errors import FleetdError
from fleetd.inventory import Sync
from fleetd.kube.client import ApiError, KubeClient
from fleetd.kube.objects import (
    FIELD_MANAGER,
    LABEL_FLEET,
    LABEL_MANAGED_BY,
    LABEL_SYNC,
    Entry,
    ObjRef,
    ref_of,
)


def owned(obj: dict[str, Any], fleet: str, sync: str) -> dict[str, Any]:
    """A copy of ``obj`` carrying fleetd's ownership labels."""
    out = copy.deepcopy(obj)
    labels = out.setdefault("metadata", {}).setdefault("labels", {}) or {}
    labels.update({LABEL_FLEET: fleet, LABEL_SYNC: sync, LABEL_MANAGED_BY: FIELD_MANAGER})
    out["metadata"]["labels"] = labels
    return out


def health_targets(sync: Sync, entries: frozenset[Entry]) -> list[tuple[ObjRef, str]]:
    """The objects to wait for: every applied object, or those named by ``health_checks``."""
    if not sync.health_checks:
        return [(e.ref, e.version) for e in sorted(entries)]
    chosen = []
    for check in sync.health_checks:
        matches = [e for e in entries if _names(check, e.ref)]
        if not matches:
            raise FleetdError(f"sync {sync.name}: health check {check!r} names no object of this sync")
        chosen += [(e.ref, e.version) for e in matches]
    return chosen


def _names(check: str, ref: ObjRef) -> bool:
    kind, *rest = check.split("/")
    kind, _, group = kind.partition(".")
    namespace, name = (rest[0], rest[1]) if len(rest) == 2 else ("", rest[0])
    return (kind, group, namespace, name) == (ref.kind, ref.group, ref.namespace, ref.name) or (
        not group and (kind, namespace, name) == (ref.kind, ref.namespace, ref.name)
    )


HPA_PATH = "/apis/autoscaling/v2/horizontalpodautoscalers"


async def hpa_targets(client: KubeClient, objs: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(namespace, kind, name) of every workload an HPA scales, live or about to be applied."""
    hpas = [o for o in objs if o.get("kind") == "HorizontalPodAutoscaler"]
    with contextlib.suppress(ApiError):  # no autoscaling/v2 here: nothing scales anything
        hpas += (await client.request("GET", HPA_PATH)).get("items", [])
    targets = set()
    for hpa in hpas:
        target = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        namespace = (hpa.get("metadata") or {}).get("namespace") or "default"
        targets.add((namespace, str(target.get("kind")), str(target.get("name"))))
    return targets


def keep_live_paths(
    sync: Sync, objs: list[dict[str, Any]], scaled: set[tuple[str, str, str]]
) -> Callable[[dict[str, Any]], tuple[str, ...]]:
    """Per object, the JSON pointers whose live values fleetd keeps: ignore rules and HPA-owned replicas."""

    def kept(obj: dict[str, Any]) -> tuple[str, ...]:
        ref = ref_of(obj)
        namespace = ref.namespace or "default"
        paths = [
            p
            for rule in sync.ignore
            if rule.applies_to(group=ref.group, kind=ref.kind, name=ref.name, namespace=namespace)
            for p in rule.paths
        ]
        if (namespace, ref.kind, ref.name) in scaled:
            paths.append("/spec/replicas")
        return tuple(dict.fromkeys(paths))

    return kept
