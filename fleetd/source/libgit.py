"""libgit2, through pygit2: the only module of fleetd that imports pygit2.

What it offers the fetcher, all blocking (the fetcher runs it in a thread):

* `exclusive`: the process-wide lock every git operation holds. libgit2's
  options (home directory, socket timeouts, CA locations) are process-wide,
  and the mirror must never be written by two threads; a daemon has one
  source, so nothing contends except an attempt abandoned after its timeout.
* `configure`: those options for one attempt.
* `Mirror`: the bare repository under the state directory: list a remote's
  refs, download refspecs (optionally shallow), look up commits, hand a
  commit's tree to the snapshot writer as `Entry` objects, and `repack`.
* `Session`: one attempt's url, credential and trust settings, given to
  libgit2 as callbacks. Errors, pygit2's and the callbacks' own, are
  translated here into `fleetd.source.errors` with a message per cause:
  wrong key, wrong passphrase, refused token, changed host key, untrusted
  certificate, redirect to another host, unreachable server.

What libgit2 allows (pygit2 1.21, libgit2 1.9): shallow fetches (``depth``)
yes; partial clone / blob filters no (libgit2 has no ``--filter``);
``git gc`` no, but its pack builder writes one pack of every reachable
object, which `Mirror.repack` uses to repack and drop unreachable objects.
libssh2 verifies host keys against known_hosts, not host certificates.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pygit2
from pygit2.enums import CredentialType, FileMode, ObjectType, SortMode

from fleetd.source.credentials import Credential, Password, SshKey
from fleetd.source.errors import AuthError, FetchError, SourceError, TrustError
from fleetd.source.known_hosts import changed_host_key
from fleetd.source.snapshots import Entry, EntryKind, make_private_dir
from fleetd.source.urls import libgit2_url, origin, redact, ssh_host_port, transport

MAX_CREDENTIAL_TRIES = 2
"""Credentials offered per connection before giving up (libgit2 would retry many times)."""
ALL_REFS = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]

ErrorFactory = Callable[[type[SourceError], str], SourceError]

_T = TypeVar("_T")
_LOCK = threading.Lock()
_CA_FILES_LOADED: set[Path] = set()


class Abandoned(Exception):
    """Raised inside an attempt's thread after its caller gave up on it."""


@contextlib.contextmanager
def exclusive(timeout: float) -> Iterator[bool]:
    """Hold the process-wide git lock; yields False (and holds nothing) if it was busy for `timeout`."""
    acquired = _LOCK.acquire(timeout=timeout)
    try:
        yield acquired
    finally:
        if acquired:
            _LOCK.release()


def configure(*, timeout: float, home: Path | None, ca_file: Path | None) -> None:
    """Set libgit2's process-wide options for one attempt (hold `exclusive`).

    A CA bundle is added to OpenSSL's trust store, never removed (libgit2 has
    no way to); a daemon has one source, so it only ever adds its own.
    """
    milliseconds = max(1, int(timeout * 1000))
    pygit2.settings.server_connect_timeout = milliseconds
    pygit2.settings.server_timeout = milliseconds
    if home is not None:
        pygit2.settings.homedir = str(home)
    if ca_file is not None and ca_file not in _CA_FILES_LOADED:
        pygit2.settings.set_ssl_cert_locations(str(ca_file), None)
        _CA_FILES_LOADED.add(ca_file)


@dataclass(frozen=True, slots=True, kw_only=True)
class Commit:
    """A commit in the mirror."""

    id: str
    summary: str
    """First line of the message."""
    author: str = ""
    """The author's name (no e-mail address)."""
    time: float | None = None
    """When it was committed (Unix seconds)."""


@dataclass(slots=True, kw_only=True)
class Session:
    """One attempt's connection: where to, with what, trusting what; and how to word its errors."""

    url: str
    credential: Credential | None
    error: ErrorFactory
    abandoned: threading.Event = field(default_factory=threading.Event)
    known_hosts_file: Path | None = None
    ca_file: Path | None = None

    def callbacks(self) -> _Callbacks:
        return _Callbacks(self)


def read_commit(path: Path, oid: str) -> Commit | None:
    """The commit `oid` in the mirror at `path`, read-only; None if either is missing or unreadable."""
    if not (path / "HEAD").is_file():
        return None
    try:
        return Mirror(pygit2.Repository(str(path))).commit(oid)
    except (pygit2.GitError, OSError, ValueError):
        return None


class Mirror:
    """The bare repository fleetd fetches into; re-used across attempts and restarts."""

    def __init__(self, repo: pygit2.Repository) -> None:
        self._repo = repo

    @classmethod
    def open(cls, path: Path, *, clear_locks: bool) -> Mirror:
        """Open the mirror at `path`, creating it (mode 0700) when absent."""
        if clear_locks:
            # Lock files outlive a killed daemon and would block every later ref update.
            for lock in [*path.glob("*.lock"), *path.glob("refs/**/*.lock")]:
                lock.unlink()
        if (path / "HEAD").is_file():
            return cls(pygit2.Repository(str(path)))
        make_private_dir(path.parent)
        repo = pygit2.init_repository(str(path), bare=True)
        path.chmod(0o700)
        return cls(repo)

    @property
    def shallow(self) -> bool:
        return bool(self._repo.is_shallow)

    def remote_refs(self, session: Session) -> dict[str, str]:
        """The refs the remote advertises (name -> object id), peeled tag entries left out."""
        remote = self._repo.remotes.create_anonymous(libgit2_url(session.url))
        heads = _call(session, lambda: remote.list_heads(callbacks=session.callbacks()))
        return {h.name: str(h.oid) for h in heads if h.name and not h.name.endswith("^{}")}

    def download(self, session: Session, refspecs: list[str], depth: int = 0) -> None:
        """Fetch `refspecs` (``depth`` > 0: only that many commits of history)."""
        remote = self._repo.remotes.create_anonymous(libgit2_url(session.url))
        callbacks = session.callbacks()
        prune = pygit2.enums.FetchPrune.NO_PRUNE
        _call(session, lambda: remote.fetch(refspecs, callbacks=callbacks, prune=prune, depth=depth))

    def commit(self, oid: str) -> Commit | None:
        """The commit `oid` (full or abbreviated) names, peeling tags; None if the mirror lacks it."""
        try:
            found = self._repo.get(oid)
        except (pygit2.GitError, ValueError):  # ambiguous or malformed short id
            return None
        if found is None:
            return None
        try:
            commit = found.peel(pygit2.Commit)
        except (pygit2.GitError, ValueError):
            return None
        summary = (commit.message.strip().splitlines() or [""])[0]
        return Commit(
            id=str(commit.id), summary=summary, author=commit.author.name, time=float(commit.commit_time)
        )

    def entries(self, commit_id: str) -> Iterator[Entry]:
        """The commit's tree, parents before children; submodules are skipped."""
        tree = self._repo[commit_id].peel(pygit2.Commit).tree
        yield from self._walk(tree, ())

    def _walk(self, tree: pygit2.Tree, prefix: tuple[str, ...]) -> Iterator[Entry]:
        for item in tree:
            path = (*prefix, item.name or "")
            mode = item.filemode
            if mode == FileMode.TREE:
                yield Entry(path, EntryKind.DIRECTORY)
                yield from self._walk(self._repo[item.id].peel(pygit2.Tree), path)
            elif mode == FileMode.LINK:
                yield Entry(path, EntryKind.SYMLINK, self._repo[item.id].peel(pygit2.Blob).data)
            elif mode in (FileMode.BLOB, FileMode.BLOB_EXECUTABLE):
                kind = EntryKind.EXECUTABLE if mode == FileMode.BLOB_EXECUTABLE else EntryKind.FILE
                yield Entry(path, kind, self._repo[item.id].peel(pygit2.Blob).data)
            # FileMode.COMMIT (a submodule) is not fetched: its directory stays absent.

    def repack(self, keep: Iterable[str] = ()) -> int:
        """Write every object reachable from the refs and `keep` into one pack; drop everything else.

        Returns the number of objects in the new pack. Unreachable objects
        (history rewritten by force pushes, a branch no longer followed) are
        deleted with the old packs and loose objects. Nothing is deleted
        unless the new pack was written completely.
        """
        repo = self._repo
        pack_dir = Path(repo.path) / "objects" / "pack"
        before = set(pack_dir.glob("pack-*")) if pack_dir.is_dir() else set()
        tips = self._tips(keep)
        if not tips:
            return 0
        written = repo.pack(pack_delegate=lambda builder: self._fill(builder, tips))
        after = set(pack_dir.glob("pack-*"))
        new = {p.name.split(".")[0] for p in after - before}
        if written and not new:  # the same objects as an existing pack: that pack is the new one
            new = {p.name.split(".")[0] for p in after}
        for path in after:
            if path.name.split(".")[0] not in new:
                path.unlink()
        objects = Path(repo.path) / "objects"
        for directory in objects.glob("[0-9a-f][0-9a-f]"):
            for loose in directory.iterdir():
                loose.unlink()
            directory.rmdir()
        return int(written)

    def _tips(self, keep: Iterable[str]) -> list[pygit2.Oid]:
        tips: list[pygit2.Oid] = []
        for name in self._repo.references:
            with contextlib.suppress(pygit2.GitError, KeyError):
                tips.append(self._repo.references[name].resolve().target)  # type: ignore[arg-type]
        for revision in keep:
            if self.commit(revision) is not None:
                tips.append(pygit2.Oid(hex=revision))
        return tips

    def _fill(self, builder: pygit2.PackBuilder, tips: list[pygit2.Oid]) -> None:
        repo = self._repo
        starts: list[pygit2.Oid] = []
        for tip in tips:
            obj = repo[tip]
            while isinstance(obj, pygit2.Tag):
                builder.add(obj.id)
                obj = repo[obj.target]
            if obj.type == ObjectType.COMMIT:
                starts.append(obj.id)
        if not starts:
            return
        walker = repo.walk(starts[0], SortMode.NONE)
        for start in starts[1:]:
            walker.push(start)
        trees: set[pygit2.Oid] = set()
        for commit in walker:
            builder.add(commit.id)
            if commit.tree_id not in trees:
                trees.add(commit.tree_id)
                builder.add_recur(commit.tree_id)


# --- callbacks and errors -------------------------------------------------------------------------


class _Refused(Exception):
    """A callback's verdict: refuse the connection with this error class and message."""

    def __init__(self, kind: type[SourceError], message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _Callbacks(pygit2.RemoteCallbacks):
    """Credentials, trust verdicts and abandonment for one connection."""

    def __init__(self, session: Session) -> None:
        super().__init__()
        self._session = session
        self._tries = 0

    def credentials(
        self, url: str, username_from_url: str | None, allowed_types: CredentialType
    ) -> pygit2.Username | pygit2.UserPass | pygit2.Keypair:
        self._check()
        session, credential = self._session, self._session.credential
        if origin(url) != origin(session.url):
            raise _Refused(
                TrustError,
                f"the server sent fleetd on to {redact(url)}, another host than the source url; fleetd sends "
                "credentials only to the url's own host: if the repository moved, set url to its new place",
            )
        default_user = credential.user if credential is not None else "git"
        if allowed_types & CredentialType.USERNAME:  # SSH asks for the user first when the url has none
            return pygit2.Username(username_from_url or default_user)
        self._tries += 1
        if credential is None:
            raise _Refused(
                AuthError,
                "the server asks for credentials; set token_file, a GitHub App or ssh_key_file "
                "in [source.auth]",
            )
        if self._tries > MAX_CREDENTIAL_TRIES:
            raise _Refused(AuthError, refused(credential, session.url))
        if isinstance(credential, SshKey) and allowed_types & CredentialType.SSH_KEY:
            # No public key file: libssh2 derives it from the private key, so a wrong passphrase
            # fails here, with its own message, instead of looking like a refused key.
            user = username_from_url or credential.user
            return pygit2.Keypair(user, None, str(credential.private_key), credential.passphrase)
        if isinstance(credential, Password) and allowed_types & CredentialType.USERPASS_PLAINTEXT:
            return pygit2.UserPass(credential.user, credential.password)
        raise _Refused(AuthError, f"the server does not accept {credential.describe()} ({allowed_types!r})")

    def certificate_check(self, certificate: None, valid: bool, host: bytes) -> bool:
        self._check()
        if valid:
            return True
        session = self._session
        if transport(session.url) == "ssh":
            name, port = ssh_host_port(session.url)
            raise _Refused(TrustError, changed_host_key(name, port, session.known_hosts_file))
        setting = f"ca_file {session.ca_file} does not" if session.ca_file else "no ca_file is set to"
        raise _Refused(
            TrustError,
            f"the TLS certificate of {host.decode(errors='replace')} is not trusted ({setting} vouch for it, "
            "nor do the system CAs); if the server uses a private CA, set ca_file in [source.auth] to its "
            "PEM bundle, and check that the url's host name is one the certificate names",
        )

    def transfer_progress(self, stats: pygit2.remotes.TransferProgress) -> None:
        self._check()

    def sideband_progress(self, string: str) -> None:
        self._check()

    def _check(self) -> None:
        if self._session.abandoned.is_set():
            raise Abandoned


def refused(credential: Credential, url: str) -> str:
    """What to say when the server refuses `credential`."""
    if isinstance(credential, SshKey):
        return (
            f"the server refused {credential.describe()}; add the public key (ssh-keygen -y -f "
            f"{credential.private_key}) as a deploy key with read access to the repository, and check "
            "the user name in the url or username"
        )
    return (
        f"the server refused {credential.describe()} (HTTP 401): the token is wrong, expired or revoked, or "
        "lacks read access to this repository; write a valid token into the file (fleetd re-reads it)"
    )


def _call(session: Session, operation: Callable[[], _T]) -> _T:
    """Run one network operation, translating pygit2's errors and the callbacks' verdicts."""
    try:
        return operation()
    except (Abandoned, SourceError):
        raise
    except _Refused as verdict:
        raise session.error(verdict.kind, str(verdict)) from None
    except pygit2.GitError as error:
        raise _translate(session, error) from error


def _translate(session: Session, error: pygit2.GitError) -> SourceError:
    detail = str(error) or type(error).__name__
    credential = session.credential
    if "public key from private key" in detail and isinstance(credential, SshKey):
        why = (
            f"the passphrase in passphrase_file {credential.passphrase_file} is wrong"
            if credential.passphrase_file
            else "it is not a private key libssh2 can read (OpenSSH or PEM; ed25519, ECDSA or RSA)"
        )
        return session.error(AuthError, f"cannot use ssh_key_file {credential.private_key}: {why}")
    if "exchange encryption keys" in detail and transport(session.url) == "ssh":
        name, port = ssh_host_port(session.url)
        return session.error(
            TrustError,
            "the server offers no host key of a type known_hosts lists for it; "
            + changed_host_key(name, port, session.known_hosts_file),
        )
    if isinstance(error, pygit2.AuthError) or "authenticat" in detail.lower():
        if credential is not None:
            return session.error(AuthError, refused(credential, session.url))
        return session.error(AuthError, f"{detail}; set credentials in [source.auth]")
    return session.error(
        FetchError, f"{detail}; check the url and that the server is reachable from this host"
    )


# --- writing repositories (the demo) ---------------------------------------------------------------


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
            builder.insert(entry.name, _tree_of(repo, entry), FileMode.TREE)
        elif entry.is_file():
            blob = repo.create_blob(entry.read_bytes())
            builder.insert(entry.name, blob, FileMode.BLOB)
    return builder.write()
