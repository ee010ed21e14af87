"""Command line for the test bed: ``python -m testbed {build,up,demo}``.

``up`` starts a bed, prints one line per spoke with its kubeconfig paths,
then stays up until interrupted (Ctrl-C or SIGTERM), and tears everything
down on the way out. The demo and the benchmarks drive it this way.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from testbed.bed import TestBed
from testbed.build import build, put_tools_on_path
from testbed.demo import run_demo


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m testbed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build (or reuse) the pinned test-bed binaries")
    b.add_argument("--force", action="store_true", help="rebuild even when cached")
    up = sub.add_parser("up", help="start spokes and keep them up until interrupted")
    up.add_argument("--spokes", type=int, default=2, help="number of spokes (default 2)")
    up.add_argument("--names", nargs="+", metavar="NAME", help="spoke names (overrides --spokes)")
    up.add_argument(
        "--full", action="store_true", help="add controller-manager, scheduler and kwok per spoke"
    )
    up.add_argument("--kubeconfig-dir", type=Path, help="where to write kubeconfigs (default: a temp dir)")
    up.add_argument("--ready-file", type=Path, help="write a JSON description here once the bed is up")
    demo = sub.add_parser("demo", help="start the demo fleet of the example inventory and run fleetd on it")
    demo.add_argument(
        "--config", type=Path, default=Path("clusters/fleetd.toml"), help="fleet-wide TOML file"
    )
    demo.add_argument("--no-hold", action="store_true", help="stop the spokes once the demo has run")
    demo.add_argument(
        "--example-repo",
        type=Path,
        default=Path("examples/fleet-repo"),
        help="directory published as the git source",
    )
    return parser


def _up(args: argparse.Namespace) -> int:
    names = args.names or [f"spoke-{i}" for i in range(1, args.spokes + 1)]
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    with TestBed(names, full=args.full, kubeconfig_dir=args.kubeconfig_dir) as bed:
        took = time.monotonic() - started
        described = {
            n: {
                "server": s.server,
                "kubeconfig": str(s.kubeconfig),
                "viewer_kubeconfig": str(s.viewer_kubeconfig),
            }
            for n, s in bed.spokes.items()
        }
        for name, info in described.items():
            print(f"{name}\t{info['server']}\t{info['kubeconfig']}\t{info['viewer_kubeconfig']}")
        print(f"test bed up: {len(names)} spoke(s) in {took:.1f}s; Ctrl-C to stop", flush=True)
        if args.ready_file:
            args.ready_file.write_text(json.dumps(described, indent=2))
        stop.wait()
        print("test bed: stopping", file=sys.stderr, flush=True)
    if args.ready_file:
        args.ready_file.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    put_tools_on_path()
    if args.command == "build":
        started = time.monotonic()
        tools = build(force=args.force)
        print(f"test bed binaries ready in {tools.bin_dir} ({time.monotonic() - started:.1f}s)")
        return 0
    if args.command == "demo":
        return run_demo(args.config, hold=not args.no_hold, example_repo=args.example_repo)
    return _up(args)


if __name__ == "__main__":
    raise SystemExit(main())
