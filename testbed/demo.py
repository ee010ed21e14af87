"""The demo fleet: test-bed spokes named like the example inventory, reconciled by fleetd.

``python -m testbed demo`` (what ``make demo`` runs):

1. publishes ``examples/fleet-repo/`` as a local git repository where the
   example inventory's ``[source] url`` points (a new commit only when the
   directory changed — edit it and run the demo again to see a rollout);
2. starts one spoke per cluster of ``clusters/`` (``mac-mini`` and ``pi5``)
   and writes their kubeconfigs where the inventory expects them;
3. runs ``fleetd check``, then ``fleetd run``, waits until every sync is
   ready, prints ``fleetd status`` and the web UI's address;
4. keeps everything up until Ctrl-C, so you can look with ``kubectl``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from fleetd.daemon.status import status_rows
from fleetd.daemon.store import StateStore
from fleetd.inventory import Fleet, load_fleet
from fleetd.source import publish_directory
from testbed.bed import TestBed

DEMO_KUBECONFIG_DIR = Path.home() / ".kube" / "fleetd-demo"
READY_TIMEOUT = 180.0


def _fleetd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fleetd", *args]


def run_demo(config: Path, *, hold: bool, example_repo: Path) -> int:
    """Bring the demo fleet up, reconcile it with fleetd, and optionally keep it up."""
    fleet = load_fleet(config)
    for key in fleet.decryption.age_key_files:  # git checkouts leave the demo key world-readable
        if key.is_file():
            key.chmod(0o600)
    repo = fleet.source.local_path
    if repo is None:
        print(f"demo: {config} must point [source] url at a local path", file=sys.stderr)
        return 2
    head = publish_directory(example_repo, repo, "demo: publish examples/fleet-repo")
    print(f"demo: {example_repo} published to {repo} at {head[:12]}", flush=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    names = [c.name for c in fleet.clusters]
    print(f"demo: starting spokes {', '.join(names)} (kubeconfigs in {DEMO_KUBECONFIG_DIR})", flush=True)
    with TestBed(names, kubeconfig_dir=DEMO_KUBECONFIG_DIR) as bed:
        print(f"demo: $ fleetd check --config {config}", flush=True)
        if subprocess.run(_fleetd("check", "--config", str(config)), check=False).returncode != 0:
            return 1
        print(f"demo: $ fleetd run --config {config}", flush=True)
        daemon = subprocess.Popen(_fleetd("run", "--config", str(config)))
        try:
            ready = _wait_until_ready(fleet, head, daemon, stop)
            print(f"demo: $ fleetd status --config {config}", flush=True)
            subprocess.run(_fleetd("status", "--config", str(config)), check=False)
            host = f"[{fleet.listen_host}]" if ":" in fleet.listen_host else fleet.listen_host
            print(f"demo: web UI at http://{host}:{fleet.listen_port}/", flush=True)
            if hold and ready:
                for name, spoke in bed.spokes.items():
                    print(f"demo: kubectl --kubeconfig {spoke.kubeconfig} get all -A   # {name}")
                print("demo: fleetd keeps reconciling until Ctrl-C", flush=True)
                stop.wait()
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
    return 0 if ready else 1


def _wait_until_ready(
    fleet: Fleet, head: str, daemon: subprocess.Popen[bytes], stop: threading.Event
) -> bool:
    state = StateStore(fleet.state_dir)
    started, deadline = time.time(), time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline and daemon.poll() is None and not stop.is_set():
        rows = status_rows(fleet, state)
        # The spokes are new on every run: only reconciles of this run count.
        fresh = [r for r in rows if (r["attempted_at"] or 0) >= started - 1]
        if (
            rows
            and all(r["result"] == "ready" and r["revision"] == head for r in fresh)
            and len(fresh) == len(rows)
        ):
            return True
        time.sleep(0.5)
    return False
