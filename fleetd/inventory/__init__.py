"""The fleet inventory: TOML files in, one validated immutable `Fleet` out.

`load_fleet` is the only way in. It reads the fleet-wide file and every
per-cluster file, reports every problem at once as an `InventoryError`, and
otherwise returns frozen objects (`model`) that the rest of fleetd trusts
without re-checking. Reloading builds a new `Fleet`; the daemon swaps it in
whole and keeps the last good one when a load fails.

Inside: `loader` (files and sections), `syncs` (sync tables), `source`
(``[source]``, ``[webhooks]``), `sharding` (``[fleet.sharding]``), `fields`
(typed reads that record problems), `syntax` (string checks),
`consistency` (checks across syncs and files), `locate` (key -> line),
`notifications` (``[[notifications]]``).
"""

from __future__ import annotations

from fleetd.errors import InventoryError, Problem
from fleetd.inventory.loader import load_fleet
from fleetd.inventory.model import (
    Cluster,
    Decryption,
    DriftPolicy,
    Fleet,
    GitAuth,
    GitRef,
    GitSource,
    IgnoreRule,
    PruneBudget,
    RefKind,
    Sharding,
    Sync,
    SyncDefaults,
    Webhooks,
    WebSettings,
)
from fleetd.inventory.notifications import Notification, TargetKind

__all__ = [
    "Cluster",
    "Decryption",
    "DriftPolicy",
    "Fleet",
    "GitAuth",
    "GitRef",
    "GitSource",
    "IgnoreRule",
    "InventoryError",
    "Notification",
    "Problem",
    "PruneBudget",
    "RefKind",
    "Sharding",
    "Sync",
    "SyncDefaults",
    "TargetKind",
    "WebSettings",
    "Webhooks",
    "load_fleet",
]
