"""Git source: fetch the fleet repository once per revision, serve it as snapshots.

The whole fleet reads one repository, so fleetd fetches it once (not once per
cluster) and hands every cluster the same immutable `Snapshot`. pygit2 enters
fleetd only here, and its errors are translated here.

API: ``GitSourceFetcher(config, state_dir)``; ``await fetch()`` returns the
current `Snapshot` (the same object while the revision is unchanged, and it
already cleans up after a change); ``current``, ``last_error``, ``failures``
and ``next_attempt_in`` are for the daemon's loop and the status API;
``cleanup()`` blocks briefly. `redact`, `transport` and the known_hosts
helpers are public for the CLI and tests.

Layout under the state directory::

    git/mirror.git/            bare repository, re-used across fetches and restarts
    git/home/.ssh/known_hosts  the entries of known_hosts_file for the one SSH host
    snapshots/<commit-sha>/    the tree of that commit, read-only, never changed

Why a bare mirror plus snapshot directories: a fetch into the mirror only
downloads what is new, and a working tree that is checked out in place would
change under a renderer that is still reading it. A snapshot is written from
the commit's tree objects into a temporary directory and renamed into place,
so a directory named after a commit is always complete; its files and
directories are read-only. Symlinks that resolve outside the snapshot are
dropped (a repository must not make fleetd read /etc); submodules are not
fetched. The current and the previous snapshot are kept
(a reconcile may still read the previous one; after a restart nothing does,
so only the current one stays); `cleanup` removes the rest.

One attempt (`GitSourceFetcher.fetch`): list the remote's refs, resolve the
ref (branch, tag, highest tag in a semver range, pinned commit), download
only when the mirror lacks the commit (a pinned commit already present needs
no network at all), then materialise the snapshot if it is new.

Why a thread: pygit2 blocks, so an attempt runs in `asyncio.to_thread` under
`asyncio.timeout(GitSource.timeout)`. A thread cannot be killed, so a
timed-out attempt is abandoned, not stopped; three things keep it harmless:
its progress and credential callbacks raise once it is abandoned; libgit2's
socket timeouts (set to the same value) end a read that hangs; and every git
operation holds one process-wide lock, which the next attempt waits for at
most `timeout` seconds before failing with a `FetchError` (so a stuck thread
delays the next attempt, never blocks it forever, and never writes the mirror
concurrently). The lock is process-wide because libgit2's options (home
directory, socket timeouts) are; a daemon has one source, so nothing contends.

SSH: the key is offered as pygit2 `Keypair` credentials. pygit2 does not hand
the host key to Python (its certificate callback receives None), so the
check is split: fleetd parses known_hosts_file itself (plain, wildcard and
hashed ``|1|`` entries, ``[host]:port``) and refuses a host it has no entry
for; it writes the matching keys to a private known_hosts that libgit2
(libssh2) compares with the key the server presents; the certificate callback
refuses the connection unless that comparison succeeded. ``@cert-authority``
and ``@revoked`` lines are not used. HTTPS: the token file is read on every
attempt (rotation needs no restart) and sent as basic auth; it is never put in
a URL, a message or a repr.

On failure the fetcher keeps `current` (the last good snapshot), keeps the
error in `last_error`, and backs off: `next_attempt_in` grows exponentially
with jitter, capped. The errors::

    FleetdError
     └── SourceError       the git source failed; names the url and ref
          ├── FetchError   unreachable, timed out, disk trouble (temporary)
          ├── AuthError    credentials refused, unknown or changed host key
          └── RefNotFound  no such branch/tag/commit, no tag in the semver range
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import pygit2
from pygit2.enums import CredentialType, FileMode

from fleetd.errors import FleetdError
from fleetd.inventory.model import GitAuth, GitSource, RefKind
from fleetd.util.backoff import backoff
from fleetd.util.semver import Range, SemverError, best_match

_log = logging.getLogger(__name__)

BACKOFF_INITIAL = 5.0
"""Seconds before the first retry after a failure."""
BACKOFF_MAX = 300.0
"""Longest wait between retries (5m)."""
MAX_CREDENTIAL_TRIES = 2
"""Credentials offered per connection before giving up (libgit2 would retry many times)."""

_GIT_LOCK = threading.Lock()
_SCP_LIKE = re.compile(r"(?:(?P<user>[^@/]+)@)?(?P<host>\[[^]]+\]|[^:/]+):(?!//)")
_HEADS, _TAGS = "refs/heads/", "refs/tags/"

Transport = Literal["ssh", "http", "local"]


class SourceError(FleetdError):
    """The git source failed; the message names the url and ref and what to do."""

    def __init__(self, url: str, ref: str, detail: str) -> None:
        super().__init__(f"git source {url} ({ref}): {detail}")
        self.url = url
        self.ref = ref
        self.detail = detail


class FetchError(SourceError):
    """The remote could not be read (unreachable, timed out) or the snapshot not written; retry."""


class AuthError(SourceError):
    """Credentials were refused, or the server's host key or certificate is not trusted."""


class RefNotFound(SourceError):
    """The branch, tag or commit does not exist, or no tag matches the semver range."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """One revision of the repository, materialised read-only on disk."""

    revision: str
    """Full commit id (40 hex digits)."""
    ref: str
    """How it was chosen: "branch main", "tag v1.2.0", "semver ^1 -> v1.4.2", "commit abc1234"."""
    root: Path
    """Read-only directory holding the commit's tree; never changes."""
    message: str
    """First line of the commit message."""


# --- known_hosts ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class KnownHost:
    """One line of an OpenSSH known_hosts file."""

    hosts: str
    """The host field as written: patterns, or a hashed ``|1|salt|hash`` entry."""
    key_type: str
    """e.g. ssh-ed25519."""
    key: str
    """Base64 public key."""
    marker: str | None = None
    """"@cert-authority" or "@revoked"; fleetd uses only unmarked lines."""

    def matches(self, host: str, port: int = 22) -> bool:
        """Whether this line names `host` on `port` (OpenSSH rules: ``[host]:port`` off port 22)."""
        name = host.lower() if port == 22 else f"[{host.lower()}]:{port}"
        if self.hosts.startswith("|1|"):
            return _hashed_host_matches(self.hosts, name)
        patterns = self.hosts.lower().split(",")
        if any(p.startswith("!") and _wildcard_matches(p[1:], name) for p in patterns):
            return False
        return any(not p.startswith("!") and _wildcard_matches(p, name) for p in patterns)


def parse_known_hosts(text: str) -> list[KnownHost]:
    """The usable lines of a known_hosts file; comments, blanks and malformed lines are skipped."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        marker = fields.pop(0) if fields and fields[0].startswith("@") else None
        if len(fields) >= 3 and not fields[0].startswith("#"):
            entries.append(KnownHost(hosts=fields[0], key_type=fields[1], key=fields[2], marker=marker))
    return entries


def keys_for_host(entries: Iterable[KnownHost], host: str, port: int = 22) -> list[KnownHost]:
    """The unmarked entries that name `host` on `port`."""
    return [e for e in entries if e.marker is None and e.matches(host, port)]


def _hashed_host_matches(field: str, name: str) -> bool:
    parts = field.split("|")
    if len(parts) != 4:
        return False
    try:
        salt, digest = base64.b64decode(parts[2]), base64.b64decode(parts[3])
    except ValueError:
        return False
    return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)


def _wildcard_matches(pattern: str, name: str) -> bool:
    # fnmatch would read "[host]:port" as a character class; known_hosts has only * and ?.
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name) is not None


# --- URLs ----------------------------------------------------------------------------------------


def transport(url: str) -> Transport:
    """How `url` is reached: "ssh" (ssh://, git@host:path), "http" (http[s]://) or "local"."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in {"http", "https"}:
        return "http"
    if scheme in {"ssh", "git+ssh", "ssh+git"} or (not scheme.startswith("file") and _scp_like(url)):
        return "ssh"
    return "local"


def _scp_like(url: str) -> bool:
    return not url.startswith("/") and _SCP_LIKE.match(url) is not None


def ssh_host_port(url: str) -> tuple[str, int]:
    """Host and port of an SSH url, as libgit2 connects to them."""
    if "://" in url:
        parts = urlsplit(url)
        return parts.hostname or "", parts.port or 22
    match = _SCP_LIKE.match(url)
    return (match["host"].strip("[]") if match else ""), 22


def redact(url: str) -> str:
    """`url` without a password, should one have been written into it."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def _libgit2_url(url: str) -> str:
    # libgit2 reports a missing absolute path as an "unsupported URL protocol".
    return Path(url).as_uri() if url.startswith("/") else url


# --- snapshots -----------------------------------------------------------------------------------


def _materialise(repo: pygit2.Repository, commit: pygit2.Commit, snapshots: Path) -> Path:
    """The snapshot directory of `commit`, written now unless it already exists."""
    final = snapshots / str(commit.id)
    if final.is_dir():
        return final
    snapshots.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".tmp-{commit.short_id}-", dir=snapshots))
    try:
        _write_tree(repo, commit.tree, work)
        _drop_escaping_links(work)
        _make_read_only(work)
        work.rename(final)
    except BaseException:
        remove_tree(work)
        raise
    return final


def _write_tree(repo: pygit2.Repository, tree: pygit2.Tree, into: Path) -> None:
    for entry in tree:
        name = entry.name or ""
        if name in {"", ".", "..", ".git"} or "/" in name:
            raise ValueError(f"the tree holds an unsafe path {name!r}")
        path = into / name
        if entry.filemode == FileMode.TREE:
            path.mkdir()
            _write_tree(repo, repo[entry.id].peel(pygit2.Tree), path)
        elif entry.filemode == FileMode.LINK:
            path.symlink_to(os.fsdecode(repo[entry.id].peel(pygit2.Blob).data))
        elif entry.filemode in {FileMode.BLOB, FileMode.BLOB_EXECUTABLE}:
            _write_file(path, repo[entry.id].peel(pygit2.Blob).data, entry.filemode)
        # Submodules (FileMode.COMMIT) are not fetched: their directory stays absent.


def _write_file(path: Path, data: bytes, mode: int) -> None:
    with open(path, "xb") as file:
        file.write(data)
    path.chmod(0o555 if mode == FileMode.BLOB_EXECUTABLE else 0o444)


def _drop_escaping_links(root: Path) -> None:
    """Remove symlinks that resolve outside `root` (a repository must not read /etc/...)."""
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            link = Path(dirpath, name)
            if link.is_symlink() and not link.resolve().is_relative_to(real_root):
                _log.warning("git source: symlink %s leaves the repository; not written", link.name)
                link.unlink()


def _make_read_only(root: Path) -> None:
    for dirpath, _, _ in os.walk(root, topdown=False):
        Path(dirpath).chmod(0o555)


def remove_tree(path: Path) -> None:
    """Delete a snapshot directory, read-only as it is."""
    for dirpath, _, _ in os.walk(path):
        Path(dirpath).chmod(0o755)
    shutil.rmtree(path, ignore_errors=True)


# --- the fetcher ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    """What the ref resolved to on the remote: the ref to download (None = all) and its object."""

    refname: str | None
    oid: str
    label: str


class _Abandoned(Exception):
    """Raised inside an attempt's thread after its caller gave up on it."""


class GitSourceFetcher:
    """Keeps one repository fetched and its current revision materialised; see the module docstring."""

    def __init__(self, config: GitSource, state_dir: Path) -> None:
        self._config = config
        self._url = redact(config.url)
        self._mirror_dir = state_dir / "git" / "mirror.git"
        self._home = state_dir / "git" / "home"
        self._snapshots = state_dir / "snapshots"
        self._current: Snapshot | None = None
        self._previous: Snapshot | None = None
        self._last_error: SourceError | None = None
        self._failures = 0
        self._next_attempt_at = 0.0
        self._lock = asyncio.Lock()
        self._stale_locks_cleared = False
        self._pinned: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        return f"<GitSourceFetcher {self._url} ({self._config.ref})>"

    @property
    def config(self) -> GitSource:
        return self._config

    @property
    def current(self) -> Snapshot | None:
        """The last good snapshot; None until the first successful fetch."""
        return self._current

    @property
    def last_error(self) -> SourceError | None:
        """Why the last attempt failed; None after a success."""
        return self._last_error

    @property
    def failures(self) -> int:
        """Attempts failed in a row."""
        return self._failures

    @property
    def next_attempt_in(self) -> float:
        """Seconds until the next attempt is due: `interval` after a success, backoff after failures."""
        return max(0.0, self._next_attempt_at - time.monotonic())

    async def fetch(self) -> Snapshot:
        """Fetch, resolve the ref, materialise a new revision; the same `Snapshot` object if unchanged.

        Raises SourceError; `current` then stays the last good snapshot.
        """
        async with self._lock:
            try:
                snapshot = await self._attempt()
            except SourceError as error:
                self._failed(error)
                raise
            return await self._succeeded(snapshot)

    def pin(self, revisions: Iterable[str]) -> None:
        """Keep the snapshots of ``revisions`` too (rollout waves still applying an older revision)."""
        self._pinned = frozenset(revisions)

    async def snapshot_at(self, revision: str) -> Snapshot:
        """The snapshot of a revision already in the mirror (e.g. a wave's revision after a restart)."""
        if self._current is not None and self._current.revision == revision:
            return self._current
        async with self._lock:
            return await asyncio.to_thread(self._materialise_known, revision)

    def _materialise_known(self, revision: str) -> Snapshot:
        with _GIT_LOCK:
            repo = self._open_mirror()
            try:
                commit = repo[revision].peel(pygit2.Commit)
            except (KeyError, ValueError):
                raise self._error(RefNotFound, f"revision {revision[:12]} is not in the mirror") from None
            root = _materialise(repo, commit, self._snapshots)
        first_line = (commit.message.strip().splitlines() or [""])[0]
        return Snapshot(revision=str(commit.id), ref=f"commit {revision[:12]}", root=root, message=first_line)

    def cleanup(self) -> None:
        """Delete snapshots other than the current, previous and pinned ones (blocking; skips when busy)."""
        if self._current is None or not _GIT_LOCK.acquire(timeout=1.0):
            return  # never fetched (keep what a restart may re-use), or busy (next time)
        try:
            keep = {s.root.name for s in (self._current, self._previous) if s is not None} | self._pinned
            for path in self._snapshots.iterdir():
                if path.name not in keep:
                    remove_tree(path)
        finally:
            _GIT_LOCK.release()

    async def _attempt(self) -> Snapshot:
        abandoned = threading.Event()
        try:
            async with asyncio.timeout(self._config.timeout):
                return await asyncio.to_thread(self._run_locked, abandoned)
        except TimeoutError:
            raise self._error(
                FetchError,
                f"no answer within {self._config.timeout:g}s; check that the server is reachable "
                "from this host, or raise the source timeout for a large repository",
            ) from None
        finally:
            abandoned.set()

    def _failed(self, error: SourceError) -> None:
        self._last_error = error
        self._failures += 1
        self._next_attempt_at = time.monotonic() + backoff(
            self._failures, base=BACKOFF_INITIAL, cap=BACKOFF_MAX
        )

    async def _succeeded(self, snapshot: Snapshot) -> Snapshot:
        self._last_error = None
        self._failures = 0
        self._next_attempt_at = time.monotonic() + self._config.interval
        current = self._current
        if current is not None and (current.revision, current.ref) == (snapshot.revision, snapshot.ref):
            return current
        if current is None or current.revision != snapshot.revision:
            self._previous = current
        self._current = snapshot
        await asyncio.to_thread(self.cleanup)
        return snapshot

    # Everything below runs in the worker thread.

    def _run_locked(self, abandoned: threading.Event) -> Snapshot:
        if not _GIT_LOCK.acquire(timeout=self._config.timeout):
            raise self._error(FetchError, "an earlier fetch is still running; fleetd retries later")
        try:
            return self._run(abandoned)
        except SourceError:
            raise
        except _Abandoned:
            raise self._error(FetchError, "abandoned after the timeout") from None
        except (pygit2.GitError, _CredentialsRefused, OSError, ValueError) as error:
            raise self._translate(error) from error
        finally:
            _GIT_LOCK.release()

    def _run(self, abandoned: threading.Event) -> Snapshot:
        if abandoned.is_set():
            raise _Abandoned
        self._configure_libgit2()
        repo = self._open_mirror()
        callbacks = _Callbacks(self, abandoned)
        target = self._resolve(repo, callbacks)
        commit = self._commit(repo, target, callbacks)
        if abandoned.is_set():
            raise _Abandoned
        root = _materialise(repo, commit, self._snapshots)
        first_line = (commit.message.strip().splitlines() or [""])[0]
        return Snapshot(revision=str(commit.id), ref=target.label, root=root, message=first_line)

    def _configure_libgit2(self) -> None:
        milliseconds = max(1, int(self._config.timeout * 1000))
        pygit2.settings.server_connect_timeout = milliseconds
        pygit2.settings.server_timeout = milliseconds
        if transport(self._config.url) == "ssh":
            self._write_known_hosts()
            pygit2.settings.homedir = str(self._home)

    def _write_known_hosts(self) -> None:
        auth = self._config.auth
        if auth is None or auth.known_hosts_file is None:
            raise self._error(AuthError, "set auth.known_hosts_file (ssh-keyscan <host> > known_hosts)")
        host, port = ssh_host_port(self._config.url)
        try:
            text = auth.known_hosts_file.read_text()
        except OSError as error:
            raise self._error(AuthError, f"cannot read {auth.known_hosts_file}: {error.strerror}") from None
        keys = keys_for_host(parse_known_hosts(text), host, port)
        if not keys:
            raise self._error(AuthError, _unknown_host(host, port, auth.known_hosts_file))
        name = host if port == 22 else f"[{host}]:{port}"
        lines = "".join(f"{name} {k.key_type} {k.key}\n" for k in keys)
        (self._home / ".ssh").mkdir(parents=True, exist_ok=True)
        (self._home / ".ssh" / "known_hosts").write_text(lines)

    def _open_mirror(self) -> pygit2.Repository:
        if not self._stale_locks_cleared:
            # Lock files outlive a killed daemon and would block every later ref update.
            for lock in [*self._mirror_dir.glob("*.lock"), *self._mirror_dir.glob("refs/**/*.lock")]:
                lock.unlink()
            self._stale_locks_cleared = True
        if (self._mirror_dir / "HEAD").is_file():
            return pygit2.Repository(str(self._mirror_dir))
        return pygit2.init_repository(str(self._mirror_dir), bare=True)

    def _remote(self, repo: pygit2.Repository) -> pygit2.Remote:
        return repo.remotes.create_anonymous(_libgit2_url(self._config.url))

    def _resolve(self, repo: pygit2.Repository, callbacks: _Callbacks) -> _Target:
        ref = self._config.ref
        if ref.kind is RefKind.COMMIT:
            return _Target(refname=None, oid=ref.value, label=str(ref))
        heads = self._remote(repo).list_heads(callbacks=callbacks)
        advertised = {h.name: str(h.oid) for h in heads if h.name and not h.name.endswith("^{}")}
        if ref.kind is RefKind.SEMVER:
            return self._resolve_semver(advertised)
        refname = (_HEADS if ref.kind is RefKind.BRANCH else _TAGS) + ref.value
        if refname not in advertised:
            raise self._error(RefNotFound, self._missing(ref.kind, advertised))
        return _Target(refname=refname, oid=advertised[refname], label=str(ref))

    def _resolve_semver(self, advertised: Mapping[str, str]) -> _Target:
        tags = [name.removeprefix(_TAGS) for name in advertised if name.startswith(_TAGS)]
        try:
            tag = best_match(Range.parse(self._config.ref.value), tags)
        except SemverError as error:
            raise self._error(RefNotFound, f"{error}; fix the semver range") from None
        if tag is None:
            raise self._error(RefNotFound, self._missing(RefKind.SEMVER, advertised))
        label = f"{self._config.ref} -> {tag}"
        return _Target(refname=_TAGS + tag, oid=advertised[_TAGS + tag], label=label)

    def _missing(self, kind: RefKind, advertised: Mapping[str, str]) -> str:
        prefix = _HEADS if kind is RefKind.BRANCH else _TAGS
        names = sorted(n.removeprefix(prefix) for n in advertised if n.startswith(prefix))
        seen = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") if names else "none"
        what = {RefKind.BRANCH: "no such branch", RefKind.TAG: "no such tag"}.get(
            kind, "no tag matches the semver range"
        )
        plural = "branches" if kind is RefKind.BRANCH else "tags"
        return f"{what} on the remote ({plural} there: {seen}); push it or fix the source ref"

    def _commit(self, repo: pygit2.Repository, target: _Target, callbacks: _Callbacks) -> pygit2.Commit:
        found = _lookup(repo, target.oid)
        if found is None:
            refspecs = [f"+{target.refname}:{target.refname}"] if target.refname else _ALL_REFS
            self._remote(repo).fetch(refspecs, callbacks=callbacks, prune=pygit2.enums.FetchPrune.NO_PRUNE)
            found = _lookup(repo, target.oid)
        if found is None:
            raise self._error(
                RefNotFound, "the commit is on no branch or tag of the remote; check the hash, or push it"
            )
        return found.peel(pygit2.Commit)

    def _translate(self, error: Exception) -> SourceError:
        detail = str(error) or type(error).__name__
        if isinstance(error, pygit2.AuthError | _CredentialsRefused):
            return self._error(AuthError, f"{detail}; check the credentials in the source's auth settings")
        if isinstance(error, pygit2.GitError):
            return self._error(FetchError, f"{detail}; check the url and that the server is reachable")
        return self._error(FetchError, f"cannot store the revision under {self._snapshots.parent}: {detail}")

    def _error(self, kind: type[SourceError], detail: str) -> SourceError:
        return kind(self._url, str(self._config.ref), detail)


_ALL_REFS = [f"+{_HEADS}*:{_HEADS}*", f"+{_TAGS}*:{_TAGS}*"]


def _lookup(repo: pygit2.Repository, oid: str) -> pygit2.Object | None:
    try:
        return repo.get(oid)
    except (pygit2.GitError, ValueError):  # ambiguous or malformed short id
        return None


def _unknown_host(host: str, port: int, known_hosts: Path) -> str:
    option = f" -p {port}" if port != 22 else ""
    return (
        f"host {host} port {port} has no entry in {known_hosts}; verify the server's key, then add it: "
        f"ssh-keyscan{option} {host} >> {known_hosts}"
    )


class _CredentialsRefused(Exception):
    """The server kept asking for credentials after they were offered."""


class _Callbacks(pygit2.RemoteCallbacks):
    """Credentials, host-key verdict and abandonment for one attempt's connections."""

    def __init__(self, fetcher: GitSourceFetcher, abandoned: threading.Event) -> None:
        super().__init__()
        self._fetcher = fetcher
        self._abandoned = abandoned
        self._tries = 0

    def credentials(
        self, url: str, username_from_url: str | None, allowed_types: CredentialType
    ) -> pygit2.Username | pygit2.UserPass | pygit2.Keypair:
        self._check()
        auth = self._fetcher.config.auth or GitAuth()
        if allowed_types & CredentialType.USERNAME:  # SSH asks for the user first when the url has none
            return pygit2.Username(username_from_url or auth.username)
        self._tries += 1
        if self._tries > MAX_CREDENTIAL_TRIES:
            raise _CredentialsRefused("the server refused the credentials")
        if auth.ssh_key_file is not None and allowed_types & CredentialType.SSH_KEY:
            return _keypair(username_from_url or auth.username, auth.ssh_key_file)
        if auth.token_file is not None and allowed_types & CredentialType.USERPASS_PLAINTEXT:
            return pygit2.UserPass(auth.username, _read_token(auth.token_file))
        raise _CredentialsRefused("the server asks for credentials; set auth.token_file or auth.ssh_key_file")

    def certificate_check(self, certificate: None, valid: bool, host: bytes) -> bool:
        self._check()
        if valid:
            return True
        name = host.decode(errors="replace")
        if transport(self._fetcher.config.url) == "ssh":
            detail = f"the SSH host key of {name} matches no key for it in the known_hosts file"
        else:
            detail = f"the TLS certificate of {name} is not trusted"
        raise _CredentialsRefused(f"{detail}; verify the server, then fix the trust settings")

    def transfer_progress(self, stats: pygit2.remotes.TransferProgress) -> None:
        self._check()

    def sideband_progress(self, string: str) -> None:
        self._check()

    def _check(self) -> None:
        if self._abandoned.is_set():
            raise _Abandoned


def _keypair(user: str, private: Path) -> pygit2.Keypair:
    if not private.is_file():
        raise _CredentialsRefused(f"ssh_key_file {private} does not exist")
    public = private.with_name(private.name + ".pub")
    # libssh2 derives the public key from the private one when there is no .pub file.
    # Deploy keys have no passphrase: a daemon has nobody to ask.
    return pygit2.Keypair(user, public if public.is_file() else None, private, "")


def _read_token(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as error:
        # The message names the file, never its content.
        raise _CredentialsRefused(f"cannot read token file {path}: {error.strerror}") from None


def publish_directory(directory: Path, repository: Path, message: str, branch: str = "main") -> str:
    """Commit the files of ``directory`` as the whole tree of ``branch`` in a local repository.

    Creates the repository when needed; a commit is made only when the tree
    changed. Returns the branch's commit. The demo uses this to serve the
    example GitOps repository shipped with the project.
    """
    repo = (
        pygit2.Repository(str(repository))
        if (repository / ".git").exists() or (repository / "HEAD").exists()
        else pygit2.init_repository(str(repository), bare=True, initial_head=branch)
    )
    tree = _tree_of(repo, directory)
    ref = f"refs/heads/{branch}"
    parent = repo.references.get(ref)
    if parent is not None and repo[parent.target].peel(pygit2.Commit).tree_id == tree:
        return str(parent.target)
    author = pygit2.Signature("fleetd demo", "demo@fleetd.invalid")
    parents = [parent.target] if parent is not None else []
    return str(repo.create_commit(ref, author, author, message, tree, parents))


def _tree_of(repo: pygit2.Repository, directory: Path) -> pygit2.Oid:
    builder = repo.TreeBuilder()
    for entry in sorted(directory.iterdir()):
        if entry.name == ".git":
            continue
        if entry.is_dir():
            builder.insert(entry.name, _tree_of(repo, entry), pygit2.enums.FileMode.TREE)
        elif entry.is_file():
            blob = repo.create_blob(entry.read_bytes())
            builder.insert(entry.name, blob, pygit2.enums.FileMode.BLOB)
    return builder.write()
