"""Load the TOML inventory into a validated `Fleet`, or explain everything wrong with it.

The inventory is a fleet-wide file (``--config``) and a directory of
per-cluster files. A bad edit must never be half-applied, and an operator
fixing it should not have to go round the loop once per mistake: so
`load_fleet` reads every file and every key, collects every problem it finds
(syntax errors with tomllib's line; semantic ones placed by
`locate.LineIndex`), and either returns a complete, immutable `Fleet` or
raises one `InventoryError` listing them all. It touches only the inventory
files and the cluster directory listing; kubeconfigs, keys and the source
repository are used later, by the stages that need them, so a missing
kubeconfig fails one cluster at run time rather than the whole fleet here.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetd.errors import InventoryError, Problem
from fleetd.inventory import consistency, syntax
from fleetd.inventory.fields import Document, Table
from fleetd.inventory.locate import LineIndex
from fleetd.inventory.model import (
    DEFAULT_CONCURRENCY,
    DEFAULT_CREDENTIAL_TIMEOUT,
    DEFAULT_LISTEN_HOST,
    DEFAULT_LISTEN_PORT,
    DEFAULT_PRUNE_GRACE,
    DEFAULT_SOPS_BINARY,
    DEFAULT_STATE_DIR,
    Cluster,
    Decryption,
    Fleet,
    GitSource,
    Sharding,
    SyncDefaults,
    Webhooks,
    WebSettings,
    frozen_map,
)
from fleetd.inventory.notifications import Notification, read_notifications
from fleetd.inventory.sharding import SHARDING_KEYS, read_sharding
from fleetd.inventory.source import SOURCE_KEYS, WEBHOOK_KEYS, read_source, read_webhooks
from fleetd.inventory.syncs import OPTION_KEYS, Declared, read_options, read_syncs
from fleetd.inventory.web import WEB_KEYS, check_exposure, read_web

FLEET_FILE_KEYS = frozenset(
    {"fleet", "source", "decryption", "webhooks", "web", "defaults", "syncs", "notifications"}
)
FLEET_KEYS = frozenset(
    {
        "name", "clusters_dir", "state_dir", "listen", "concurrency", "prune_removed_clusters", "prune_grace",
        "sharding",
    }
)  # fmt: skip
DECRYPTION_KEYS = frozenset({"age_key_files", "gnupg_home", "sops_binary", "require_encrypted_secrets"})
CLUSTER_FILE_KEYS = frozenset({"cluster", "variables", "syncs"})
CLUSTER_KEYS = frozenset({"name", "kubeconfig", "context", "labels", "wave", "suspend", "credential_timeout"})
_SYNTAX_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def load_fleet(path: Path) -> Fleet:
    """Read the fleet file `path` and its cluster files; raise InventoryError listing every problem."""
    problems: list[Problem] = []
    text = _read(path, problems)
    if text is None:
        raise InventoryError(problems)
    parsed = _parse(path, text, problems)
    settings = _read_fleet_file(*parsed) if parsed else None
    clean_fleet_file = not problems  # otherwise its syncs may be incomplete: skip depends_on targets
    cluster_dir = settings.clusters_dir if settings else _guess_clusters_dir(path, text)
    defaults = settings.defaults if settings else SyncDefaults()
    files = _cluster_files(path, cluster_dir, problems)
    drafts = [_read_cluster_file(file, problems, defaults) for file in files]
    found = [draft for draft in drafts if draft is not None]
    fleet_syncs = settings.syncs if settings else []
    clusters = _check_and_build(found, fleet_syncs, clean_fleet_file)
    if problems or settings is None:
        raise InventoryError(_in_order(problems))
    return settings.build(clusters, _warnings(settings, found))


# --- files -------------------------------------------------------------------------------------------


def _read(path: Path, problems: list[Problem]) -> str | None:
    """The text of `path`; on failure record a problem and return None.

    Opened without blocking and checked to be a regular file first, so a FIFO
    or a device in the inventory's place is a problem instead of a hang.
    """
    try:
        with open(path, "rb", opener=_nonblocking) as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                problems.append(Problem(file=path, key="", line=None, message="not a regular file"))
                return None
            return file.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        problems.append(Problem(file=path, key="", line=None, message=f"cannot read the file: {reason}"))
        return None


def _nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NONBLOCK)


def _parse(path: Path, text: str, problems: list[Problem]) -> tuple[Document, dict[str, Any]] | None:
    """Parse one TOML file; on a syntax error record a problem and return None."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        problems.append(_syntax_problem(path, str(error), text))
        return None
    return Document(file=path, lines=LineIndex(text), problems=problems), data


def _syntax_problem(path: Path, message: str, text: str) -> Problem:
    """Turn tomllib's "Invalid value (at line 3, column 9)" into a located problem."""
    position = _SYNTAX_POSITION.search(message)
    if position is not None:
        line, what = int(position[1]), f"{message[: position.start()]} at column {position[2]}"
    else:  # "... (at end of document)"
        line, what = max(1, len(text.splitlines())), message.replace("(at end of document)", "at end of file")
    return Problem(file=path, key="", line=line, message=f"TOML syntax error: {what.strip()}")


def _guess_clusters_dir(fleet_file: Path, text: str) -> Path:
    """Where the cluster files are when the fleet file cannot be parsed: a plain
    ``clusters_dir = "..."`` line if there is one, else the fleet file's directory."""
    match = re.search(r"""^\s*clusters_dir\s*=\s*(["'])([^"'\n]+)\1""", text, re.MULTILINE)
    return syntax.display_path(fleet_file.parent, match[2] if match else ".")


def _cluster_files(fleet_file: Path, directory: Path, problems: list[Problem]) -> list[Path]:
    """The per-cluster files: *.toml in `directory`, minus the fleet file and names starting '.' or '_'.

    A name that does not lead to a regular file — a dangling symlink, a
    symlink loop, a directory, a FIFO — is a problem, not a cluster quietly
    gone: a reload keeps the inventory in force until it is fixed.
    """
    if not directory.is_dir():
        return []
    fleet = fleet_file.resolve()
    found = []
    for path in sorted(directory.glob("*.toml")):
        if path.name[0] in "._":
            continue
        why = _not_a_cluster_file(path)
        if why is None and path.resolve() != fleet:
            found.append(path)
        elif why is not None:
            problems.append(Problem(file=path, key="", line=None, message=why))
    return found


def _not_a_cluster_file(path: Path) -> str | None:
    """Why `path` cannot be read as a cluster file, or None when it can."""
    try:
        info = path.stat()
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "is a symlink loop; point it at a cluster file or remove it"
        if path.is_symlink():
            return f"is a symlink to {str(path.readlink())!r}, which does not exist; fix or remove it"
        return f"cannot be read: {error.strerror or error}"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file; cluster files are *.toml files (rename it if it is not one)"
    return None


def _in_order(problems: Sequence[Problem]) -> list[Problem]:
    """Problems grouped by file (in the order files were read), then by line."""
    order = {file: index for index, file in reversed(list(enumerate(p.file for p in problems)))}
    return sorted(problems, key=lambda p: (order[p.file], p.line or 0))


def _section(parent: Table, key: str, known: frozenset[str]) -> Table:
    """The sub-table `key`, or an empty one (so its defaults apply) when it is absent or mistyped."""
    mistyped = key in parent.data and not isinstance(parent.data[key], dict)
    empty = Table(parent.doc, {}, (*parent.path, key), known, stand_in=mistyped)
    return parent.table(key, known) or empty


# --- the fleet file ----------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class _FleetSettings:
    """What the fleet file says, before clusters are attached."""

    doc: Document
    table: Table
    """The [fleet] section (possibly empty), to place fleet-level warnings."""
    name: str
    clusters_dir: Path
    """As the user would name it (relative to the working directory if the fleet file was)."""
    state_dir: Path
    listen: tuple[str, int]
    concurrency: int
    prune_removed_clusters: bool
    prune_grace: float
    sharding: Sharding | None
    source: GitSource
    decryption: Decryption
    webhooks: Webhooks
    web: WebSettings
    defaults: SyncDefaults
    """The [defaults] section applied to built-in sync defaults; cluster syncs start from it."""
    syncs: list[Declared] = field(default_factory=list)
    notifications: tuple[Notification, ...] = ()

    def build(self, clusters: tuple[Cluster, ...], warnings: list[Problem]) -> Fleet:
        return Fleet(
            file=syntax.absolute(self.doc.file),
            name=self.name,
            clusters_dir=syntax.absolute(self.clusters_dir),
            state_dir=self.state_dir,
            source=self.source,
            decryption=self.decryption,
            webhooks=self.webhooks,
            web=self.web,
            listen_host=self.listen[0],
            listen_port=self.listen[1],
            concurrency=self.concurrency,
            prune_removed_clusters=self.prune_removed_clusters,
            prune_grace=self.prune_grace,
            sharding=self.sharding,
            clusters=clusters,
            fleet_syncs=tuple(d.sync for d in self.syncs),
            notifications=self.notifications,
            warnings=tuple(warnings),
        )


def _read_fleet_file(doc: Document, data: Mapping[str, Any]) -> _FleetSettings:
    root = doc.root(data, FLEET_FILE_KEYS)
    table = _section(root, "fleet", FLEET_KEYS)
    base = syntax.absolute(doc.file).parent
    defaults = read_options(root.table("defaults", OPTION_KEYS), SyncDefaults())
    syncs = read_syncs(root, defaults, fleet_wide=True)
    consistency.check_unique_syncs(syncs)
    listen = _listen(table)
    web = read_web(root.table("web", WEB_KEYS), base)
    check_exposure(table, web, listen[0])
    return _FleetSettings(
        doc=doc,
        table=table,
        name=_fleet_name(table, doc.file),
        clusters_dir=_clusters_dir(table, doc.file),
        state_dir=syntax.resolve_path(base, table.text("state_dir", syntax.nonempty) or DEFAULT_STATE_DIR),
        listen=listen,
        concurrency=table.integer("concurrency", DEFAULT_CONCURRENCY, minimum=1),
        prune_removed_clusters=table.boolean("prune_removed_clusters", False),
        prune_grace=table.duration("prune_grace", DEFAULT_PRUNE_GRACE),
        sharding=read_sharding(table.table("sharding", SHARDING_KEYS), base),
        source=read_source(_section(root, "source", SOURCE_KEYS), base),
        decryption=_read_decryption(root.table("decryption", DECRYPTION_KEYS), base),
        webhooks=read_webhooks(root.table("webhooks", WEBHOOK_KEYS), base),
        web=web,
        defaults=defaults,
        syncs=syncs,
        notifications=read_notifications(root, base),
    )


def _fleet_name(table: Table, file: Path) -> str:
    name = table.text("name", _fleet_name_check)
    if name is None and _fleet_name_check(file.stem) is not None:
        table.report("name", f'the file name {file.stem!r} is not a usable fleet name; set name = "..."')
    return name or file.stem


def _fleet_name_check(value: str) -> str | None:
    # The name is a label value and part of the ledgers' ConfigMap names, so it is a DNS-1123 label:
    # an upper-case name would apply objects whose ledger can never be written, so never pruned.
    return syntax.dns_label("fleet name")(value)


def _clusters_dir(table: Table, file: Path) -> Path:
    text = table.text("clusters_dir", syntax.nonempty) or "."
    directory = syntax.display_path(file.parent, text)
    if not directory.is_dir():
        table.report(
            "clusters_dir", f"directory {str(directory)!r} does not exist; create it or fix clusters_dir"
        )
    return directory


def _listen(table: Table) -> tuple[str, int]:
    text = table.text("listen", syntax.listen_address)
    if text is None or syntax.listen_address(text) is not None:
        return (DEFAULT_LISTEN_HOST, DEFAULT_LISTEN_PORT)
    return syntax.parse_listen(text)


def _read_decryption(table: Table | None, base: Path) -> Decryption:
    if table is None:
        return Decryption()
    gnupg_home = table.text("gnupg_home", syntax.nonempty)
    sops = table.text("sops_binary", syntax.nonempty) or DEFAULT_SOPS_BINARY
    age_keys = table.strings("age_key_files", syntax.nonempty) or ()
    return Decryption(
        age_key_files=tuple(syntax.resolve_path(base, key) for key in age_keys),
        gnupg_home=syntax.resolve_path(base, gnupg_home) if gnupg_home else None,
        sops_binary=str(syntax.resolve_path(base, sops)) if "/" in sops else sops,
        require_encrypted_secrets=table.boolean("require_encrypted_secrets", False),
    )


# --- cluster files -----------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class _ClusterDraft:
    """What one cluster file says; its effective syncs are known only after all files are read."""

    table: Table
    """The [cluster] section (possibly empty)."""
    name: str
    kubeconfig: Path
    context: str | None
    labels: dict[str, str]
    variables: dict[str, str]
    wave: int
    suspend: bool
    credential_timeout: float
    own_syncs: list[Declared]

    def build(self, syncs: Sequence[Declared]) -> Cluster:
        return Cluster(
            name=self.name,
            file=syntax.absolute(self.table.doc.file),
            kubeconfig=self.kubeconfig,
            context=self.context,
            labels=frozen_map(self.labels),
            variables=frozen_map(self.variables),
            wave=self.wave,
            suspend=self.suspend,
            credential_timeout=self.credential_timeout,
            syncs=tuple(d.sync for d in syncs),
        )


def _read_cluster_file(path: Path, problems: list[Problem], defaults: SyncDefaults) -> _ClusterDraft | None:
    text = _read(path, problems)
    parsed = None if text is None else _parse(path, text, problems)
    if parsed is None:
        return None
    root = parsed[0].root(parsed[1], CLUSTER_FILE_KEYS)
    table = _section(root, "cluster", CLUSTER_KEYS)
    base = syntax.absolute(path).parent
    kubeconfig = table.text(
        "kubeconfig", syntax.nonempty, required=f'kubeconfig = "~/.kube/{path.stem}.yaml"'
    )
    return _ClusterDraft(
        table=table,
        name=_cluster_name(table, path),
        kubeconfig=syntax.resolve_path(base, kubeconfig or "."),
        context=table.text("context", syntax.nonempty),
        labels=table.string_map("labels", syntax.label_key, syntax.label_value),
        variables=root.string_map("variables", syntax.variable_name, lambda _: None),
        wave=table.integer("wave", 0, minimum=0),
        suspend=table.boolean("suspend", False),
        credential_timeout=table.duration("credential_timeout", DEFAULT_CREDENTIAL_TIMEOUT),
        own_syncs=read_syncs(root, defaults, fleet_wide=False),
    )


def _cluster_name(table: Table, path: Path) -> str:
    check = syntax.dns_label("cluster name")
    name = table.text("name", check)
    if name is None and check(path.stem) is not None:
        table.report(
            "name",
            f"the file name {path.stem!r} is not a valid cluster name (lowercase letters, digits, '-'); "
            'rename the file or set name = "..." in [cluster]',
        )
    return name or path.stem


# --- across files ------------------------------------------------------------------------------------


def _check_and_build(
    drafts: Sequence[_ClusterDraft], fleet_syncs: Sequence[Declared], check_targets: bool
) -> tuple[Cluster, ...]:
    consistency.check_cluster_names([(d.name, d.table) for d in drafts])
    clusters = []
    for draft in drafts:
        consistency.check_unique_syncs(draft.own_syncs)
        syncs = consistency.effective_syncs(draft.labels, fleet_syncs, draft.own_syncs)
        consistency.check_dependencies(draft.name, syncs, check_targets=check_targets)
        clusters.append(draft.build(syncs))
    return tuple(sorted(clusters, key=lambda c: c.name))


def _warnings(settings: _FleetSettings, drafts: Sequence[_ClusterDraft]) -> list[Problem]:
    """Valid but probably unintended: an empty fleet, a fleet-wide sync that selects nothing."""
    warnings: list[Problem] = []
    sink = Document(file=settings.doc.file, lines=settings.doc.lines, problems=warnings)
    if not drafts:
        sink.report(
            (*settings.table.path, "clusters_dir"),
            f"no cluster files (*.toml) in {str(settings.clusters_dir)!r}: the fleet has no clusters",
        )
        return warnings
    for declared in settings.syncs:
        if not any(declared.sync.selects(d.labels) for d in drafts):
            sink.report(
                (*declared.table.path, "selector"), "selects no cluster: no cluster has all these labels"
            )
    return warnings
