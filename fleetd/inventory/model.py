"""The inventory as frozen data: what the fleet is, once validated.

The loader turns TOML into these objects and nothing else builds them, so
every other stage can trust them without re-checking. They are immutable
(frozen dataclasses, tuples, read-only mappings): a reload builds a whole new
`Fleet` and the daemon swaps it in one assignment, so a reconcile never sees
half of an edit. Durations are float seconds; paths are absolute, with ``~``
already expanded. Mappings are `types.MappingProxyType`, so these objects
are not hashable; key caches on the fields they depend on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from types import MappingProxyType

from fleetd.errors import Problem
from fleetd.inventory.notifications import Notification

DEFAULT_SYNC_INTERVAL = 600.0
DEFAULT_SYNC_TIMEOUT = 300.0
DEFAULT_SOURCE_INTERVAL = 60.0
DEFAULT_SOURCE_TIMEOUT = 60.0
DEFAULT_BRANCH = "main"
DEFAULT_LISTEN_HOST = "127.0.0.1"
DEFAULT_LISTEN_PORT = 9480
DEFAULT_CONCURRENCY = 8
DEFAULT_STATE_DIR = "~/.local/state/fleetd"
DEFAULT_SOPS_BINARY = "sops"
DEFAULT_CREDENTIAL_TIMEOUT = 30.0
DEFAULT_GIT_USERNAME = "git"
DEFAULT_UPKEEP_INTERVAL = 86400.0
DEFAULT_GITHUB_API_URL = "https://api.github.com"


def _empty() -> Mapping[str, str]:
    return MappingProxyType({})


def frozen_map(values: Mapping[str, str]) -> Mapping[str, str]:
    """A read-only copy of `values`, sorted by key for stable output."""
    return MappingProxyType(dict(sorted(values.items())))


class DriftPolicy(StrEnum):
    """What to do when a managed object no longer matches git."""

    CORRECT = "correct"
    """Re-apply git's version (the default)."""
    REPORT = "report"
    """Leave it, but report the drift (metrics, status, events)."""
    IGNORE = "ignore"
    """Do not even report it; git is still applied on every reconcile."""


class RefKind(StrEnum):
    """Which kind of git reference a source follows."""

    BRANCH = "branch"
    TAG = "tag"
    SEMVER = "semver"
    COMMIT = "commit"


@dataclass(frozen=True, slots=True, kw_only=True)
class IgnoreRule:
    """Fields of live objects that are never drift (e.g. replicas an HPA owns)."""

    paths: tuple[str, ...]
    """RFC 6901 JSON pointers, e.g. "/spec/replicas"; at least one."""
    group: str | None = None
    """API group the rule is limited to ("" is the core group); None = any."""
    kind: str | None = None
    """Object kind, e.g. "Deployment"; None = any."""
    name: str | None = None
    """Object name; None = any."""
    namespace: str | None = None
    """Object namespace; None = any."""

    def applies_to(self, *, group: str, kind: str, name: str, namespace: str | None) -> bool:
        """Whether the rule covers the object identified by the arguments."""
        wanted = (self.group, self.kind, self.name, self.namespace)
        actual = (group, kind, name, namespace)
        return all(w is None or w == a for w, a in zip(wanted, actual, strict=True))


DEFAULT_PRUNE_GRACE = 600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneBudget:
    """How much one revision may prune from a sync before an operator must allow it.

    ``max_prune = "50%"`` (a share of the sync's objects) or ``max_prune = 10``
    (a count); emptying a sync is always over budget unless ``allow_empty``.
    """

    percent: int | None = 50
    count: int | None = None
    allow_empty: bool = False

    def allows(self, deleting: int, total: int, *, emptying: bool) -> bool:
        """Whether deleting `deleting` of the `total` objects a sync had is within the budget."""
        if deleting == 0:
            return True
        if emptying and not self.allow_empty:
            return False
        if self.count is not None:
            return deleting <= self.count
        return self.percent is None or deleting * 100 <= self.percent * max(total, 1)

    def describe(self) -> str:
        return f"{self.count} object(s)" if self.count is not None else f"{self.percent}% of its objects"


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncDefaults:
    """The optional settings of a sync; ``[defaults]`` overrides the built-in values."""

    prune: bool = True
    """Delete objects that left git."""
    interval: float = DEFAULT_SYNC_INTERVAL
    """Seconds between full reconciles (default 10m)."""
    wait: bool = False
    """Wait for applied workloads to become healthy."""
    timeout: float = DEFAULT_SYNC_TIMEOUT
    """Seconds one reconcile (apply, and wait if set) may take (default 5m)."""
    drift: DriftPolicy = DriftPolicy.CORRECT
    """What to do about drift."""
    namespace: str | None = None
    """Namespace given to namespaced objects that name none; None = leave them."""
    suspend: bool = False
    """Skip this sync entirely (nothing applied, nothing pruned)."""
    force: bool = False
    """Delete and recreate objects whose immutable fields changed, instead of failing."""
    budget: PruneBudget = field(default_factory=PruneBudget)
    """The deletion budget (``max_prune``, ``allow_empty``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Sync:
    """One directory of the repository kept applied to a cluster."""

    name: str
    """DNS-1123 label, unique among the cluster's effective syncs."""
    path: PurePosixPath
    """Directory inside the repository, normalised, never absolute or escaping."""
    source_file: Path
    """The TOML file that declared this sync (the fleet file for fleet-wide syncs)."""
    fleet_wide: bool = False
    """Declared in the fleet file and applied to every cluster `selector` matches."""
    selector: Mapping[str, str] = field(default_factory=_empty)
    """Labels a cluster must all carry (fleet-wide syncs only); empty = every cluster."""
    depends_on: tuple[str, ...] = ()
    """Names of syncs of the same cluster that must be ready before this one."""
    ignore: tuple[IgnoreRule, ...] = ()
    """Fields never treated as drift."""
    health_checks: tuple[str, ...] = ()
    """Objects (``Kind/name``, ``Kind/namespace/name``) to wait for instead of all; implies waiting."""
    prune: bool = True
    """See `SyncDefaults.prune`."""
    interval: float = DEFAULT_SYNC_INTERVAL
    """See `SyncDefaults.interval` (seconds)."""
    wait: bool = False
    """See `SyncDefaults.wait`."""
    timeout: float = DEFAULT_SYNC_TIMEOUT
    """See `SyncDefaults.timeout` (seconds)."""
    drift: DriftPolicy = DriftPolicy.CORRECT
    """See `SyncDefaults.drift`."""
    namespace: str | None = None
    """See `SyncDefaults.namespace`."""
    suspend: bool = False
    """See `SyncDefaults.suspend`."""
    force: bool = False
    """See `SyncDefaults.force`."""
    budget: PruneBudget = field(default_factory=PruneBudget)
    """See `SyncDefaults.budget`."""

    def selects(self, labels: Mapping[str, str]) -> bool:
        """Whether a cluster with `labels` receives this sync."""
        return all(labels.get(key) == value for key, value in self.selector.items())


@dataclass(frozen=True, slots=True, kw_only=True)
class GitRef:
    """The reference a source follows: exactly one of branch, tag, semver range, commit."""

    kind: RefKind
    value: str
    """Branch or tag name, semver range text (valid for `fleetd.util.semver.Range`), or lowercase hex."""

    def __str__(self) -> str:
        return f"{self.kind} {self.value}"


@dataclass(frozen=True, slots=True, kw_only=True)
class GitHubApp:
    """A GitHub App installation whose short-lived tokens fleetd fetches over HTTPS."""

    app_id: int
    """The App's numeric id (its settings page, "App ID")."""
    installation_id: int
    """The installation on the account that owns the repository."""
    private_key_file: Path
    """The App's private key (PEM, RSA), as downloaded from its settings."""
    api_url: str = DEFAULT_GITHUB_API_URL
    """REST API base: https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise Server."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GitAuth:
    """Credentials and trust for the repository: an SSH key, a token or a GitHub App (at most one)."""

    ssh_key_file: Path | None = None
    """Private key for ssh:// and git@host:path URLs."""
    passphrase_file: Path | None = None
    """File holding the passphrase of `ssh_key_file`, when it has one."""
    known_hosts_file: Path | None = None
    """Host keys to trust; required with `ssh_key_file`."""
    token_file: Path | None = None
    """File holding a token (HTTP basic auth password) for https:// URLs."""
    github_app: GitHubApp | None = None
    """Fetch with installation tokens of this GitHub App (https:// URLs)."""
    ca_file: Path | None = None
    """PEM bundle of extra CAs trusted for https:// (the git server and the GitHub API)."""
    username: str = DEFAULT_GIT_USERNAME
    """User name sent with the SSH key or the token (a GitHub App always uses x-access-token)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GitSource:
    """The one repository the whole fleet is read from."""

    url: str
    """Remote URL (https://, ssh://, git@host:path, file://) or an absolute local path."""
    ref: GitRef
    """What to check out (default: branch main)."""
    interval: float = DEFAULT_SOURCE_INTERVAL
    """Seconds between fetches (default 1m)."""
    timeout: float = DEFAULT_SOURCE_TIMEOUT
    """Seconds one fetch may take (default 60s)."""
    auth: GitAuth | None = None
    """Credentials; None = anonymous."""
    depth: int = 0
    """Commits of history to fetch: 0 = all, 1 = only the tip (shallow, for large repositories)."""
    upkeep_interval: float = DEFAULT_UPKEEP_INTERVAL
    """Seconds between repacks of the mirror and removals of unused snapshots (default 24h)."""

    @property
    def local_path(self) -> Path | None:
        """The repository directory when `url` is a local path, else None."""
        return Path(self.url) if self.url.startswith("/") else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Decryption:
    """How SOPS-encrypted files are decrypted."""

    age_key_files: tuple[Path, ...] = ()
    """Files of AGE-SECRET-KEY-1... identities."""
    gnupg_home: Path | None = None
    """GnuPG home holding PGP secret keys; None = GnuPG's default."""
    sops_binary: str = DEFAULT_SOPS_BINARY
    """The sops executable for what fleetd does not decrypt natively: a name on PATH or a path."""
    require_encrypted_secrets: bool = False
    """A Secret stored in git unencrypted fails its sync's render (else it is only a warning)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Webhooks:
    """Receivers that trigger an immediate fetch; each is enabled by its secret file."""

    github_secret_file: Path | None = None
    """Shared secret of the GitHub webhook (X-Hub-Signature-256); None = /hooks/github disabled."""
    generic_secret_file: Path | None = None
    """Secret of the generic HMAC receiver (X-Signature-256); None = /hooks/generic disabled."""
    gitlab_token_file: Path | None = None
    """Secret token of the GitLab webhook (X-Gitlab-Token); None = /hooks/gitlab disabled."""


DEFAULT_SHARD_NAMESPACE = "fleetd"
DEFAULT_LEASE_DURATION = 15.0
DEFAULT_RENEW_PERIOD = 5.0
DEFAULT_PIN_LABEL = "fleetd.dev/replicas"


@dataclass(frozen=True, slots=True, kw_only=True)
class Sharding:
    """``[fleet.sharding]``: replicas share the fleet through Leases in a management cluster."""

    kubeconfig: Path
    """Kubeconfig of the management cluster that holds the Leases."""
    identity: str
    """This replica's name among the replicas (DNS-1123 label; default: the host name)."""
    context: str | None = None
    """Kubeconfig context; None = the file's current context."""
    namespace: str = DEFAULT_SHARD_NAMESPACE
    """Namespace of the Leases in the management cluster (it must exist)."""
    lease_duration: float = DEFAULT_LEASE_DURATION
    """Whole seconds a replica that stopped renewing is still considered alive (default 15s)."""
    renew_period: float = DEFAULT_RENEW_PERIOD
    """Seconds between renewals (default 5s); at most a third of `lease_duration`."""
    pin_label: str = DEFAULT_PIN_LABEL
    """Cluster label naming the replicas that may own it (identities joined by '_'); absent = any."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WebSettings:
    """The ``[web]`` section: who may act through the web UI and the HTTP API."""

    actions: bool = False
    """Offer operator actions (reconcile, suspend/resume, rollout hold/resume/promote); needs `token_file`."""
    token_file: Path | None = None
    """Access tokens, one per line as ``name:token``; None = no token (read-only, loopback only)."""
    allow_unauthenticated: bool = False
    """Serve the UI and API on a non-loopback `listen` without a token (explicitly asked for)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Cluster:
    """One Kubernetes cluster of the fleet, with the syncs that target it."""

    name: str
    """DNS-1123 label, unique in the fleet (the file stem unless [cluster].name says otherwise)."""
    file: Path
    """The per-cluster TOML file."""
    kubeconfig: Path
    """Kubeconfig used to reach the cluster (not checked to exist at load time)."""
    context: str | None = None
    """Kubeconfig context; None = the file's current context."""
    labels: Mapping[str, str] = field(default_factory=_empty)
    """Labels fleet-wide syncs select on."""
    variables: Mapping[str, str] = field(default_factory=_empty)
    """Values substituted for ${name} in the rendered manifests."""
    wave: int = 0
    """Rollout wave: a new revision reaches wave 0 first, then 1, ..."""
    suspend: bool = False
    """Skip the whole cluster."""
    credential_timeout: float = DEFAULT_CREDENTIAL_TIMEOUT
    """Seconds the kubeconfig's exec credential plugin may take before it is killed."""
    syncs: tuple[Sync, ...] = ()
    """Effective syncs: matching fleet-wide ones first, then the cluster's own."""

    def sync(self, name: str) -> Sync:
        """The effective sync called `name`; KeyError if there is none."""
        for sync in self.syncs:
            if sync.name == name:
                return sync
        raise KeyError(name)


@dataclass(frozen=True, slots=True, kw_only=True)
class Fleet:
    """The whole validated inventory: one fleet file plus its cluster files."""

    file: Path
    """The fleet-wide TOML file."""
    name: str
    """Fleet name (default: the fleet file's stem)."""
    clusters_dir: Path
    """Directory scanned for per-cluster files."""
    state_dir: Path
    """Where fleetd keeps its state (git cache, prune inventories)."""
    source: GitSource
    decryption: Decryption = field(default_factory=Decryption)
    webhooks: Webhooks = field(default_factory=Webhooks)
    web: WebSettings = field(default_factory=WebSettings)
    listen_host: str = DEFAULT_LISTEN_HOST
    """Address of the HTTP server (metrics, status API), without IPv6 brackets."""
    listen_port: int = DEFAULT_LISTEN_PORT
    concurrency: int = DEFAULT_CONCURRENCY
    """Most clusters reconciled at the same time."""
    prune_removed_clusters: bool = False
    prune_grace: float = DEFAULT_PRUNE_GRACE
    """Seconds a removed cluster file must stay removed before its objects are pruned."""
    """When a cluster leaves the inventory, prune what this fleet applied there (else leave it alone)."""
    sharding: Sharding | None = None
    """Share the fleet with other replicas (`fleetd.shard`); None = this hub serves every cluster."""
    clusters: tuple[Cluster, ...] = ()
    """Sorted by name."""
    fleet_syncs: tuple[Sync, ...] = ()
    """Fleet-wide syncs as declared (defaults applied), whichever clusters they match."""
    notifications: tuple[Notification, ...] = ()
    """``[[notifications]]``: who is told about which events (`fleetd.notify`)."""
    warnings: tuple[Problem, ...] = ()
    """Things that are valid but probably not meant (e.g. no cluster files)."""

    def cluster(self, name: str) -> Cluster:
        """The cluster called `name`; KeyError if there is none."""
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        raise KeyError(name)

    def waves(self) -> tuple[tuple[Cluster, ...], ...]:
        """Clusters grouped by rollout wave, lowest wave first (empty waves omitted)."""
        numbers = sorted({c.wave for c in self.clusters})
        return tuple(tuple(c for c in self.clusters if c.wave == n) for n in numbers)
