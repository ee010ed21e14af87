"""Benchmark: the web UI's server time per request, page weight, and time to first render.

A synthetic fleet — a real inventory and a real state store (tests/fleetstate.py)
of N clusters by M syncs, ten objects each in the hub's ledger, a few failed
and drifted syncs, a journal of a few thousand events — is served by the
real HTTP app on loopback. No daemon and no spoke: what is measured is the
web layer reading the fleet state.

1. server time: sequential GETs of each page and API document, p50/p95
   (client-measured over loopback, so an upper bound of the handler's time);
2. page weight: bytes of the overview and its assets, raw and gzipped;
3. first render: first-contentful-paint of the overview in headless
   Chromium (Debian's ``/usr/bin/chromium``), cold cache, for a small fleet
   (2 x 3) and the large one.

    python bench/web.py [--clusters 10] [--syncs 20] [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from aiohttp.test_utils import TestServer
from playwright.async_api import async_playwright

from fleetd.api.http import make_app
from fleetd.daemon.state import FleetState
from fleetd.kube.objects import Entry, ObjRef
from fleetd.reconcile.ledger import Ledger
from fleetd.reconcile.outcome import Result, SyncOutcome
from tests.conftest import CHROMIUM, CHROMIUM_FLAGS, FCP
from tests.fleetstate import drifted, fleet_state
from tests.integration.test_web import View

REV = "0123456789abcdef0123456789abcdef01234567"


def synthetic(root: Path, clusters: int, syncs: int) -> FleetState:
    names = tuple(f"cluster-{i:02d}" for i in range(clusters))
    state = fleet_state(root, clusters=names, syncs=tuple(f"sync-{j:02d}" for j in range(syncs)))
    state.fetched(0.3, revision=REV, ref="branch main", message="bench: a revision")
    state.advance(REV)
    for i, cluster in enumerate(names):
        state.reachability(cluster, True)
        for j in range(syncs):
            sync = f"sync-{j:02d}"
            entries = frozenset(Entry(ObjRef("", "ConfigMap", f"ns-{j}", f"cm-{k}"), "v1") for k in range(10))
            ledger = Ledger(sync=sync, revision=REV, prune=True, entries=entries)
            failed = (i + j) % 37 == 0
            outcome = SyncOutcome(
                sync=sync, revision=REV, result=Result.FAILED if failed else Result.READY, objects=10,
                error="apps/web.yaml#1: bad" if failed else None, ledger=None if failed else ledger,
            )  # fmt: skip
            state.record(cluster, outcome)
            if (i * syncs + j) % 23 == 0:
                drifted(state, cluster, sync, 2)
    while len(state.events(limit=3000)) < 3000:
        state.operator("bench: filler event", cluster=names[0])
    return state


async def timings(base: str, paths: list[str], n: int) -> dict[str, tuple[float, float]]:
    out = {}
    async with aiohttp.ClientSession() as session:
        for path in paths:
            samples = []
            for _ in range(n):
                started = time.perf_counter()
                async with session.get(base + path) as response:
                    await response.read()
                    assert response.status == 200, path
                samples.append((time.perf_counter() - started) * 1000)
            samples.sort()
            out[path] = (statistics.median(samples), samples[int(len(samples) * 0.95) - 1])
    return out


async def weight(base: str) -> dict[str, tuple[int, int]]:
    out = {}
    async with aiohttp.ClientSession(auto_decompress=True) as session:
        for path in ("/", "/static/app.css", "/static/app.js", "/static/icon.svg"):
            async with session.get(base + path, headers={"Accept-Encoding": "identity"}) as response:
                raw = await response.read()
            out[path] = (len(raw), len(gzip.compress(raw)))
    return out


async def first_paint(base: str, runs: int = 5) -> float:
    samples = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS))
        for _ in range(runs):
            context = await browser.new_context()
            page = await context.new_page()
            await page.goto(base + "/", wait_until="load")
            fcp = await page.evaluate(FCP)
            samples.append(float(fcp))
            await context.close()
        await browser.close()
    return statistics.median(samples)


async def serve(state: FleetState) -> tuple[TestServer, str]:
    server = TestServer(make_app(View(), state, {}), host="127.0.0.1")
    await server.start_server()
    return server, f"http://127.0.0.1:{server.port}"


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--syncs", type=int, default=20)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        big = synthetic(Path(tmp) / "big", args.clusters, args.syncs)
        small = synthetic(Path(tmp) / "small", 2, 3)
        server, base = await serve(big)
        paths = [
            "/", "/rollout", "/events", "/clusters/cluster-00", "/clusters/cluster-01/syncs/sync-05",
            "/api/v1/clusters", "/api/v1/clusters/cluster-00", "/api/v1/clusters/cluster-01/syncs/sync-05",
            "/api/v1/events", "/api/v1/revisions", "/?fragment=matrix",
        ]  # fmt: skip
        print(f"fleet: {args.clusters} clusters x {args.syncs} syncs, {len(big.events(limit=10000))} events")
        print("server time per request (ms, p50 / p95):")
        for path, (p50, p95) in (await timings(base, paths, args.requests)).items():
            print(f"  {path:45} {p50:6.2f} / {p95:6.2f}")
        print("page weight (bytes, raw / gzip):")
        total = [0, 0]
        for path, (raw, gz) in (await weight(base)).items():
            total[0] += raw
            total[1] += gz
            print(f"  {path:45} {raw:7d} / {gz:6d}")
        print(f"  {'total':45} {total[0]:7d} / {total[1]:6d}")
        paint = await first_paint(base)
        print(f"first contentful paint, {args.clusters}x{args.syncs}: {paint:.0f} ms (median of 5)")
        await server.close()
        small_server, small_base = await serve(small)
        print(f"first contentful paint, 2x3: {await first_paint(small_base):.0f} ms (median of 5)")
        await small_server.close()


if __name__ == "__main__":
    asyncio.run(main())
