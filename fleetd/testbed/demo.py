"""The demo fleet: test-bed spokes named like the example inventory, driven by fleetd.

``python -m fleetd.testbed demo`` starts one spoke per cluster of
``clusters/`` (the home lab: ``mac-mini`` and ``pi5``), writes their
kubeconfigs where the example inventory expects them
(``~/.kube/fleetd-demo/``), runs ``fleetd check`` against them, and keeps the
spokes up until Ctrl-C so you can point ``kubectl`` at them.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

from fleetd.inventory import load_fleet
from fleetd.testbed.bed import TestBed

DEMO_KUBECONFIG_DIR = Path.home() / ".kube" / "fleetd-demo"


def run_demo(config: Path, *, hold: bool) -> int:
    """Bring the demo fleet up, show fleetd working on it, and optionally keep it up."""
    fleet = load_fleet(config)
    names = [c.name for c in fleet.clusters]
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"demo: starting spokes {', '.join(names)} (kubeconfigs in {DEMO_KUBECONFIG_DIR})", flush=True)
    with TestBed(names, kubeconfig_dir=DEMO_KUBECONFIG_DIR) as bed:
        print(f"demo: $ fleetd check --config {config}", flush=True)
        code = subprocess.run([sys.executable, "-m", "fleetd", "check", "--config", str(config)], check=False)
        if hold and code.returncode == 0:
            for name, spoke in bed.spokes.items():
                print(f"demo: kubectl --kubeconfig {spoke.kubeconfig} get namespaces   # {name}")
            print("demo: spokes stay up until Ctrl-C", flush=True)
            stop.wait()
    return code.returncode
