"""A real multi-cluster test bed: one etcd, one kube-apiserver per spoke.

Each spoke is a genuine kube-apiserver with its own ``--etcd-prefix``, port,
CAs and client certificates, so server-side apply, field ownership, dry-run,
discovery and watches behave exactly as on a real cluster. The optional
*full* profile adds kube-controller-manager, kube-scheduler and kwok with a
fake node, so Deployments roll out and become Available.

Per spoke two kubeconfigs are written: ``<name>.kubeconfig`` (user
``fleetd-admin`` in ``system:masters``) and ``<name>-viewer.kubeconfig``
(user ``fleetd-viewer``, allowed only to get, list and watch),
the latter for RBAC and impersonation tests. `Spoke.user_kubeconfig` makes
more users on demand (one per fleetd replica, so audit logs tell them apart).

``audit=True`` (`TestBed.add_spokes`) turns on the API server's audit log
(`Spoke.audit_log`, JSON lines; policy in ``audit-policy.yaml``): every write,
and every request on Leases, with the user who sent it — proof of who wrote
what.

Teardown is always complete: :meth:`TestBed.stop` is idempotent, registered
with :mod:`atexit`, and children die with their parent anyway (see
:mod:`testbed.processes`).
"""

from __future__ import annotations

import atexit
import json
import shutil
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from testbed import certs
from testbed.build import Toolset, build
from testbed.processes import Process, free_port

READY_TIMEOUT = 180.0
VIEWER_USER = "fleetd-viewer"
ADMIN_USER = "fleetd-admin"
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"


class TestBedError(RuntimeError):
    """The test bed could not start or reach a component."""


@dataclass(slots=True)
class Spoke:
    """One spoke cluster of the bed and the files a client needs to reach it."""

    name: str
    port: int
    directory: Path
    kubeconfig: Path
    viewer_kubeconfig: Path
    processes: list[Process] = field(default_factory=list)
    full: bool = False
    audit_log: Path | None = None
    """The API server's audit log (JSON lines), when the spoke was started with ``audit=True``."""
    client_ca: certs.Authority | None = field(default=None, repr=False)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def apiserver(self) -> Process:
        return self.processes[0]

    @property
    def running(self) -> bool:
        return bool(self.processes) and all(p.running for p in self.processes)

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.directory / "serving-ca.crt"))
        ctx.load_cert_chain(str(self.directory / "admin.crt"), str(self.directory / "admin.key"))
        return ctx

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """A plain admin REST call (stdlib only) for bed set-up and assertions."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)  # noqa: S310 - https only
        req.add_header("Content-Type", "application/json")
        req.add_header("Accept", "application/json")
        with urllib.request.urlopen(req, timeout=timeout, context=self._ssl()) as resp:  # noqa: S310 - https to our own apiserver
            raw = resp.read()
        return json.loads(raw) if raw.startswith((b"{", b"[")) else raw.decode()

    def user_kubeconfig(self, user: str, groups: tuple[str, ...] = ("system:masters",)) -> Path:
        """A kubeconfig (written next to the others) for a new client-certificate user of this spoke."""
        assert self.client_ca is not None
        pair = certs.client_pair(self.client_ca, user, groups)
        path = self.kubeconfig.with_name(f"{self.name}-{user}.kubeconfig")
        ca = (self.directory / "serving-ca.crt").read_bytes()
        return certs.write_kubeconfig(
            path, name=self.name, server=self.server, ca_pem=ca, client=pair, user=user
        )

    def ready(self) -> bool:
        try:
            return bool(self.request("GET", "/readyz", timeout=2.0) == "ok")
        except (OSError, urllib.error.URLError, ssl.SSLError):
            return False


class TestBed:
    """Start and stop etcd plus N spokes; usable as a context manager."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        names: Iterable[str],
        *,
        full: bool = False,
        kubeconfig_dir: Path | None = None,
        tools: Toolset | None = None,
    ) -> None:
        self.tools = tools or build()
        self.workdir = Path(tempfile.mkdtemp(prefix="fleetd-testbed-"))
        self.kubeconfig_dir = kubeconfig_dir or self.workdir / "kubeconfigs"
        self.full = full
        self.spokes: dict[str, Spoke] = {}
        self._names = list(names)
        self._etcd: Process | None = None
        self._etcd_url = ""
        self._stopped = False
        atexit.register(self.stop)

    # -- lifecycle -------------------------------------------------------

    def start(self) -> TestBed:
        """Start etcd and every spoke, and wait until all are ready."""
        try:
            self._start_etcd()
            self.add_spokes(self._names, full=self.full)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every process and remove the bed's files (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        for spoke in self.spokes.values():
            for proc in reversed(spoke.processes):
                proc.stop()
        if self._etcd is not None:
            self._etcd.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
        atexit.unregister(self.stop)

    def pids(self) -> list[int]:
        """Process ids of every child the bed started (for leak checks)."""
        procs = [p for s in self.spokes.values() for p in s.processes] + ([self._etcd] if self._etcd else [])
        return [p.popen.pid for p in procs if p.popen is not None]

    def __enter__(self) -> TestBed:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- spokes ------------------------------------------------------------

    def add_spokes(self, names: Iterable[str], *, full: bool = False, audit: bool = False) -> list[Spoke]:
        """Create spokes on the running etcd and wait until all are ready (``audit``: with audit logs)."""
        new = [self._create_spoke(n, full=full, audit=audit) for n in names]
        for spoke in new:
            spoke.apiserver.start()
        with ThreadPoolExecutor(max_workers=max(1, len(new))) as pool:
            list(pool.map(self._wait_ready, new))
            list(pool.map(self._configure, new))
        # Started here, not in the pool: PR_SET_PDEATHSIG fires when the *thread* that
        # forked a child exits, so children must come from the long-lived caller thread.
        for spoke in new:
            if spoke.full:
                extra = self._full_processes(spoke)
                for proc in extra:
                    proc.start()
                spoke.processes.extend(extra)
        return new

    def stop_spoke(self, name: str) -> None:
        """Stop a spoke's processes (its data stays in etcd): it becomes unreachable."""
        for proc in reversed(self.spokes[name].processes):
            proc.stop()

    def start_spoke(self, name: str) -> None:
        """Restart a stopped spoke on the same port and wait until it is ready."""
        spoke = self.spokes[name]
        spoke.apiserver.start()
        self._wait_ready(spoke)
        for proc in spoke.processes[1:]:
            proc.start()

    def remove_spoke(self, name: str) -> None:
        self.stop_spoke(name)
        del self.spokes[name]

    def _create_spoke(self, name: str, *, full: bool, audit: bool = False) -> Spoke:
        if name in self.spokes:
            raise TestBedError(f"spoke {name!r} exists already")
        directory = self.workdir / "spokes" / name
        directory.mkdir(parents=True)
        self.kubeconfig_dir.mkdir(parents=True, exist_ok=True)
        spoke = Spoke(
            name=name,
            port=free_port(),
            directory=directory,
            kubeconfig=self.kubeconfig_dir / f"{name}.kubeconfig",
            viewer_kubeconfig=self.kubeconfig_dir / f"{name}-viewer.kubeconfig",
            full=full,
            audit_log=directory / "audit.log" if audit else None,
        )
        self._write_credentials(spoke)
        spoke.processes.append(self._apiserver_process(spoke))
        self.spokes[name] = spoke
        return spoke

    def _write_credentials(self, spoke: Spoke) -> None:
        d = spoke.directory
        serving_ca, client_ca = (
            certs.new_authority(f"{spoke.name}-serving-ca"),
            certs.new_authority(f"{spoke.name}-client-ca"),
        )
        (d / "serving-ca.crt").write_bytes(serving_ca.pem)
        (d / "client-ca.crt").write_bytes(client_ca.pem)
        spoke.client_ca = client_ca
        certs.serving_pair(serving_ca).write(d, "serving")
        admin = certs.client_pair(client_ca, ADMIN_USER, ("system:masters",))
        admin.write(d, "admin")
        viewer = certs.client_pair(client_ca, VIEWER_USER, ("fleetd-testers",))
        private, public = certs.signing_key_pem()
        (d / "sa.key").write_bytes(private)
        (d / "sa.pub").write_bytes(public)
        for path, pair, user in (
            (spoke.kubeconfig, admin, ADMIN_USER),
            (spoke.viewer_kubeconfig, viewer, VIEWER_USER),
        ):
            certs.write_kubeconfig(
                path, name=spoke.name, server=spoke.server, ca_pem=serving_ca.pem, client=pair, user=user
            )

    # -- processes -----------------------------------------------------------

    def _log(self, name: str) -> Path:
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        return logs / f"{name}.log"

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self._etcd_url = f"http://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer}"
        argv = [
            str(self.tools.path("etcd")),
            "--name=testbed",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={self._etcd_url}",
            f"--advertise-client-urls={self._etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=testbed={peer_url}",
            "--unsafe-no-fsync",
            "--log-level=warn",
            "--quota-backend-bytes=4294967296",
        ]
        self._etcd = Process("etcd", argv, self._log("etcd"))
        self._etcd.start()
        self._poll(lambda: self._http_ok(f"{self._etcd_url}/health"), "etcd", self._etcd)

    def _apiserver_process(self, spoke: Spoke) -> Process:
        d = spoke.directory
        argv = [
            str(self.tools.path("kube-apiserver")),
            f"--etcd-servers={self._etcd_url}",
            f"--etcd-prefix=/{spoke.name}/registry",
            f"--secure-port={spoke.port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--tls-cert-file={d / 'serving.crt'}",
            f"--tls-private-key-file={d / 'serving.key'}",
            f"--client-ca-file={d / 'client-ca.crt'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            "--authorization-mode=RBAC",
            "--disable-admission-plugins=ServiceAccount",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={d / 'sa.pub'}",
            f"--service-account-signing-key-file={d / 'sa.key'}",
            f"--cert-dir={d / 'certs'}",
            "--endpoint-reconciler-type=none",
            "--v=0",
        ]
        if spoke.audit_log is not None:
            argv += [
                f"--audit-policy-file={Path(__file__).with_name('audit-policy.yaml')}",
                f"--audit-log-path={spoke.audit_log}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",
            ]
        return Process(f"{spoke.name}-kube-apiserver", argv, self._log(f"{spoke.name}-kube-apiserver"))

    def _full_processes(self, spoke: Spoke) -> list[Process]:
        d, kc = spoke.directory, str(spoke.kubeconfig)
        cm = [
            str(self.tools.path("kube-controller-manager")),
            f"--kubeconfig={kc}",
            f"--root-ca-file={d / 'serving-ca.crt'}",
            f"--service-account-private-key-file={d / 'sa.key'}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--controllers=*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle",
        ]
        sched = [
            str(self.tools.path("kube-scheduler")),
            f"--kubeconfig={kc}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
        ]
        kwok = [
            str(self.tools.path("kwok")),
            f"--kubeconfig={kc}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
            f"--server-address=127.0.0.1:{free_port()}",
            "--node-lease-duration-seconds=40",
            "--cidr=10.244.0.0/16",
            "--node-ip=127.0.0.1",
            f"--config={Path(__file__).with_name('kwok-stages.yaml')}",
        ]
        return [
            Process(f"{spoke.name}-{n}", a, self._log(f"{spoke.name}-{n}"))
            for n, a in (("kube-controller-manager", cm), ("kube-scheduler", sched), ("kwok", kwok))
        ]

    def _configure(self, spoke: Spoke) -> None:
        """Give the viewer its read-only role; in the full profile create the fake node."""
        rbac = "/apis/rbac.authorization.k8s.io/v1"
        spoke.request("POST", f"{rbac}/clusterroles", _viewer_role())
        spoke.request("POST", f"{rbac}/clusterrolebindings", _viewer_binding())
        if spoke.full:
            spoke.request("POST", "/api/v1/nodes", _fake_node("kwok-node-0"))

    # -- waiting -------------------------------------------------------------

    def _wait_ready(self, spoke: Spoke) -> None:
        self._poll(spoke.ready, f"kube-apiserver of spoke {spoke.name}", spoke.apiserver)

    @staticmethod
    def _http_ok(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2.0) as resp:  # noqa: S310 - loopback etcd
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    @staticmethod
    def _poll(check: Any, what: str, proc: Process, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while time.monotonic() < deadline:
            if check():
                return
            if not proc.running:
                raise TestBedError(f"{what} exited during start-up; last log lines:\n{proc.tail()}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        raise TestBedError(f"{what} not ready after {timeout:.0f}s; last log lines:\n{proc.tail()}")


# The built-in ``view`` role is filled by an aggregation controller that a bare
# API server does not run, so the viewer gets a plain read-everything role.
VIEWER_ROLE = "fleetd-testbed-read-only"


def _viewer_role() -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": VIEWER_ROLE},
        "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]}],
    }


def _viewer_binding() -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": VIEWER_ROLE},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": VIEWER_ROLE},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": VIEWER_USER}],
    }


def _fake_node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
        },
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
        },
    }
