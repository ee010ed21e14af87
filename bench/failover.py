"""Benchmark: a sharded fleet on the real test bed — failover, hand-off, Lease load, cost per cluster.

Workload (defaults): one management API server and 6 spokes (audit logs on),
3 fleetd replicas as processes (``tests/integration/replicas.py``), one sync
of 2 + ``--extra`` ConfigMaps per spoke, leases of 4 s renewed every second.

1. idle: per replica and minute, requests to the management cluster (from
   its audit log, by verb) and to the spokes (fleetd's own counters), CPU
   seconds and RSS;
2. failover: ``--kills`` times, ``kill -9`` of a replica that owns clusters;
   seconds until its clusters are owned elsewhere, and until they are
   reconciled ready there; the replica is restarted and the fleet settles;
3. hand-off: ``--stops`` times, SIGTERM of a replica; the same two times;
4. cost per cluster: one replica alone serves every spoke; its idle CPU, RSS
   and request rate against the same replica serving a third of them, and
   what one full reconcile of every spoke (``fleetd reconcile``: every object
   dry-run, as the hourly sweep and a takeover do) costs it.

Every phase ends by checking the audit logs: no replica wrote to a spoke
whose Lease it did not hold.

    python bench/failover.py [--spokes 6] [--kills 10] [--stops 5] [--idle 60] [--extra 48]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleetd.shard.assign import assign
from testbed.bed import TestBed
from testbed.build import put_tools_on_path
from tests import audit
from tests.integration.replicas import LEASE_NAMESPACE, Replica, ShardedFleet, unfenced_writes, user_of

IDENTITIES = ("hub-a", "hub-b", "hub-c")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def spoke_requests(replica: Replica) -> float:
    """Requests the replica sent to spokes since it started (its fleetd_api_requests_total)."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{replica.port}/metrics") as resp:
        text = await resp.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("fleetd_api_requests_total{")
    )


async def idle(fleet: ShardedFleet, seconds: float, label: str) -> dict[str, dict[str, float]]:
    """Per running replica: per-minute rates over an idle window, and RSS at its end."""
    running = fleet.running()
    start, wall = {r.identity: (cpu_seconds(pid(r)), await spoke_requests(r)) for r in running}, time.time()
    await asyncio.sleep(seconds)
    assert fleet.management.audit_log is not None
    lease = [r for r in audit.requests(fleet.management.audit_log, since=wall) if r.resource == "leases"]
    minutes = (time.time() - wall) / 60
    found = {}
    owned = await fleet.owners()
    for r in running:
        verbs = Counter(x.verb for x in lease if x.user == user_of(r.identity))
        cpu0, req0 = start[r.identity]
        clusters = sum(1 for owners in owned.values() if r.identity in owners)
        found[r.identity] = {
            "clusters": clusters,
            "lease_per_min": sum(verbs.values()) / minutes,
            "spoke_per_min": (await spoke_requests(r) - req0) / minutes,
            "cpu_s_per_min": (cpu_seconds(pid(r)) - cpu0) / minutes,
            "rss_mib": rss_mib(pid(r)),
        }
        f = found[r.identity]
        print(f"  {label} {r.identity}: {clusters} clusters; management {dict(verbs)} in {minutes:.2f} min "
              f"= {f['lease_per_min']:.1f}/min; spokes {f['spoke_per_min']:.2f}/min; "
              f"CPU {f['cpu_s_per_min']:.2f} s/min; RSS {f['rss_mib']:.0f} MiB")  # fmt: skip
    return found


def pid(replica: Replica) -> int:
    assert replica.process is not None
    return replica.process.pid


async def settled(fleet: ShardedFleet, restarted: Replica | None = None, since: float = 0.0) -> None:
    """Every spoke owned as rendezvous over the running replicas says, and ready — the restarted
    replica's clusters reconciled by it since ``since`` — then a second of quiet."""
    want = assign(dict.fromkeys(s.name for s in fleet.spokes), [r.identity for r in fleet.running()])
    back = [c for c, o in want.items() if restarted is not None and o == restarted.identity]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if await fleet.converged(want) == want and await fleet.converged(back, since=since) is not None:
            await asyncio.sleep(1.0)
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the fleet did not settle")


async def moved(fleet: ShardedFleet, victim: Replica, sig: signal.Signals) -> tuple[float, float, int]:
    """Signal ``victim``; seconds until its clusters are owned elsewhere, then until ready there."""
    owners = await fleet.converged([s.name for s in fleet.spokes])
    assert owners is not None
    theirs = [c for c, o in owners.items() if o == victim.identity]
    others = [r for r in fleet.running() if r is not victim]
    t0, since = time.monotonic(), time.time()
    victim.signal(sig)
    owned_at = None
    while True:
        claims = await fleet.owners(others)
        if owned_at is None and all(len(claims[c]) == 1 for c in theirs):
            owned_at = time.monotonic() - t0
        if owned_at is not None and await fleet.converged(theirs, replicas=others, since=since):
            return owned_at, time.monotonic() - t0, len(theirs)
        await asyncio.sleep(0.02)


async def full_sweep(fleet: ShardedFleet, replica: Replica) -> None:
    """CPU seconds and requests of one full reconcile of every spoke by ``replica``."""
    cpu0, req0, since = cpu_seconds(pid(replica)), await spoke_requests(replica), time.time()
    argv = [sys.executable, "-m", "fleetd", "reconcile", "--config", str(replica.config)]
    done = await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    _, took = await fleet.wait_converged(replicas=[replica], since=since, timeout=120)
    n = len(fleet.spokes)
    cpu, requests = cpu_seconds(pid(replica)) - cpu0, await spoke_requests(replica) - req0
    print(f"  full reconcile of {n} spokes x {2 + fleet.extra} objects: {took:.2f}s wall, CPU {cpu:.2f}s "
          f"({cpu / n:.3f}s/cluster), {requests:.0f} requests ({requests / n:.0f}/cluster)")  # fmt: skip


def summary(label: str, values: list[float]) -> str:
    return (f"{label}: p50 {statistics.median(values):.2f}s, max {max(values):.2f}s, min {min(values):.2f}s "
            f"over {len(values)}")  # fmt: skip


async def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="fleetd-bench-shard-"))
    names = [f"edge-{i}" for i in range(1, args.spokes + 1)]
    t0 = time.monotonic()
    bed = TestBed([])
    try:
        bed.start()
        management, *spokes = bed.add_spokes(["management", *names], audit=True)
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": LEASE_NAMESPACE}}
        management.request("POST", "/api/v1/namespaces", namespace)
        print(f"test bed: management + {len(spokes)} spokes up in {time.monotonic() - t0:.1f}s")
        fleet = ShardedFleet(work, management, spokes, lease_duration=args.lease, renew_period=args.renew,
                             extra=args.extra)  # fmt: skip
        print(f"workload: {len(spokes)} spokes x {2 + args.extra} ConfigMaps; lease {args.lease}s, "
              f"renew every {args.renew}s; 3 replicas")  # fmt: skip
        try:
            await phases(fleet, args)
        finally:
            fleet.reap_all()
        bad = unfenced_writes(fleet)
        print(f"audit: {len(bad)} write(s) to a spoke by a replica not holding its Lease")
        lapses = sum(r.log().count("could not be renewed in time") for r in fleet.replicas.values())
        print(f"clusters dropped because a membership renewal was not answered in time: {lapses}")
    finally:
        bed.stop()


async def phases(fleet: ShardedFleet, args: argparse.Namespace) -> None:
    fleet.start(*IDENTITIES)
    await settled(fleet)
    print("1. idle, 3 replicas")
    shared = await idle(fleet, args.idle, "3 replicas:")
    print(f"2. failover: {args.kills} x kill -9")
    owned, ready = [], []
    for i in range(args.kills):
        owners = await fleet.converged([s.name for s in fleet.spokes])
        assert owners is not None
        candidates = sorted(set(owners.values()))
        victim = fleet.replicas[candidates[i % len(candidates)]]
        took_owned, took_ready, n = await moved(fleet, victim, signal.SIGKILL)
        owned.append(took_owned)
        ready.append(took_ready)
        print(f"  kill {i + 1}: {victim.identity} ({n} clusters) owned elsewhere after {took_owned:.2f}s, "
              f"ready there after {took_ready:.2f}s")  # fmt: skip
        victim.reap()
        restarted = time.time()
        fleet.start(victim.identity)
        await settled(fleet, fleet.replicas[victim.identity], restarted)
    print("  " + summary("owned elsewhere", owned))
    print("  " + summary("ready elsewhere", ready))
    print(f"3. hand-off: {args.stops} x SIGTERM")
    owned, ready = [], []
    for i in range(args.stops):
        owners = await fleet.converged([s.name for s in fleet.spokes])
        assert owners is not None
        victim = fleet.replicas[sorted(set(owners.values()))[i % len(set(owners.values()))]]
        took_owned, took_ready, n = await moved(fleet, victim, signal.SIGTERM)
        owned.append(took_owned)
        ready.append(took_ready)
        print(f"  stop {i + 1}: {victim.identity} ({n} clusters) owned elsewhere after {took_owned:.2f}s, "
              f"ready there after {took_ready:.2f}s")  # fmt: skip
        victim.reap()
        restarted = time.time()
        fleet.start(victim.identity)
        await settled(fleet, fleet.replicas[victim.identity], restarted)
    print("  " + summary("owned elsewhere", owned))
    print("  " + summary("ready elsewhere", ready))
    print("4. one replica serves every spoke")
    for identity in IDENTITIES[1:]:
        fleet.replicas[identity].signal(signal.SIGTERM)
        fleet.replicas[identity].reap()
    await settled(fleet)
    alone = (await idle(fleet, args.idle, "1 replica:"))[IDENTITIES[0]]
    one = shared[IDENTITIES[0]]
    await full_sweep(fleet, fleet.replicas[IDENTITIES[0]])
    if alone["clusters"] > one["clusters"]:
        added = alone["clusters"] - one["clusters"]
        slope = {k: (alone[k] - one[k]) / added for k in ("cpu_s_per_min", "rss_mib", "spoke_per_min")}
        print(f"  per added cluster: CPU {slope['cpu_s_per_min']:.3f} s/min, RSS {slope['rss_mib']:.1f} MiB, "
              f"spoke requests {slope['spoke_per_min']:.2f}/min")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spokes", type=int, default=6)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--stops", type=int, default=5)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of each idle window")
    parser.add_argument("--extra", type=int, default=48, help="ConfigMaps per spoke beyond the first two")
    parser.add_argument("--lease", type=int, default=4, help="lease_duration, whole seconds")
    parser.add_argument("--renew", type=float, default=1.0, help="renew_period, seconds")
    put_tools_on_path()
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
