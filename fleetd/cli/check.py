"""``fleetd check``: is the inventory valid and can fleetd do its job on every cluster?

For every cluster, concurrently and each under its own deadline, it loads the
kubeconfig, reaches the API server (TLS and authentication), reads the
server version, and asks the server itself (SelfSubjectAccessReview) whether
fleetd's identity holds the permissions reconciling needs. One slow or dead
cluster costs its own timeout and never hides the others' results.

Secrets, at the same time: can the configured keys decrypt every
SOPS-encrypted file the syncs use? The source is fetched with the daemon's
own `GitSourceFetcher` (same URL, ref and credentials) into a throw-away
state directory, so the answer is about the revision the daemon deploys
next, works whether or not a daemon runs, and never touches the daemon's
state directory (a second writer to its git mirror could corrupt it). The
price is one full fetch per check. Every file a sync's render reads
(`fleetd.render.manifests.sync_files`) whose content carries SOPS metadata is
decrypted with the hook the daemon builds (`fleetd.secrets.decryptor`); the
plaintext is dropped at once and never printed. A source that cannot be
fetched, a sync path that is not there, and a file no key opens are
problems (exit code 1).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fleetd.errors import FleetdError
from fleetd.inventory import Cluster, Fleet
from fleetd.kube.client import ApiError, KubeClient, KubeError, connect
from fleetd.reconcile.ledger import SYSTEM_NAMESPACE
from fleetd.render import Decrypt, RenderError, sync_files
from fleetd.secrets.decryptor import decryptor
from fleetd.secrets.scan import NO_KEYS, TRUNCATED, encrypted_format, failure_text, is_truncated
from fleetd.secrets.sops import Format, NoKeysConfigured, SopsError, WrongKey
from fleetd.secrets.tree import load as load_sops
from fleetd.source import GitSourceFetcher, Snapshot, SourceError, remove_tree


@dataclass(frozen=True, slots=True, kw_only=True)
class Permission:
    """One permission fleetd needs, phrased for the person who must grant it."""

    verb: str
    group: str
    resource: str
    namespace: str | None = None
    why: str

    def describe(self) -> str:
        group = "all API groups" if self.group == "*" else (self.group or "core")
        resource = "all resources" if self.resource == "*" else self.resource
        where = f"in namespace {self.namespace}" if self.namespace else "cluster-wide"
        return f"{self.verb} {resource} ({group}) {where}: {self.why}"


def _all(verb: str, why: str) -> Permission:
    return Permission(verb=verb, group="*", resource="*", why=why)


#: What reconciling arbitrary manifests needs: read, watch, apply and prune any kind.
REQUIRED: tuple[Permission, ...] = (
    _all("get", "read live objects to diff them"),
    _all("list", "find managed objects"),
    _all("watch", "notice drift within seconds"),
    _all("create", "create objects (server-side apply)"),
    _all("patch", "apply changes (server-side apply)"),
    _all("delete", "prune objects that left git"),
    Permission(verb="create", group="", resource="namespaces", why="create target namespaces"),
    Permission(
        verb="update",
        group="",
        resource="configmaps",
        namespace=SYSTEM_NAMESPACE,
        why="store the prune inventory in the spoke",
    ),
)


@dataclass(slots=True, kw_only=True)
class ClusterReport:
    """What ``check`` found for one cluster."""

    name: str
    kubeconfig: str
    context: str | None
    server: str | None = None
    version: str | None = None
    reachable: bool = False
    missing: list[str] = field(default_factory=list)
    error: str | None = None
    identity: str | None = None
    """The UID of the cluster's kube-system namespace: two inventory clusters must not share it."""

    @property
    def ok(self) -> bool:
        return self.reachable and not self.missing and self.error is None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


async def _probe(client: KubeClient, report: ClusterReport) -> None:
    version = await client.version()
    report.version = str(version.get("gitVersion", "unknown"))
    report.reachable = True
    allowed = await asyncio.gather(
        *(client.can_i(p.verb, p.group, p.resource, p.namespace) for p in REQUIRED)
    )
    report.missing = [p.describe() for p, ok in zip(REQUIRED, allowed, strict=True) if not ok]
    report.identity = await _identity(client)


async def _identity(client: KubeClient) -> str | None:
    """The UID of the cluster's kube-system namespace (None when it cannot be read)."""
    try:
        namespace = await client.request("GET", "/api/v1/namespaces/kube-system")
    except ApiError:
        return None  # the missing permission, if any, is listed with the others
    uid = (namespace.get("metadata") or {}).get("uid") if isinstance(namespace, dict) else None
    return str(uid) if uid else None


async def check_cluster(cluster: Cluster, timeout: float) -> ClusterReport:
    """Check one cluster; never raises for cluster problems, records them instead."""
    report = ClusterReport(name=cluster.name, kubeconfig=str(cluster.kubeconfig), context=cluster.context)
    try:
        client = await connect(cluster.name, cluster.kubeconfig, cluster.context)
    except KubeError as exc:
        report.error = exc.detail
        return report
    report.server = client.server
    try:
        async with asyncio.timeout(timeout):
            await _probe(client, report)
    except TimeoutError:
        report.error = f"no complete answer from {client.server} within {timeout:g}s"
    except KubeError as exc:
        report.error = exc.detail
    finally:
        await client.close()
    return report


async def check_fleet(fleet: Fleet, timeout: float = 15.0) -> list[ClusterReport]:
    """Check every cluster of the fleet concurrently; clusters that are one and the same are problems."""
    reports = list(await asyncio.gather(*(check_cluster(c, timeout) for c in fleet.clusters)))
    first: dict[str, str] = {}
    for report in reports:
        if report.identity is None:
            continue
        holder = first.setdefault(report.identity, report.name)
        if holder != report.name and report.error is None:
            report.error = (
                f"the same Kubernetes cluster as {holder} (kube-system namespace uid {report.identity}): two "
                f"cluster files point at one API server; remove one (the daemon refuses {report.name})"
            )
    return reports


def render_table(reports: Sequence[ClusterReport]) -> str:
    """A human table plus one detail line per problem."""
    rows = [("CLUSTER", "SERVER", "VERSION", "PERMISSIONS", "RESULT")]
    for r in reports:
        perms = "-" if not r.reachable else ("ok" if not r.missing else f"{len(r.missing)} missing")
        result = "ok" if r.ok else ("unreachable" if not r.reachable else "problem")
        rows.append((r.name, r.server or "-", r.version or "-", perms, result))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    for r in reports:
        if r.error:
            lines.append(f"{r.name}: {r.error}")
        lines.extend(f"{r.name}: missing permission: {m}" for m in r.missing)
    return "\n".join(lines)


# --- secrets ----------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class SecretFile:
    """One SOPS-encrypted file of the source and whether the configured keys open it."""

    file: str
    """Relative to the repository root."""
    format: str
    syncs: list[str] = field(default_factory=list)
    """``cluster/sync`` of every sync that reads it."""
    recipients: list[str] = field(default_factory=list)
    """The keys it is encrypted for: ``age1…``, ``pgp <fingerprint>``, ``kms <arn>``, …"""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass(slots=True, kw_only=True)
class SecretsReport:
    """What ``check`` found about the encrypted files of the source's current revision."""

    revision: str | None = None
    errors: list[str] = field(default_factory=list)
    """Why (part of) the source could not be scanned."""
    files: list[SecretFile] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and all(f.ok for f in self.files)

    def source_json(self) -> dict[str, Any]:
        return {"ok": not self.errors, "revision": self.revision, "errors": self.errors}


async def check_secrets(fleet: Fleet) -> SecretsReport:
    """Fetch the source into a temporary directory and try to decrypt every encrypted file the syncs use."""
    scratch = Path(tempfile.mkdtemp(prefix="fleetd-check-"))
    try:
        try:
            snapshot = await GitSourceFetcher(fleet.source, scratch).fetch()
        except SourceError as exc:
            return SecretsReport(errors=[f"cannot look for encrypted files: {exc}"])
        hook = decryptor(fleet.decryption)
        return await asyncio.to_thread(_scan, fleet, snapshot, hook)
    finally:
        await asyncio.to_thread(remove_tree, scratch)


def _scan(fleet: Fleet, snapshot: Snapshot, hook: Decrypt | None) -> SecretsReport:
    report = SecretsReport(revision=snapshot.revision)
    found: dict[str, SecretFile | None] = {}  # None: read, not encrypted
    for cluster in fleet.clusters:
        for sync in cluster.syncs:
            try:
                paths = sync_files(snapshot.root, snapshot.revision, sync.path)
            except RenderError as exc:
                report.errors.append(f"sync {sync.name} of cluster {cluster.name}: {exc}")
                continue
            for path in paths:
                where = path.relative_to(snapshot.root.resolve()).as_posix()
                if where not in found:
                    found[where] = _secret_file(path, where, hook)
                if (secret := found[where]) is not None:
                    secret.syncs.append(f"{cluster.name}/{sync.name}")
    report.files = [secret for secret in found.values() if secret is not None]
    return report


def _secret_file(path: Path, where: str, hook: Decrypt | None) -> SecretFile | None:
    """The check result of `path`, or None when it is not SOPS-encrypted."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return SecretFile(file=where, format="-", error=f"cannot read: {exc.strerror}")
    if is_truncated(data):
        return SecretFile(file=where, format="-", error=TRUNCATED)
    try:
        fmt = encrypted_format(where, data)
    except SopsError as exc:
        return SecretFile(file=where, format="-", error=str(exc).removeprefix(f"{where}: "))
    if fmt is None:
        return None
    secret = SecretFile(file=where, format=fmt, recipients=_recipients(data, fmt, where))
    secret.error = _try_decrypt(data, fmt, hook, secret.recipients)
    return secret


def _try_decrypt(data: bytes, fmt: str, hook: Decrypt | None, recipients: list[str]) -> str | None:
    """None when `hook` decrypts `data`, else why not. The plaintext is dropped at once."""
    if hook is None:
        return f"{NO_KEYS}; it is encrypted for {', '.join(recipients) or 'unknown keys'}"
    try:
        hook(data, fmt)
    except (WrongKey, NoKeysConfigured):
        return (
            f"no configured key matches (recipients {', '.join(recipients)}); add a matching key to "
            "[decryption], or re-encrypt the file for a configured one (sops updatekeys)"
        )
    except FleetdError as exc:
        return failure_text(exc)
    return None


def _recipients(data: bytes, fmt: Format, where: str) -> list[str]:
    """The keys `data` is encrypted for, ``age1…`` without the "age " of `KeyGroup.describe`."""
    try:
        groups = load_sops(data, fmt, where).metadata.key_groups
    except SopsError:
        return []
    return [key.removeprefix("age ") for group in groups for key in group.describe()]


async def check_everything(fleet: Fleet, timeout: float = 15.0) -> tuple[list[ClusterReport], SecretsReport]:
    """`check_fleet` and `check_secrets`, concurrently."""
    return await asyncio.gather(check_fleet(fleet, timeout), check_secrets(fleet))


def render_secrets(report: SecretsReport) -> str:
    """The secrets section of the table output: a summary line, then one line per problem."""
    lines = [f"secrets: {error}" for error in report.errors]
    revision = f"at revision {report.revision[:12]}" if report.revision else ""
    good = sum(f.ok for f in report.files)
    if report.revision and not report.files:
        lines.insert(0, f"secrets: no SOPS-encrypted files in the syncs' paths {revision}")
    elif report.files:
        count = f"{len(report.files)}" if good == len(report.files) else f"{good} of {len(report.files)}"
        lines.insert(0, f"secrets: {count} file(s) decrypt with the configured keys {revision}".rstrip())
    lines += [f"{f.file}: {f.error}" for f in report.files if not f.ok]
    return "\n".join(lines)
