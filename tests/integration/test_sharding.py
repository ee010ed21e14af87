"""Several fleetd replicas share one fleet through Leases: ownership, fencing, failover, hand-off.

The bed: one management API server and six spokes, all with audit logs, and
fleetd replicas as real processes (``tests/integration/replicas.py``). Each
replica reaches every API server as a user of its own, so the audit logs
prove who wrote what: `unfenced_writes` finds every write a replica made to a
spoke while the management cluster's audit log shows it did *not* hold that
spoke's Lease. Every test ends with that list empty.

Leases last 4 s, renewed every second, so failover is bounded by 5 s (and a
replica tolerates a management cluster that answers up to 2 s late).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetd.shard.assign import assign
from testbed.bed import Spoke, TestBed
from tests.integration.fleet import eventually, get
from tests.integration.replicas import LEASE_NAMESPACE, ShardedFleet, unfenced_writes, user_of, writers

pytestmark = [pytest.mark.testbed, pytest.mark.timeout(150)]

SPOKES = tuple(f"east-{i}" for i in range(1, 7))
MANAGEMENT = "shard-management"
#: Measured bounds, printed by every test (``pytest -s``) and in docs/sharding.md.
HANDOVER_LIMIT = 2.0


@pytest.fixture(scope="module")
def shard_bed(testbed: TestBed) -> Iterator[tuple[Spoke, list[Spoke]]]:
    """A management API server and six spokes with audit logs, on the session's etcd."""
    added = testbed.add_spokes([MANAGEMENT, *SPOKES], audit=True)
    management, spokes = added[0], added[1:]
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": LEASE_NAMESPACE}}
    management.request("POST", "/api/v1/namespaces", namespace)
    yield management, spokes
    for spoke in added:
        testbed.remove_spoke(spoke.name)


@pytest.fixture
def fleet(shard_bed: tuple[Spoke, list[Spoke]], tmp_path: Path) -> Iterator[ShardedFleet]:
    management, spokes = shard_bed
    fleet = ShardedFleet(tmp_path, management, spokes)
    yield fleet
    fleet.reap_all()
    assert unfenced_writes(fleet) == []


def expected(replicas: tuple[str, ...]) -> dict[str, str | None]:
    return assign(dict.fromkeys(SPOKES), replicas)


async def test_every_spoke_is_owned_by_exactly_one_replica_and_only_that_replica_writes_to_it(
    fleet: ShardedFleet,
) -> None:
    fleet.start("hub-a", "hub-b", "hub-c")
    owners, _ = await fleet.wait_converged()
    assert owners == expected(("hub-a", "hub-b", "hub-c"))
    since = time.time()
    fleet.commit("2")
    owners, took = await fleet.wait_converged(since=since)
    print(f"\ncommit to converged on 6 spokes by 3 replicas: {took:.2f}s")
    assert all(len(claims) == 1 for claims in (await fleet.owners()).values())
    for spoke in fleet.spokes:
        assert writers(fleet, spoke, since=since) == {user_of(owners[spoke.name])}
        cm = await get(spoke, f"/api/v1/namespaces/{fleet.namespace}/configmaps/a")
        assert cm is not None
        assert cm["data"] == {"version": "2"}
    docs = await fleet.statuses()
    for identity, doc in docs.items():
        seen = doc["sharding"]["clusters"]
        assert {c: v["holder"] for c, v in seen.items()} == owners, f"{identity} sees other holders"
        assert {r["name"] for r in doc["sharding"]["replicas"] if r["live"]} == {"hub-a", "hub-b", "hub-c"}
    rows, text = await asyncio.gather(fleetd_status(fleet, "hub-a", "--json"), fleetd_status(fleet, "hub-a"))
    assert {r["cluster"]: r["owner"] for r in json.loads(rows)} == owners
    assert "replicas: hub-a (this one) live" in text
    assert "hub-b live" in text


async def fleetd_status(fleet: ShardedFleet, identity: str, *flags: str) -> str:
    """``fleetd status`` with a replica's inventory, as an operator on that hub runs it."""
    config = str(fleet.replicas[identity].config)
    argv = [sys.executable, "-m", "fleetd", "status", "--config", config, *flags]
    done = await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def test_a_killed_replicas_clusters_converge_under_the_others_within_lease_plus_renew_period_and_a_commit_during_the_failover_reaches_every_spoke(  # noqa: E501 - the test says what it checks
    fleet: ShardedFleet,
) -> None:
    fleet.start("hub-a", "hub-b", "hub-c")
    owners, _ = await fleet.wait_converged()
    victim = fleet.replicas[owners[SPOKES[0]]]
    theirs = [c for c, o in owners.items() if o == victim.identity]
    killed = time.time()
    victim.signal(signal.SIGKILL)
    fleet.commit("2")  # during the failover: the survivors apply it, to their clusters and the victim's
    survivors = [r for r in fleet.replicas.values() if r is not victim]
    moved, took = await fleet.wait_converged(theirs, replicas=survivors, since=killed)
    bound = fleet.lease_duration + fleet.renew_period
    print(f"\nkill -9 of {victim.identity} ({len(theirs)} clusters) to converged elsewhere: {took:.2f}s")
    assert took < bound, f"failover took {took:.2f}s, more than lease + renew period ({bound:g}s)"
    assert set(moved.values()) <= {r.identity for r in survivors}
    await fleet.wait_converged(replicas=survivors, since=killed)
    for spoke in fleet.spokes:
        cm = await get(spoke, f"/api/v1/namespaces/{fleet.namespace}/configmaps/b")
        assert cm is not None
        assert cm["data"] == {"version": "2"}


async def test_a_replica_paused_longer_than_its_lease_writes_nothing_unfenced_after_it_resumes_and_no_one_fights(  # noqa: E501
    fleet: ShardedFleet,
) -> None:
    fleet.start("hub-a", "hub-b", "hub-c")
    owners, _ = await fleet.wait_converged()
    paused = fleet.replicas[owners[SPOKES[0]]]
    theirs = [c for c, o in owners.items() if o == paused.identity]
    others = [r for r in fleet.replicas.values() if r is not paused]
    stopped = time.time()
    paused.signal(signal.SIGSTOP)
    await fleet.wait_converged(theirs, replicas=others, since=stopped)
    fleet.commit("2")  # the paused replica's watches will show the new owners' writes as "drift"
    await fleet.wait_converged(replicas=others, since=stopped)
    assert time.time() - stopped > fleet.lease_duration
    resumed = time.time()
    paused.signal(signal.SIGCONT)
    # It comes back as a member: its clusters are handed back in order, and reconciled by it again.
    back, _ = await fleet.wait_converged(theirs, since=resumed)
    assert set(back.values()) == {paused.identity}
    owners, _ = await fleet.wait_converged()
    assert owners == expected(("hub-a", "hub-b", "hub-c"))
    assert [w for w in unfenced_writes(fleet, since=resumed) if w.user == user_of(paused.identity)] == []
    quiet = time.time()
    await asyncio.sleep(3 * fleet.renew_period)  # a window in which fighting owners would write
    for spoke in fleet.spokes:
        assert writers(fleet, spoke, since=quiet) == set(), f"someone still writes to {spoke.name}"
        cm = await get(spoke, f"/api/v1/namespaces/{fleet.namespace}/configmaps/a")
        assert cm is not None
        assert cm["data"] == {"version": "2"}


async def test_a_graceful_stop_hands_the_replicas_clusters_over_in_under_two_seconds(
    fleet: ShardedFleet,
) -> None:
    fleet.start("hub-a", "hub-b", "hub-c")
    owners, _ = await fleet.wait_converged()
    leaving = fleet.replicas[owners[SPOKES[0]]]
    theirs = [c for c, o in owners.items() if o == leaving.identity]
    stayers = [r for r in fleet.replicas.values() if r is not leaving]
    asked = time.time()
    leaving.signal(signal.SIGTERM)
    _, took = await fleet.wait_converged(theirs, replicas=stayers, since=asked, poll=0.02)
    print(f"\nSIGTERM of {leaving.identity} ({len(theirs)} clusters) to converged elsewhere: {took:.2f}s")
    assert took < HANDOVER_LIMIT
    assert leaving.reap() == 0
    assert "released" in leaving.log()


async def test_a_fourth_replica_takes_over_only_the_clusters_rendezvous_gives_it(fleet: ShardedFleet) -> None:
    fleet.start("hub-a", "hub-b", "hub-c")
    before, _ = await fleet.wait_converged()
    joined = time.time()
    fleet.start("hub-d")

    async def hub_d_serves_its_share() -> bool:
        owners = await fleet.converged(SPOKES)
        return owners is not None and owners == expected(("hub-a", "hub-b", "hub-c", "hub-d"))

    await eventually(hub_d_serves_its_share, "hub-d serving the clusters rendezvous gives it", timeout=60)
    after = await fleet.converged(SPOKES)
    assert after is not None
    moved = {c for c in SPOKES if before[c] != after[c]}
    print(f"\na 4th replica moved {len(moved)} of {len(SPOKES)} clusters")
    assert moved, "hub-d takes its share"
    assert all(after[c] == "hub-d" for c in moved), "only clusters going to hub-d move"
    assert len(moved) <= len(SPOKES) // 2
    for cluster in moved:  # the old owner released it; hub-d did not take it while it was held
        spoke = next(s for s in fleet.spokes if s.name == cluster)
        assert writers(fleet, spoke, since=joined) <= {user_of("hub-d"), user_of(before[cluster])}
