"""The fleet file's ``[fleet.sharding]`` section: replicas that share the fleet through Leases.

Read into a `Sharding`, or None when the section is absent (one hub serves
every cluster, as without sharding at all). Only the shape is checked here;
the management cluster is reached at run time by `fleetd.shard`, so a
missing kubeconfig leaves the replica owning nothing, with a message, rather
than failing the load.

The replica's identity names its Leases and is what cluster pins name, so
it is a DNS-1123 label; it defaults to the host name (its first label,
lower-cased). A Lease's duration is whole seconds in Kubernetes, and a
replica renews at least three times per duration, so one late renewal
never loses the fleet.
"""

from __future__ import annotations

import socket
from pathlib import Path

from fleetd.inventory import syntax
from fleetd.inventory.fields import Table
from fleetd.inventory.model import (
    DEFAULT_LEASE_DURATION,
    DEFAULT_PIN_LABEL,
    DEFAULT_RENEW_PERIOD,
    DEFAULT_SHARD_NAMESPACE,
    Sharding,
)

SHARDING_KEYS = frozenset(
    {"kubeconfig", "context", "namespace", "identity", "lease_duration", "renew_period", "pin_label"}
)
#: Longest lease the Lease API stores (an int32 of seconds is far more; a day is plenty for a hub).
MAX_LEASE_DURATION = 86400.0

_identity = syntax.dns_label("replica identity")


def read_sharding(table: Table | None, base: Path) -> Sharding | None:
    """The ``[fleet.sharding]`` section, or None without one; problems go to `table`'s document."""
    if table is None:
        return None
    kubeconfig = table.text("kubeconfig", syntax.nonempty, required='kubeconfig = "~/.kube/management.yaml"')
    duration = _lease_duration(table)
    return Sharding(
        kubeconfig=syntax.resolve_path(base, kubeconfig or "."),
        context=table.text("context", syntax.nonempty),
        namespace=table.text("namespace", syntax.dns_label("namespace")) or DEFAULT_SHARD_NAMESPACE,
        identity=_read_identity(table),
        lease_duration=duration,
        renew_period=_renew_period(table, duration),
        pin_label=table.text("pin_label", syntax.label_key) or DEFAULT_PIN_LABEL,
    )


def default_identity() -> str:
    """The host name's first label, lower-cased (what ``identity`` defaults to)."""
    return socket.gethostname().split(".")[0].lower()


def _read_identity(table: Table) -> str:
    identity = table.text("identity", _identity)
    if identity is not None:
        return identity
    host = default_identity()
    if _identity(host) is not None:
        table.report(None, f'the host name {host!r} is not a usable replica identity; set identity = "hub-1"')
    return host


def _lease_duration(table: Table) -> float:
    duration = table.duration("lease_duration", DEFAULT_LEASE_DURATION)
    if duration != int(duration) or duration > MAX_LEASE_DURATION:
        table.report(
            "lease_duration",
            f"a Lease lasts whole seconds, at most {MAX_LEASE_DURATION:g}s; got {duration:g}s (e.g. 15s)",
        )
        return DEFAULT_LEASE_DURATION
    return duration


def _renew_period(table: Table, duration: float) -> float:
    default = min(DEFAULT_RENEW_PERIOD, duration / 3)
    period = table.duration("renew_period", default)
    if period * 3 > duration:
        table.report(
            "renew_period",
            f"renew at least three times per lease_duration ({duration:g}s): "
            f"at most {duration / 3:g}s, got {period:g}s",
        )
        return default
    return period
