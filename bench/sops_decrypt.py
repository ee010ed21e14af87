"""Benchmark: decrypt SOPS secrets natively (fleetd.secrets.sops) vs with the sops binary.

Workload (defaults): 500 Kubernetes Secret manifests in YAML, 8 ``stringData``
entries each, encrypted by the real sops binary (the test bed's build) for one
age recipient with ``--encrypted-regex '^(data|stringData)$'``, the usual
setup for Kubernetes secrets. Every file is a separate encryption (its own
data key), as in a real repository.

Each mode runs in a fresh Python process that reads all files first, then
decrypts each once, in sequence. Printed per mode: wall time, CPU seconds
(the process plus, for the binary, its sops children), per-file p50/p95/p99
latency, and peak RSS (the Python process; for the binary also the largest
sops process). A digest of all decrypted documents checks that both modes
return the same data.

    python bench/sops_decrypt.py [--files 500] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyrage

from fleetd.inventory.model import Decryption
from fleetd.secrets.sops import KeyRing, decrypt
from testbed.build import toolset

MODES = ("native", "binary")


def secret_manifest(index: int) -> str:
    entries = "".join(f"    key_{n}: value-{index}-{n}-{os.urandom(12).hex()}\n" for n in range(8))
    return (
        "apiVersion: v1\nkind: Secret\nmetadata:\n"
        f"    name: app-{index}\n    namespace: team-{index % 7}\n"
        f"    labels:\n        app: app-{index}\ntype: Opaque\nstringData:\n{entries}"
    )


def generate(workdir: Path, count: int) -> None:
    """`count` encrypted secrets in `workdir` (kept if already there) and the key file."""
    key_file = workdir / "keys.txt"
    if not key_file.exists():
        identity = pyrage.x25519.Identity.generate()
        key_file.write_text(f"# public key: {identity.to_public()}\n{identity}\n")
        key_file.chmod(0o600)
    recipient = key_file.read_text().split("public key: ")[1].split()[0]
    missing = [i for i in range(count) if not (workdir / f"secret-{i:04d}.yaml").exists()]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(lambda i: encrypt_one(workdir, i, recipient), missing))
    if missing:
        print(f"encrypted {len(missing)} files with sops in {time.monotonic() - started:.1f}s")


def encrypt_one(workdir: Path, index: int, recipient: str) -> None:
    argv = [str(toolset().path("sops")), "encrypt", "--age", recipient]
    argv += ["--encrypted-regex", "^(data|stringData)$", "--filename-override", "secret.yaml"]
    plain = secret_manifest(index).encode()
    done = subprocess.run(argv, input=plain, capture_output=True, check=True, cwd=workdir)
    (workdir / f"secret-{index:04d}.yaml").write_bytes(done.stdout)


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(mode: str, workdir: Path, count: int) -> dict[str, Any]:
    """Decrypt every file once in this process; the figures as a dict."""
    decryption = Decryption(age_key_files=(workdir / "keys.txt",), sops_binary=str(toolset().path("sops")))
    keys = KeyRing.from_decryption(decryption)
    files = [(path, path.read_bytes()) for path in sorted(workdir.glob("secret-*.yaml"))[:count]]
    digest, latencies = hashlib.sha256(), []
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    for path, data in files:
        started = time.perf_counter()
        document = decrypt(data, "yaml", keys, source=path, use_binary=mode == "binary")
        latencies.append(time.perf_counter() - started)
        digest.update(json.dumps(document, sort_keys=True, default=str).encode())
    wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "files": len(files),
        "wall": wall,
        "cpu": cpu,
        "p50": quantiles[49],
        "p95": quantiles[94],
        "p99": quantiles[98],
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "child_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "digest": digest.hexdigest(),
    }


def run_mode(mode: str, workdir: Path, count: int) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--measure", mode, "--workdir", str(workdir), "--files", str(count)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def report(results: dict[str, dict[str, Any]]) -> None:
    columns = ("wall s", "cpu s", "p50 ms", "p95 ms", "p99 ms")
    print(f"{'mode':<8} {'files':>5} " + " ".join(f"{c:>8}" for c in columns) + f" {'peak RSS':>24}")
    for mode, r in results.items():
        rss = f"{r['rss_mb']:.0f} MB" + (f" (sops {r['child_rss_mb']:.0f} MB)" if mode == "binary" else "")
        latencies = " ".join(f"{r[q] * 1000:8.2f}" for q in ("p50", "p95", "p99"))
        print(f"{mode:<8} {r['files']:>5} {r['wall']:8.2f} {r['cpu']:8.2f} {latencies} {rss:>24}")
    native, binary = results["native"], results["binary"]
    print(f"speed-up: wall x{binary['wall'] / native['wall']:.0f}, cpu x{binary['cpu'] / native['cpu']:.0f}")
    print(f"same plaintext from both: {'yes' if native['digest'] == binary['digest'] else 'NO'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=500, help="number of secrets (default 500)")
    parser.add_argument("--workdir", type=Path, help="keep the encrypted files here (reused next time)")
    parser.add_argument("--measure", choices=MODES, help=argparse.SUPPRESS)  # the per-mode child process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.workdir, args.files)))
        return
    with tempfile.TemporaryDirectory(prefix="fleetd-sops-bench-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        generate(workdir, args.files)
        report({mode: run_mode(mode, workdir, args.files) for mode in MODES})


if __name__ == "__main__":
    main()
