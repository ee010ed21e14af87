"""A real `FleetState` for tests that need one without a daemon: a real inventory on disk and a real store."""

from __future__ import annotations

from pathlib import Path

from fleetd.daemon.state import FleetState
from fleetd.daemon.store import StateStore
from fleetd.inventory import load_fleet
from tests.integration.fleet import write_fleet


def fleet_state(
    tmp_path: Path,
    clusters: tuple[str, ...] = ("a", "b"),
    syncs: tuple[str, ...] = ("s", "t"),
    *,
    replica: str | None = None,
) -> FleetState:
    """A fleet state over a real inventory (clusters by syncs) and a real store.

    ``replica``: the fleet is sharded (``[fleet.sharding]``) and this is the replica's identity.
    """
    kubeconfigs = {}
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name in clusters:
        kubeconfigs[name] = tmp_path / f"{name}.kubeconfig"
        kubeconfigs[name].write_text("apiVersion: v1\nkind: Config\n")
    (tmp_path / "apps").mkdir(exist_ok=True)
    management = tmp_path / "management.kubeconfig"  # read only when a replica runs, never here
    sharding = f'\n[fleet.sharding]\nkubeconfig = "{management}"\nidentity = "{replica}"\n' if replica else ""
    config = write_fleet(
        tmp_path, repo=tmp_path / "repo", clusters=kubeconfigs, fleet_extra=sharding,
        syncs=[{"name": s, "path": "apps"} for s in syncs],
    )  # fmt: skip
    fleet = load_fleet(config)
    return FleetState(fleet, StateStore(fleet.state_dir))


def drifted(state: FleetState, cluster: str, sync: str, count: int) -> None:
    """Report ``count`` objects of a sync as drifted, as a cluster's drift tracker does."""
    for i in range(count):
        state.drift(cluster, sync, f"ConfigMap ns/drifted-{i}", "ConfigMap", "reported", "/data changed")
