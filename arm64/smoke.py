"""Smoke test of the Raspberry Pi 5 artefact, run by arm64/check.sh under qemu-aarch64.

    python3.11 -P smoke.py SITE_DIR VERSION

Importing is not enough to trust a wheel of native code: a wrong-architecture
or too-new-glibc extension fails at import, but a broken one can also fail at
its first call. So besides importing every dependency (timed: that is the
start-up cost fleetd pays on the Pi), each native library does one small real
thing: libgit2 writes and reads a commit, age encrypts and decrypts, OpenSSL
signs and seals, libyaml parses, and aiohttp serves and fetches one HTTP
request over loopback. Every failure names the library and what it was doing.
"""

from __future__ import annotations

import asyncio
import platform
import sys
import tempfile
import time
from collections.abc import Callable

FAILURES: list[str] = []


def check(name: str, func: Callable[[], str]) -> None:
    """Run one check; print what it proved, or record why it failed."""
    start = time.perf_counter()
    try:
        detail = func()
    except Exception as e:  # noqa: BLE001 - every failure is reported, then the script exits 1
        FAILURES.append(f"{name}: {type(e).__name__}: {e}")
        print(f"smoke: FAILED {name}: {type(e).__name__}: {e}")
        return
    print(f"smoke: ok  {name} ({time.perf_counter() - start:.2f}s) {detail}")


# fleetd.cli.main is the whole command line, as `fleetd` starts it.
MODULES = [
    "aiohttp",
    "cryptography",
    "gnupg",
    "kubernetes_asyncio.client",
    "kubernetes_asyncio.config",
    "prometheus_client",
    "pygit2",
    "pyrage",
    "yaml",
    "fleetd.cli.main",
]


def imports() -> str:
    import importlib

    for name in MODULES:
        importlib.import_module(name)
    return f"{len(MODULES)} modules: " + ", ".join(MODULES)


def target(site: str, version: str) -> str:
    import fleetd

    assert platform.machine() == "aarch64", f"machine is {platform.machine()}, not aarch64"
    assert sys.version_info[:2] == (3, 11), f"Python is {sys.version}, not 3.11"
    origin = fleetd.__file__ or ""
    assert origin.startswith(site), f"fleetd came from {origin}, not {site}"
    assert fleetd.__version__ == version, f"fleetd {fleetd.__version__} is not the artefact's {version}"
    return f"aarch64, CPython {platform.python_version()}, glibc {platform.libc_ver()[1]}, fleetd {version}"


def c_extensions() -> str:
    import importlib

    names = [
        "aiohttp._http_parser",
        "multidict._multidict",
        "yarl._quoting_c",
        "frozenlist._frozenlist",
        "propcache._helpers_c",
        "yaml._yaml",
        "pygit2._pygit2",
        "pyrage.pyrage",
        "_cffi_backend",
        "cryptography.hazmat.bindings._rust",
    ]
    for name in names:
        module = importlib.import_module(name)
        origin = getattr(module, "__file__", "") or ""
        assert origin.endswith(".so"), f"{name} is not a compiled extension ({origin})"
    return f"{len(names)} compiled modules"


def git() -> str:
    import pygit2

    with tempfile.TemporaryDirectory() as tmp:
        repo = pygit2.init_repository(tmp, bare=True)
        blob = repo.create_blob(b"kind: ConfigMap\n")
        builder = repo.TreeBuilder()
        builder.insert("cm.yaml", blob, pygit2.enums.FileMode.BLOB)
        sig = pygit2.Signature("smoke", "smoke@example.invalid")
        commit = repo.create_commit("refs/heads/main", sig, sig, "smoke", builder.write(), [])
        data = repo.revparse_single("main:cm.yaml").read_raw()
        assert data == b"kind: ConfigMap\n", f"libgit2 read back {data!r} from the commit it wrote"
    return f"libgit2 {pygit2.LIBGIT2_VERSION}: commit {str(commit)[:12]} written and read"


def age() -> str:
    import pyrage

    identity = pyrage.x25519.Identity.generate()
    sealed = pyrage.encrypt(b"data key", [identity.to_public()])
    assert pyrage.decrypt(sealed, [identity]) == b"data key"
    return "x25519 encrypt/decrypt round trip"


def crypto() -> str:
    import os

    from cryptography.hazmat.backends.openssl.backend import backend
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = ec.generate_private_key(ec.SECP256R1())
    signature = key.sign(b"csr", ec.ECDSA(hashes.SHA256()))
    key.public_key().verify(signature, b"csr", ec.ECDSA(hashes.SHA256()))
    aes, nonce = AESGCM(AESGCM.generate_key(bit_length=256)), os.urandom(32)
    assert aes.decrypt(nonce, aes.encrypt(nonce, b"v", b"path:"), b"path:") == b"v"
    return f"{backend.openssl_version_text()}: ECDSA P-256, AES-256-GCM"


def yaml_c() -> str:
    import yaml

    docs = list(yaml.load_all("a: 1\n---\nb: [x, y]\n", Loader=yaml.CSafeLoader))
    assert docs == [{"a": 1}, {"b": ["x", "y"]}], docs
    return "libyaml CSafeLoader"


def metrics() -> str:
    import prometheus_client

    registry = prometheus_client.CollectorRegistry()
    prometheus_client.Counter("smoke_total", "smoke", registry=registry).inc()
    assert b"smoke_total 1.0" in prometheus_client.generate_latest(registry)
    return "exposition"


def http() -> str:
    return asyncio.run(_http())


async def _http() -> str:
    from aiohttp import ClientSession, web

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/healthz", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as resp:
            body = await resp.json()
    finally:
        await runner.cleanup()
    assert body == {"ok": True}, body
    return "aiohttp server and client over loopback"


def main() -> int:
    site, version = sys.argv[1], sys.argv[2]
    start = time.perf_counter()
    check("import", imports)
    print(f"smoke: importing fleetd and all its dependencies took {time.perf_counter() - start:.1f}s")
    check("target", lambda: target(site, version))
    check("c-extensions", c_extensions)
    check("pygit2", git)
    check("pyrage", age)
    check("cryptography", crypto)
    check("pyyaml", yaml_c)
    check("prometheus_client", metrics)
    check("aiohttp", http)
    if FAILURES:
        print(f"smoke: {len(FAILURES)} check(s) failed: " + "; ".join(FAILURES))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
