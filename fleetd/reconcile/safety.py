"""The rules that keep a reconcile from destroying what should stay.

Each rule is a pure check the reconciler runs before it writes or deletes
anything; each answer is a message naming the sync, the objects and what
to do, never a silent choice.

* **Reserved namespace.** ``fleetd-system`` holds the ledgers; git may not
  write there (it could overwrite another sync's ledger and so decide what
  gets pruned).
* **One object, one sync.** An object rendered by two syncs of one cluster
  is an error in both; neither takes it over.
* **Ledgers belong to a cluster.** A ledger written under the name of
  another cluster of this fleet (two cluster files pointing at one API
  server) is never pruned from; the sync fails and says so.
* **Deletion budget.** A revision that would prune more than the sync's
  budget (default half of its objects), or empty it, is applied but its
  prune is held until an operator allows it or git changes again.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from fleetd.errors import FleetdError
from fleetd.inventory import Sync
from fleetd.kube.objects import Entry, ObjRef
from fleetd.reconcile.ledger import SYSTEM_NAMESPACE, Ledger
from fleetd.reconcile.plan import Desired

#: How many object names a message lists before it says "and N more".
LISTED = 5


class SafetyError(FleetdError):
    """A reconcile refused to write or delete; the message says why and what to do."""


def check_reserved(desired: Iterable[Desired]) -> None:
    """Git may not write into ``fleetd-system`` (nor create or change that namespace)."""
    bad = [d for d in desired if SYSTEM_NAMESPACE in (d.ref.namespace, _namespace_name(d.ref))]
    if bad:
        raise SafetyError(
            f"{_names(d.ref for d in bad)} (from {bad[0].origin}): the namespace {SYSTEM_NAMESPACE} is "
            "reserved for fleetd's ledgers; move these objects to another namespace"
        )


def check_unique(sync: str, mine: Iterable[ObjRef], others: Mapping[str, Collection[ObjRef]]) -> None:
    """No object of ``sync`` is also rendered by another sync of the same cluster."""
    own = set(mine)
    clashes = {name: sorted(own & set(refs), key=str) for name, refs in sorted(others.items())}
    clashes = {name: refs for name, refs in clashes.items() if refs}
    if clashes:
        lines = "; ".join(f"{_names(refs)} also by sync {name}" for name, refs in clashes.items())
        raise SafetyError(
            f"rendered by more than one sync: {lines}. One object belongs to one sync: remove it from "
            f"all but one of them (nothing of sync {sync} is applied or pruned until then)"
        )


def check_ledger_owner(ledger: Ledger | None, cluster: str, peers: Collection[str]) -> None:
    """The ledger was written by this cluster (or by a name that left the inventory: a rename)."""
    if ledger is None or not ledger.cluster or ledger.cluster == cluster or ledger.cluster not in peers:
        return
    raise SafetyError(
        f"the ledger {SYSTEM_NAMESPACE}/…{ledger.sync} in this API server was written by cluster "
        f"{ledger.cluster!r} of this fleet: the cluster files of {cluster!r} and {ledger.cluster!r} point "
        "at the same cluster. Remove one of them; nothing is applied or pruned through this one until then"
    )


def over_budget(
    cluster: str, sync: Sync, stale: Collection[Entry], old: Collection[Entry], rendered: int, revision: str
) -> str | None:
    """Why pruning ``stale`` is held (None when within the sync's deletion budget)."""
    if not stale or sync.budget.allows(len(stale), len(old), emptying=rendered == 0):
        return None
    what = "empty the sync" if rendered == 0 else f"prune {len(stale)} of its {len(old)} objects"
    allowed = f" (its budget is {sync.budget.describe()})" if rendered else ""
    return (
        f"revision {revision[:12]} would {what}{allowed}: {_names(e.ref for e in stale)}. The prune is held "
        f"and nothing is deleted. If this is intended, run `fleetd prune --allow {cluster} {sync.name}`, or "
        "raise max_prune (allow_empty for an emptied sync); another commit is checked again"
    )


def _namespace_name(ref: ObjRef) -> str:
    return ref.name if ref.kind == "Namespace" and not ref.group else ""


def _names(refs: Iterable[ObjRef]) -> str:
    names = [str(r) for r in refs]
    more = f" and {len(names) - LISTED} more" if len(names) > LISTED else ""
    return ", ".join(names[:LISTED]) + more
