"""Benchmark: drift correction latency, steady-state API traffic, webhook push-to-converged latency.

Workload (defaults): 3 test-bed spokes, one sync of 300 objects per spoke
(100 ConfigMaps, 100 Services, 100 Deployments), drift policy ``correct``,
sync interval 10m, a GitHub webhook receiver.

1. steady state: API requests fleetd sends per minute to the converged fleet
   with no changes (watches only, ideally);
2. drift: N manual changes (a ConfigMap value patched by another field
   manager), spread over the spokes one after another; latency from the
   change being accepted by the API server to fleetd's correction being
   visible (p50/p95/p99, including this script's 10 ms polling);
3. webhook: a commit, then a signed GitHub push; latency until all spokes
   show the new value.

    python bench/drift.py [--changes 120] [--steady 60] [--pushes 5]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import resource
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.reconcile import manifests
from fleetd.daemon.root import Daemon
from testbed.bed import Spoke, TestBed
from tests.gitrepo import WorkRepo
from tests.integration.fleet import configmap, write_fleet

SECRET = b"bench-webhook-secret"


def percentiles(values: list[float]) -> str:
    q = statistics.quantiles(values, n=100, method="inclusive")
    ms = {"p50": q[49], "p95": q[94], "p99": q[98], "max": max(values)}
    return "  ".join(f"{k} {v * 1000:7.1f} ms" for k, v in ms.items())


def requests(daemon: Daemon) -> dict[str, int]:
    total: dict[str, int] = {}
    for worker in daemon.workers.values():
        for method, n in worker.request_totals().items():
            total[method] = total.get(method, 0) + n
    return total


async def wait_watched(daemon: Daemon) -> None:
    while not all(w.drift is not None and w.drift.vouches_for("load") for w in daemon.workers.values()):
        await asyncio.sleep(0.05)


async def steady(daemon: Daemon, seconds: float) -> None:
    before = requests(daemon)
    await asyncio.sleep(seconds)
    after = requests(daemon)
    delta = {m: after.get(m, 0) - before.get(m, 0) for m in after}
    per_minute = sum(delta.values()) * 60 / seconds
    print(f"steady state ({seconds:.0f}s, no changes): {per_minute:.1f} requests/min  by method {delta}")


def patch(spoke: Spoke, name: str, value: str) -> None:
    body = json.dumps({"data": {"version": value}}).encode()
    req = urllib.request.Request(
        f"{spoke.server}/api/v1/namespaces/bench/configmaps/{name}?fieldManager=bench-hand",
        data=body, method="PATCH", headers={"Content-Type": "application/merge-patch+json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=10, context=spoke._ssl()) as resp:
        resp.read()


def value(spoke: Spoke, name: str) -> str:
    return str(spoke.request("GET", f"/api/v1/namespaces/bench/configmaps/{name}")["data"]["version"])


async def drift(bed: TestBed, changes: int) -> None:
    spokes = list(bed.spokes.values())
    latencies = []
    for i in range(changes):
        spoke, name = spokes[i % len(spokes)], f"cm-{50 + i % 50}"
        await asyncio.to_thread(patch, spoke, name, f"hand-{i}")
        started = time.monotonic()
        while await asyncio.to_thread(value, spoke, name) != "1":
            await asyncio.sleep(0.01)
        latencies.append(time.monotonic() - started)
    print(f"drift correction, {changes} changes over {len(spokes)} spokes: {percentiles(latencies)}")


async def pushes(daemon: Daemon, bed: TestBed, repo: WorkRepo, count: int) -> None:
    url = f"http://{daemon.fleet.listen_host}:{daemon.fleet.listen_port}/hooks/github"
    latencies = []
    for i in range(count):
        repo.write({"load/cm-0.yaml": configmap("cm-0", "bench", {"version": f"push-{i}"})})
        repo.commit(f"push {i}")
        body = b'{"ref": "refs/heads/main"}'
        signature = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": signature}
        started = time.monotonic()
        req = urllib.request.Request(url, data=body, method="POST", headers=headers)
        await asyncio.to_thread(urllib.request.urlopen, req)
        while not all(
            [await asyncio.to_thread(value, s, "cm-0") == f"push-{i}" for s in bed.spokes.values()]
        ):
            await asyncio.sleep(0.01)
        latencies.append(time.monotonic() - started)
    print(
        f"webhook push to converged ({count} pushes, all spokes): "
        + " ".join(f"{x * 1000:.0f}ms" for x in latencies)
    )


async def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="fleetd-bench-"))
    with TestBed([f"bench-{i}" for i in range(args.spokes)]) as bed:
        repo = WorkRepo(work / "repo").write(manifests(args.objects, "1"))
        repo.commit("bench")
        secret = work / "secret"
        secret.write_bytes(SECRET)
        secret.chmod(0o600)
        config = write_fleet(
            work, repo=repo.path, clusters={n: s.kubeconfig for n, s in bed.spokes.items()},
            syncs=[{"name": "load", "path": "load", "interval": "10m", "timeout": "10m"}],
        )  # fmt: skip
        config.write_text(config.read_text() + f'\n[webhooks]\ngithub_secret_file = "{secret}"\n')
        daemon = Daemon.from_config(config)
        task = asyncio.create_task(daemon.run())
        started = time.monotonic()
        await daemon.http_ready.wait()
        await wait_watched(daemon)
        took = time.monotonic() - started
        print(
            f"workload: {args.spokes} spokes x {args.objects} objects; converged and watched in {took:.1f}s"
        )
        await steady(daemon, args.steady)
        await drift(bed, args.changes)
        await pushes(daemon, bed, repo, args.pushes)
        daemon.stop()
        await task
    print(f"fleetd peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spokes", type=int, default=3)
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--changes", type=int, default=120)
    parser.add_argument("--steady", type=float, default=60.0, help="seconds of steady state to measure")
    parser.add_argument("--pushes", type=int, default=5)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
