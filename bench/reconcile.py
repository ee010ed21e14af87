"""Benchmark: reconcile a fleet of real spokes — cold apply, no-op reconcile, a small change.

Workload (defaults): 3 spokes of the test bed, one sync of 300 objects per
spoke (100 ConfigMaps, 100 Services, 100 Deployments in one namespace),
fleet concurrency 3. Prints wall time, API requests, CPU seconds and peak
RSS of the fleetd process (the API servers are separate processes).

    python bench/reconcile.py [--spokes 3] [--objects 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleetd.daemon.root import Daemon
from fleetd.daemon.store import SyncStatus
from testbed.bed import TestBed
from tests.gitrepo import WorkRepo
from tests.integration.fleet import configmap, deployment, namespace_doc, write_fleet


def manifests(count: int, version: str) -> dict[str, str]:
    per_kind = count // 3
    files = {"load/ns.yaml": namespace_doc("bench")}
    for i in range(per_kind):
        files[f"load/cm-{i}.yaml"] = configmap(f"cm-{i}", "bench", {"version": version if i < 10 else "1"})
        svc = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"svc-{i}", "namespace": "bench"},
            "spec": {"selector": {"app": f"d-{i}"}, "ports": [{"port": 80, "targetPort": 8080}]},
        }
        files[f"load/svc-{i}.yaml"] = json.dumps(svc)
        files[f"load/deploy-{i}.yaml"] = deployment(f"d-{i}", "bench")
    return files


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(daemon: Daemon, label: str, revision: str, start: float, cpu0: float, req0: int) -> None:
    def statuses() -> list[SyncStatus | None]:
        return [daemon.state.status(name, "load") for name in daemon.workers]

    while not all(s is not None and s.revision == revision and s.attempted_at >= start for s in statuses()):
        await asyncio.sleep(0.02)
    wall = time.time() - start
    requests = sum(w.requests for w in daemon.workers.values()) - req0
    changed = sum(s.changed for s in statuses() if s)
    print(
        f"{label:<28} wall {wall:6.2f}s  cpu {cpu() - cpu0:6.2f}s  requests {requests:6d}  changed {changed}"
    )


async def run(spokes: int, objects: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="fleetd-bench-"))
    t0 = time.monotonic()
    with TestBed([f"bench-{i}" for i in range(spokes)]) as bed:
        print(f"test bed: {spokes} spokes up in {time.monotonic() - t0:.1f}s")
        repo = WorkRepo(work / "repo").write(manifests(objects, "1"))
        rev = repo.commit("bench")
        config = write_fleet(
            work,
            repo=repo.path,
            clusters={n: s.kubeconfig for n, s in bed.spokes.items()},
            syncs=[{"name": "load", "path": "load", "interval": "1h", "timeout": "10m"}],
        )
        daemon = Daemon.from_config(config)
        task = asyncio.create_task(daemon.run())
        print(f"workload: {spokes} spokes x {objects} objects (one sync)")
        await measure(daemon, "cold apply (all spokes)", rev, time.time(), cpu(), 0)
        for label in ("no-op reconcile", "no-op reconcile (again)"):
            req0, cpu0, start = sum(w.requests for w in daemon.workers.values()), cpu(), time.time()
            daemon.trigger()
            await measure(daemon, label, rev, start, cpu0, req0)
        repo.write(manifests(objects, "2"))
        rev2 = repo.commit("change 10 configmaps")
        req0, cpu0, start = sum(w.requests for w in daemon.workers.values()), cpu(), time.time()
        daemon.trigger_fetch()
        await measure(daemon, "change 10 objects", rev2, start, cpu0, req0)
        daemon.stop()
        await task
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"fleetd peak RSS: {peak:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spokes", type=int, default=3)
    parser.add_argument("--objects", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(run(args.spokes, args.objects))


if __name__ == "__main__":
    main()
