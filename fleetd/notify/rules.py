"""Which events a ``[[notifications]]`` entry selects: kind, least severity, cluster and sync.

Pure. Kinds match by name, by family (``drift.*``) or ``*``. Cluster and
sync patterns are shell-style (``edge-*``) and case-sensitive. An event
that names no cluster (the source, the inventory, the rollout, the state
directory) concerns every cluster and passes the cluster patterns; one that
names no sync (a cluster unreachable) passes the sync patterns.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from fleetd.daemon.events import Event
from fleetd.inventory import Notification

SEVERITY_RANK = {"info": 0, "warning": 1, "error": 2}


def kind_selected(patterns: tuple[str, ...], kind: str) -> bool:
    return any(p in ("*", kind) or (p.endswith(".*") and kind.startswith(p[:-1])) for p in patterns)


def about(rule: Notification, event: Event) -> bool:
    """Whether the event's cluster and sync are ones the rule cares about."""
    if (
        rule.clusters
        and event.cluster is not None
        and not any(fnmatchcase(event.cluster, p) for p in rule.clusters)
    ):
        return False
    if rule.syncs and event.sync is not None:
        return any(fnmatchcase(event.sync, p) for p in rule.syncs)
    return True


def selects(rule: Notification, event: Event) -> bool:
    """Kind, severity, cluster and sync all match."""
    severe = SEVERITY_RANK[str(event.severity)] >= SEVERITY_RANK[rule.severity]
    return severe and kind_selected(rule.events, str(event.kind)) and about(rule, event)
