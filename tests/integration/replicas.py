"""A sharded fleet on the real test bed: fleetd replicas as real processes, one management cluster.

Each replica is ``python -m fleetd run`` with an inventory of its own (state
directory, port, and per-spoke kubeconfigs of a user named after it, so the
API servers' audit logs tell the replicas apart) and the same fleet name,
repository and ``[fleet.sharding]``. Tests observe replicas as an operator
would: through each replica's status API, the spokes, and the audit logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

from testbed.bed import Spoke
from tests import audit
from tests.gitrepo import WorkRepo
from tests.integration.fleet import configmap, namespace_doc, unique, write_fleet

LEASE_NAMESPACE = "fleetd-leases"


def user_of(identity: str) -> str:
    """The API user a replica's kubeconfigs authenticate as."""
    return f"fleetd-{identity}"


@dataclass(slots=True)
class Replica:
    """One fleetd process of the fleet."""

    identity: str
    config: Path
    log_path: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> Replica:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in reap()
        env = {**os.environ, "FLEETD_LOG_FORMAT": "text"}
        argv = [sys.executable, "-m", "fleetd", "run", "--config", str(self.config)]
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        return self

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def reap(self, timeout: float = 15.0) -> int | None:
        """Wait for the process to end (SIGKILL after ``timeout``); its exit code."""
        code = None
        if self.process is not None:
            try:
                code = self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    async def status(self) -> dict[str, Any] | None:
        """The replica's status document, or None while it does not answer."""
        if not self.running:
            return None
        url = f"http://127.0.0.1:{self.port}/api/v1/status"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
                http.get(url) as resp,
            ):
                doc: dict[str, Any] = await resp.json()
                return doc
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass(slots=True)
class ShardedFleet:
    """One repository, one management cluster, spokes, and the replicas that share them."""

    directory: Path
    management: Spoke
    spokes: list[Spoke]
    lease_duration: int = 4
    renew_period: float = 1.0
    extra: int = 0
    """ConfigMaps in the sync beyond the two the tests look at (for benchmarks)."""
    name: str = field(default_factory=lambda: unique("shard"))
    namespace: str = field(default_factory=lambda: unique("sharded"))
    replicas: dict[str, Replica] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    """Unix time the fleet was made: audit records before it belong to other tests."""
    repo: WorkRepo = field(init=False)
    revision: str = field(init=False)

    def __post_init__(self) -> None:
        self.repo = WorkRepo(self.directory / "repo")
        self.revision = self.commit("1")

    def commit(self, version: str) -> str:
        """Commit a namespace and two ConfigMaps at ``version``; returns the revision."""
        ns = self.namespace
        extra = {f"apps/x-{i}.yaml": configmap(f"x-{i}", ns, {"n": str(i)}) for i in range(self.extra)}
        self.repo.write({
            "apps/ns.yaml": namespace_doc(self.namespace),
            "apps/a.yaml": configmap("a", self.namespace, {"version": version}),
            "apps/b.yaml": configmap("b", self.namespace, {"version": version}),
            **extra,
        })  # fmt: skip
        self.revision = self.repo.commit(f"version {version}")
        return self.revision

    def replica(self, identity: str) -> Replica:
        """Write the inventory of replica ``identity`` (not started)."""
        home = self.directory / identity
        home.mkdir(parents=True, exist_ok=True)
        user = user_of(identity)
        sharding = (
            f'\n[fleet.sharding]\nkubeconfig = "{self.management.user_kubeconfig(user)}"\n'
            f'namespace = "{LEASE_NAMESPACE}"\nidentity = "{identity}"\n'
            f'lease_duration = "{self.lease_duration}s"\nrenew_period = "{self.renew_period}s"\n'
        )
        config = write_fleet(
            home, repo=self.repo.path, name=self.name, source_interval="1s", fleet_extra=sharding,
            clusters={s.name: s.user_kubeconfig(user) for s in self.spokes},
            syncs=[{"name": "apps", "path": "apps"}],
        )  # fmt: skip
        port = int(config.read_text().split('listen = "127.0.0.1:')[1].split('"')[0])
        replica = Replica(identity=identity, config=config, log_path=home / "fleetd.log", port=port)
        self.replicas[identity] = replica
        return replica

    def start(self, *identities: str) -> list[Replica]:
        return [self.replica(i).start() for i in identities]

    def running(self) -> list[Replica]:
        return [r for r in self.replicas.values() if r.running]

    def reap_all(self) -> None:
        """SIGKILL (by pid) every replica still running, and wait for them."""
        for replica in self.replicas.values():
            if replica.running:
                with contextlib.suppress(ProcessLookupError):
                    replica.signal(signal.SIGCONT)
                    replica.signal(signal.SIGKILL)
            replica.reap()

    # -- observing -------------------------------------------------------------------

    async def statuses(self, replicas: Iterable[Replica] | None = None) -> dict[str, dict[str, Any]]:
        """Status documents of the (running) replicas that answer."""
        chosen = list(self.running() if replicas is None else replicas)
        docs = await asyncio.gather(*(r.status() for r in chosen))
        return {r.identity: d for r, d in zip(chosen, docs, strict=True) if d is not None}

    async def owners(self, replicas: Iterable[Replica] | None = None) -> dict[str, set[str]]:
        """Cluster -> the replicas that say they own it now."""
        found: dict[str, set[str]] = {s.name: set() for s in self.spokes}
        for identity, doc in (await self.statuses(replicas)).items():
            for cluster in doc["sharding"]["owned"]:
                found.setdefault(cluster, set()).add(identity)
        return found

    async def converged(
        self, clusters: Iterable[str], *, replicas: Iterable[Replica] | None = None, since: float = 0.0
    ) -> dict[str, str] | None:
        """Cluster -> owner if every one of ``clusters`` is owned by exactly one of ``replicas`` and
        that owner reconciled it (after ``since``, Unix time) ready at the newest revision; else None."""
        docs = await self.statuses(replicas)
        owners: dict[str, str] = {}
        for cluster in clusters:
            mine = [i for i, d in docs.items() if cluster in d["sharding"]["owned"]]
            if len(mine) != 1:
                return None
            row = next(c for c in docs[mine[0]]["clusters"] if c["name"] == cluster)
            if not row["syncs"] or not all(self._fresh(s, since) for s in row["syncs"]):
                return None
            owners[cluster] = mine[0]
        return owners

    def _fresh(self, sync: dict[str, Any], since: float) -> bool:
        """Ready at the newest revision, reconciled after ``since``."""
        at = sync["attempted_at"] or 0.0
        return bool(sync["result"] == "ready" and sync["revision"] == self.revision and at >= since)

    async def wait_converged(
        self, clusters: Iterable[str] | None = None, *, replicas: Iterable[Replica] | None = None,
        since: float = 0.0, timeout: float = 60.0, poll: float = 0.05,
    ) -> tuple[dict[str, str], float]:  # fmt: skip
        """Poll until `converged`; returns the owners and the seconds it took."""
        names = [s.name for s in self.spokes] if clusters is None else list(clusters)
        chosen = None if replicas is None else list(replicas)
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            owners = await self.converged(names, replicas=chosen, since=since)
            if owners is not None:
                return owners, time.monotonic() - started
            await asyncio.sleep(poll)
        docs = await self.statuses(chosen)
        seen = {i: (d["sharding"]["owned"], d["sharding"]["error"]) for i, d in docs.items()}
        raise AssertionError(f"not converged at {self.revision[:12]} after {timeout:g}s; replicas say {seen}")


# -- audit: who held which cluster when, and who wrote ---------------------------------------

Holding = tuple[str, float, float]
"""(API user, from, until) in Unix time: one stretch during which a replica held a cluster's Lease."""


def holdings(fleet: ShardedFleet) -> dict[str, list[Holding]]:
    """Cluster -> the stretches each replica held its Lease, from the management cluster's audit log."""
    assert fleet.management.audit_log is not None
    prefix = f"{fleet.name}.cluster."
    changes = sorted(
        (r for r in audit.requests(fleet.management.audit_log) if r.resource == "leases" and r.write),
        key=lambda r: r.received,
    )
    current: dict[str, tuple[str, float]] = {}
    found: dict[str, list[Holding]] = {}
    for change in changes:
        name = change.name or str(((change.body or {}).get("metadata") or {}).get("name", ""))
        if not name.startswith(prefix) or change.code >= 300:
            continue
        cluster = name.removeprefix(prefix)
        spec = (change.body or {}).get("spec") or {}
        holder = change.user if change.verb != "delete" and spec.get("holderIdentity") else None
        previous = current.get(cluster)
        if previous is not None and previous[0] == holder:
            continue  # the same replica acquiring again
        if previous is not None:
            found.setdefault(cluster, []).append((previous[0], previous[1], change.received))
            del current[cluster]
        if holder is not None:
            current[cluster] = (holder, change.received)
    for cluster, (user, start) in current.items():
        found.setdefault(cluster, []).append((user, start, float("inf")))
    return found


def unfenced_writes(fleet: ShardedFleet, *, since: float = 0.0) -> list[audit.Request]:
    """Writes of the fleet's replicas to a spoke at a moment they did not hold its Lease (should be none)."""
    held = holdings(fleet)
    users = frozenset(user_of(i) for i in fleet.replicas)
    bad = []
    for spoke in fleet.spokes:
        assert spoke.audit_log is not None
        for write in audit.writes(spoke.audit_log, since=max(since, fleet.created), users=users):
            stretches = held.get(spoke.name, [])
            if not any(u == write.user and start <= write.received <= end for u, start, end in stretches):
                bad.append(write)
    return bad


def writers(fleet: ShardedFleet, spoke: Spoke, *, since: float) -> set[str]:
    """The replicas' API users that wrote to ``spoke`` since ``since``."""
    assert spoke.audit_log is not None
    users = frozenset(user_of(i) for i in fleet.replicas)
    return {w.user for w in audit.writes(spoke.audit_log, since=since, users=users)}
