"""The git source, against real repositories made with pygit2 in tmp_path (no mocks).

The remote is a bare repository that the tests commit to directly; plain
HTTP tests serve it with ``git http-backend`` behind a loopback server that
checks basic auth. Here: ref resolution, snapshots, failures, known_hosts
parsing and matching, upkeep and shallow fetches. SSH logins, HTTPS, GitHub
App tokens and the unprivileged user run against real servers in
tests/integration/test_git_hosts.py.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import os
import random
import shutil
import socket
import stat
import subprocess
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pygit2
import pytest
from pygit2.enums import FileMode, ObjectType

from fleetd.inventory.model import GitAuth, GitRef, GitSource, RefKind
from fleetd.source import AuthError, FetchError, GitSourceFetcher, RefNotFound, Snapshot, redact
from fleetd.source.fetcher import BACKOFF_INITIAL, BACKOFF_MAX
from fleetd.source.known_hosts import keys_for_host, parse_known_hosts
from fleetd.source.urls import ssh_host_port, transport
from fleetd.util.backoff import backoff

pytestmark = pytest.mark.timeout(10)

TOKEN = "s3cr3t-token-4f9a"
SIGNATURE = pygit2.Signature("Fleet Tester", "tester@example.com")
Files = Mapping[str, str | tuple[str, FileMode]]


class Remote:
    """A bare repository that tests commit to directly."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.repo = pygit2.init_repository(str(path), bare=True)

    def commit(self, files: Files, message: str = "change", branch: str = "main") -> str:
        tree = self._tree(files)
        ref = f"refs/heads/{branch}"
        parents = [self.repo.references[ref].target] if ref in self.repo.references else []
        return str(self.repo.create_commit(ref, SIGNATURE, SIGNATURE, message, tree, parents))

    def tag(self, name: str, commit: str, *, annotated: bool = True) -> None:
        if annotated:
            self.repo.create_tag(name, commit, ObjectType.COMMIT, SIGNATURE, f"release {name}")
        else:
            self.repo.references.create(f"refs/tags/{name}", commit)

    def _tree(self, files: Files) -> pygit2.Oid:
        builder = self.repo.TreeBuilder()
        subtrees: dict[str, dict[str, str | tuple[str, FileMode]]] = {}
        for path, content in files.items():
            head, _, rest = path.partition("/")
            if rest:
                subtrees.setdefault(head, {})[rest] = content
                continue
            text, mode = content if isinstance(content, tuple) else (content, FileMode.BLOB)
            builder.insert(head, self.repo.create_blob(text.encode()), mode)
        for name, subfiles in subtrees.items():
            builder.insert(name, self._tree(subfiles), FileMode.TREE)
        return builder.write()


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    return Remote(tmp_path / "remote.git")


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def source(url: str | Path, kind: RefKind = RefKind.BRANCH, value: str = "main", **kw: object) -> GitSource:
    return GitSource(url=str(url), ref=GitRef(kind=kind, value=value), **kw)  # type: ignore[arg-type]


def snapshot_dirs(state: Path) -> set[str]:
    return {p.name for p in (state / "snapshots").iterdir()}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestFetching:
    async def test_the_first_fetch_materialises_a_snapshot_with_the_files_of_the_commit(
        self, remote: Remote, state: Path
    ) -> None:
        sha = remote.commit({"apps/web.yaml": "kind: Deployment\n", "README": "hi\n"}, "Add web\n\nbody")
        snapshot = await GitSourceFetcher(source(remote.path), state).fetch()
        assert snapshot.revision == sha
        assert snapshot.ref == "branch main"
        assert snapshot.message == "Add web"
        assert snapshot.root == state / "snapshots" / sha
        assert (snapshot.root / "apps" / "web.yaml").read_text() == "kind: Deployment\n"
        assert (state / "git" / "mirror.git" / "HEAD").is_file()

    async def test_an_unchanged_remote_gives_the_same_snapshot_and_no_new_directory(
        self, remote: Remote, state: Path
    ) -> None:
        remote.commit({"a.yaml": "a: 1\n"})
        fetcher = GitSourceFetcher(source(remote.path), state)
        first = await fetcher.fetch()
        assert await fetcher.fetch() is first
        assert snapshot_dirs(state) == {first.revision}

    async def test_a_new_commit_gives_a_new_snapshot_keeps_the_previous_and_removes_older_ones(
        self, remote: Remote, state: Path
    ) -> None:
        fetcher = GitSourceFetcher(source(remote.path), state)
        revisions = []
        for n in range(3):
            remote.commit({"a.yaml": f"a: {n}\n"})
            revisions.append((await fetcher.fetch()).revision)
        assert len(set(revisions)) == 3
        assert snapshot_dirs(state) == set(revisions[1:])
        assert fetcher.current is not None
        assert (fetcher.current.root / "a.yaml").read_text() == "a: 2\n"

    async def test_a_tag_ref_serves_the_tagged_commit_not_the_branch_tip(
        self, remote: Remote, state: Path
    ) -> None:
        tagged = remote.commit({"a.yaml": "v1\n"})
        remote.tag("v1.0.0", tagged)
        remote.commit({"a.yaml": "later\n"})
        snapshot = await GitSourceFetcher(source(remote.path, RefKind.TAG, "v1.0.0"), state).fetch()
        assert (snapshot.revision, snapshot.ref) == (tagged, "tag v1.0.0")
        assert (snapshot.root / "a.yaml").read_text() == "v1\n"

    async def test_a_semver_range_picks_the_highest_matching_tag_and_ignores_the_others(
        self, remote: Remote, state: Path
    ) -> None:
        tags = ["v1.0.0", "1.2.0", "v1.4.2", "v1.5.0-rc.1", "v2.0.0", "latest", "v1.9", "release-7"]
        commits = {tag: remote.commit({"version": tag}) for tag in tags}
        for n, tag in enumerate(tags):
            remote.tag(tag, commits[tag], annotated=n % 2 == 0)
        snapshot = await GitSourceFetcher(source(remote.path, RefKind.SEMVER, "^1.0"), state).fetch()
        assert snapshot.ref == "semver ^1.0 -> v1.4.2"
        assert snapshot.revision == commits["v1.4.2"]

    async def test_a_semver_range_that_no_tag_matches_is_ref_not_found(
        self, remote: Remote, state: Path
    ) -> None:
        remote.tag("v1.0.0", remote.commit({"a": "1"}))
        with pytest.raises(RefNotFound, match=r"\(semver >=3\): no tag matches .*tags there: v1\.0\.0"):
            await GitSourceFetcher(source(remote.path, RefKind.SEMVER, ">=3"), state).fetch()

    @pytest.mark.parametrize("digits", [40, 9])
    async def test_a_pinned_commit_is_served_whatever_the_branch_does(
        self, remote: Remote, state: Path, digits: int
    ) -> None:
        pinned = remote.commit({"a.yaml": "pinned\n"})
        remote.commit({"a.yaml": "moved on\n"})
        fetcher = GitSourceFetcher(source(remote.path, RefKind.COMMIT, pinned[:digits]), state)
        snapshot = await fetcher.fetch()
        assert snapshot.revision == pinned
        assert snapshot.ref == f"commit {pinned[:digits]}"
        assert (snapshot.root / "a.yaml").read_text() == "pinned\n"

    async def test_a_pinned_commit_the_remote_lacks_is_ref_not_found(
        self, remote: Remote, state: Path
    ) -> None:
        remote.commit({"a": "1"})
        with pytest.raises(RefNotFound, match=r"commit 0123456789ab.*check the hash"):
            await GitSourceFetcher(source(remote.path, RefKind.COMMIT, "0123456789ab"), state).fetch()

    async def test_a_missing_branch_is_ref_not_found_naming_the_url_and_branch(
        self, remote: Remote, state: Path
    ) -> None:
        remote.commit({"a": "1"})
        fetcher = GitSourceFetcher(source(remote.path, value="production"), state)
        with pytest.raises(RefNotFound) as caught:
            await fetcher.fetch()
        message = str(caught.value)
        assert message.startswith(f"git source {remote.path} (branch production): no such branch")
        assert "branches there: main" in message
        assert fetcher.last_error is caught.value


class TestFailures:
    async def test_an_unreachable_remote_keeps_the_last_good_snapshot_and_backs_off(
        self, remote: Remote, state: Path, tmp_path: Path
    ) -> None:
        remote.commit({"a": "1"})
        fetcher = GitSourceFetcher(source(remote.path), state)
        good = await fetcher.fetch()
        remote.path.rename(tmp_path / "moved.git")
        with pytest.raises(FetchError, match=rf"git source {remote.path} \(branch main\): .*reachable"):
            await fetcher.fetch()
        assert fetcher.current is good
        error = fetcher.last_error
        assert isinstance(error, FetchError)
        assert fetcher.failures == 1
        assert 0 < fetcher.next_attempt_in <= BACKOFF_MAX
        (tmp_path / "moved.git").rename(remote.path)
        assert await fetcher.fetch() is good
        assert (fetcher.last_error, fetcher.failures) == (None, 0)

    async def test_a_nonexistent_path_is_a_fetch_error(self, tmp_path: Path, state: Path) -> None:
        fetcher = GitSourceFetcher(source(tmp_path / "nowhere.git"), state)
        with pytest.raises(FetchError, match=r"nowhere\.git"):
            await fetcher.fetch()
        assert fetcher.current is None

    async def test_the_token_never_appears_in_errors_or_reprs(self, tmp_path: Path, state: Path) -> None:
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        url = f"http://127.0.0.1:{closed_port()}/repo.git"
        fetcher = GitSourceFetcher(source(url, auth=GitAuth(token_file=token_file)), state)
        with pytest.raises(FetchError) as caught:
            await fetcher.fetch()
        texts = [str(caught.value), repr(caught.value), repr(fetcher), repr(fetcher.config)]
        texts += [str(caught.value.__cause__), repr(caught.value.__cause__)]
        assert url in texts[0]
        assert not [text for text in texts if TOKEN in text]

    async def test_a_fetch_that_hangs_times_out_and_does_not_block_the_next_one(
        self, remote: Remote, tmp_path: Path
    ) -> None:
        remote.commit({"a": "1"})
        with socket.socket() as silent:  # accepts connections (backlog), never answers
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            url = f"http://127.0.0.1:{silent.getsockname()[1]}/repo.git"
            hanging = GitSourceFetcher(source(url, timeout=0.5), tmp_path / "hanging")
            with pytest.raises(FetchError, match=r"no answer within 0\.5s"):
                await hanging.fetch()
            snapshot = await GitSourceFetcher(source(remote.path, timeout=3.0), tmp_path / "next").fetch()
        assert (snapshot.root / "a").read_text() == "1"

    def test_backoff_grows_exponentially_with_jitter_up_to_a_cap(self) -> None:
        rng = random.Random(7)  # noqa: S311 - seeded, so the jitter is repeatable
        delays = [backoff(n, base=BACKOFF_INITIAL, cap=BACKOFF_MAX, rng=rng) for n in range(1, 12)]
        assert 2.5 <= delays[0] <= 5.0
        assert 20.0 <= delays[3] <= 40.0
        assert all(BACKOFF_MAX / 2 <= d <= BACKOFF_MAX for d in delays[7:])
        assert len(set(delays)) == len(delays)


class TestSnapshots:
    async def test_snapshot_files_are_read_only_and_outside_any_working_tree(
        self, remote: Remote, state: Path
    ) -> None:
        remote.commit(
            {
                "deploy/run.sh": ("#!/bin/sh\n", FileMode.BLOB_EXECUTABLE),
                "deploy/app.yaml": "kind: Pod\n",
                "link.yaml": ("deploy/app.yaml", FileMode.LINK),
                "escape": ("../../../../etc/passwd", FileMode.LINK),
            }
        )
        root = (await GitSourceFetcher(source(remote.path), state).fetch()).root
        modes = {p.relative_to(root).as_posix(): stat.S_IMODE(p.lstat().st_mode) for p in root.rglob("*")}
        assert modes["deploy/app.yaml"] == 0o444
        assert modes["deploy/run.sh"] == 0o555
        assert modes["deploy"] == stat.S_IMODE(root.stat().st_mode) == 0o555
        assert (root / "link.yaml").read_text() == "kind: Pod\n"
        assert "escape" not in modes
        assert not (root / ".git").exists()
        assert pygit2.discover_repository(str(root)) is None

    async def test_a_restart_reuses_the_mirror_and_the_existing_snapshot(
        self, remote: Remote, state: Path
    ) -> None:
        remote.commit({"a": "1"})
        first = await GitSourceFetcher(source(remote.path), state).fetch()
        objects = sorted((state / "git" / "mirror.git" / "objects").rglob("*"))
        written = first.root.stat().st_ino, (first.root / "a").stat().st_mtime_ns
        (state / "git" / "mirror.git" / "refs" / "heads" / "main.lock").write_text("left by a crash")

        again = await GitSourceFetcher(source(remote.path), state).fetch()
        assert again == first
        assert (again.root.stat().st_ino, (again.root / "a").stat().st_mtime_ns) == written
        assert sorted((state / "git" / "mirror.git" / "objects").rglob("*")) == objects
        assert not (state / "git" / "mirror.git" / "refs" / "heads" / "main.lock").exists()

    async def test_cleanup_before_the_first_fetch_keeps_every_snapshot(
        self, remote: Remote, state: Path
    ) -> None:
        remote.commit({"a": "1"})
        first = await GitSourceFetcher(source(remote.path), state).fetch()
        GitSourceFetcher(source(remote.path), state).cleanup()
        assert first.root.is_dir()


class GitHttpServer(ThreadingHTTPServer):
    """``git http-backend`` for the repositories under `root`, behind basic auth."""

    def __init__(self, root: Path, user: str, token: str) -> None:
        super().__init__(("127.0.0.1", 0), _GitHandler)
        self.root = root
        self.authorization = "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _GitHandler(BaseHTTPRequestHandler):
    server: GitHttpServer

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _serve(self) -> None:
        if self.headers.get("Authorization") != self.server.authorization:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._reply(self._run_backend(self._body()))

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = b""
        while size := int(self.rfile.readline().split(b";")[0], 16):
            body += self.rfile.read(size)
            self.rfile.readline()
        self.rfile.readline()
        return body

    def _run_backend(self, body: bytes) -> bytes:
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "REMOTE_USER": "fleetd",
        }
        return subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout

    def _reply(self, cgi_output: bytes) -> None:
        head, _, payload = cgi_output.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def http_server(remote: Remote) -> Iterator[GitHttpServer]:
    if shutil.which("git") is None:
        pytest.fail("git (for git http-backend) is not installed: apt-get install git")
    server = GitHttpServer(remote.path.parent, "fleet", TOKEN)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="git-http", daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class TestHttpToken:
    async def test_a_token_from_a_file_authenticates_over_http(
        self, remote: Remote, state: Path, http_server: GitHttpServer, tmp_path: Path
    ) -> None:
        sha = remote.commit({"a.yaml": "over http\n"})
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        auth = GitAuth(token_file=token_file, username="fleet")
        fetcher = GitSourceFetcher(source(f"{http_server.url}/remote.git", auth=auth), state)
        snapshot = await fetcher.fetch()
        assert snapshot.revision == sha
        assert (snapshot.root / "a.yaml").read_text() == "over http\n"

    async def test_a_refused_token_is_an_auth_error_that_does_not_show_it(
        self, remote: Remote, state: Path, http_server: GitHttpServer, tmp_path: Path
    ) -> None:
        remote.commit({"a": "1"})
        token_file = tmp_path / "token"
        token_file.write_text("wrong-" + TOKEN)
        auth = GitAuth(token_file=token_file, username="fleet")
        fetcher = GitSourceFetcher(source(f"{http_server.url}/remote.git", auth=auth), state)
        with pytest.raises(AuthError, match=r"refused the token in token_file .*\(HTTP 401\)") as caught:
            await fetcher.fetch()
        assert TOKEN not in str(caught.value) + repr(caught.value) + repr(fetcher)

    async def test_no_credentials_for_a_server_that_wants_them_is_an_auth_error(
        self, remote: Remote, state: Path, http_server: GitHttpServer
    ) -> None:
        remote.commit({"a": "1"})
        fetcher = GitSourceFetcher(source(f"{http_server.url}/remote.git"), state)
        with pytest.raises(AuthError, match=r"set token_file, a GitHub App or ssh_key_file"):
            await fetcher.fetch()


KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
OTHER_KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIBz1d0dGq9ZQ8k8aO2vGBxQJ5t8b4wJm6mF0d3c2YtMv"


class TestSsh:
    def test_plain_wildcard_and_port_entries_match_as_openssh_reads_them(self) -> None:
        entries = parse_known_hosts(
            "# comment\n\n"
            f"git.example.com,10.0.0.5 ssh-ed25519 {KEY}\n"
            f"*.corp.example,!secret.corp.example ssh-ed25519 {KEY}\n"
            f"[gitea.lan]:2222 ssh-ed25519 {OTHER_KEY}\n"
            f"@revoked git.example.com ssh-ed25519 {OTHER_KEY}\n"
            "malformed-line\n"
        )
        assert len(entries) == 4
        assert [e.key for e in keys_for_host(entries, "GIT.example.com")] == [KEY]
        assert keys_for_host(entries, "10.0.0.5")
        assert keys_for_host(entries, "build.corp.example")
        assert not keys_for_host(entries, "secret.corp.example")
        assert [e.key for e in keys_for_host(entries, "gitea.lan", 2222)] == [OTHER_KEY]
        assert not keys_for_host(entries, "gitea.lan")
        assert not keys_for_host(entries, "git.example.com", 2222)

    def test_hashed_entries_written_by_ssh_keygen_match(self, tmp_path: Path) -> None:
        if shutil.which("ssh-keygen") is None:
            pytest.fail("ssh-keygen is not installed: apt-get install openssh-client")
        known = tmp_path / "known_hosts"
        known.write_text(f"git.example.com ssh-ed25519 {KEY}\n[gitea.lan]:2222 ssh-ed25519 {OTHER_KEY}\n")
        subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True)
        entries = parse_known_hosts(known.read_text())
        assert all(e.hosts.startswith("|1|") for e in entries)
        assert [e.key for e in keys_for_host(entries, "git.example.com")] == [KEY]
        assert [e.key for e in keys_for_host(entries, "gitea.lan", 2222)] == [OTHER_KEY]
        assert not keys_for_host(entries, "other.example.com")

    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            ("git@github.com:org/fleet.git", ("github.com", 22)),
            ("ssh://git@gitea.lan:2222/org/fleet.git", ("gitea.lan", 2222)),
            ("ssh://gitea.lan/fleet.git", ("gitea.lan", 22)),
        ],
    )
    def test_ssh_urls_name_the_host_and_port_to_verify(self, url: str, expected: tuple[str, int]) -> None:
        assert transport(url) == "ssh"
        assert ssh_host_port(url) == expected

    async def test_an_unknown_host_is_refused_before_connecting(self, tmp_path: Path, state: Path) -> None:
        known = tmp_path / "known_hosts"
        known.write_text(f"git.example.com ssh-ed25519 {KEY}\n")
        auth = GitAuth(ssh_key_file=deploy_key(tmp_path), known_hosts_file=known)
        fetcher = GitSourceFetcher(source("git@unknown.example:org/fleet.git", auth=auth), state)
        with pytest.raises(AuthError, match=r"host unknown\.example port 22 has no entry .*ssh-keyscan"):
            await fetcher.fetch()

    async def test_a_known_host_gets_its_keys_in_the_private_known_hosts_file(
        self, tmp_path: Path, state: Path
    ) -> None:
        port = closed_port()
        known = tmp_path / "known_hosts"
        known.write_text(f"[127.0.0.1]:{port} ssh-ed25519 {KEY}\n127.0.0.1 ssh-ed25519 {OTHER_KEY}\n")
        auth = GitAuth(ssh_key_file=deploy_key(tmp_path), known_hosts_file=known)
        url = f"ssh://git@127.0.0.1:{port}/fleet.git"
        with pytest.raises(FetchError, match=r"127\.0\.0\.1"):  # nothing listens there
            await GitSourceFetcher(source(url, auth=auth), state).fetch()
        written = (state / "git" / "home" / ".ssh" / "known_hosts").read_text()
        assert written == f"[127.0.0.1]:{port} ssh-ed25519 {KEY}\n"

    async def test_libssh2_accepts_the_written_file_for_the_listed_key_only(
        self, tmp_path: Path, state: Path
    ) -> None:
        port = closed_port()
        known = tmp_path / "known_hosts"
        known.write_text(f"[127.0.0.1]:{port} ssh-ed25519 {KEY}\n")
        auth = GitAuth(ssh_key_file=deploy_key(tmp_path), known_hosts_file=known)
        with pytest.raises(FetchError):
            await GitSourceFetcher(source(f"ssh://127.0.0.1:{port}/x", auth=auth), state).fetch()
        written = state / "git" / "home" / ".ssh" / "known_hosts"
        assert libssh2_check(written, "127.0.0.1", port, KEY) == "match"
        assert libssh2_check(written, "127.0.0.1", port, OTHER_KEY) == "mismatch"
        assert libssh2_check(written, "127.0.0.1", 22, KEY) == "notfound"


def deploy_key(directory: Path) -> Path:
    key = directory / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def libssh2_check(known_hosts: Path, host: str, port: int, key: str) -> str:
    """What the libssh2 bundled with pygit2 (which libgit2 uses) says of `key` for host:port."""
    found = list((Path(pygit2.__file__).parent.parent / "pygit2.libs").glob("libssh2*.so*"))
    if not found:
        pytest.fail("pygit2 does not bundle libssh2 here: the known_hosts check needs a pygit2 wheel")
    lib = ctypes.CDLL(str(found[0]))
    lib.libssh2_session_init_ex.restype = lib.libssh2_knownhost_init.restype = ctypes.c_void_p
    lib.libssh2_session_init_ex.argtypes = [ctypes.c_void_p] * 4
    for name in ("knownhost_init", "knownhost_free", "session_free"):
        getattr(lib, f"libssh2_{name}").argtypes = [ctypes.c_void_p]
    lib.libssh2_knownhost_readfile.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    lib.libssh2_knownhost_checkp.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    lib.libssh2_knownhost_checkp.argtypes += [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
    session = lib.libssh2_session_init_ex(None, None, None, None)
    hosts = lib.libssh2_knownhost_init(session)
    assert lib.libssh2_knownhost_readfile(hosts, str(known_hosts).encode(), 1) >= 1  # 1: OpenSSH format
    raw = base64.b64decode(key)
    plain_host_raw_key = 1 | 1 << 16
    verdict: int = lib.libssh2_knownhost_checkp(
        hosts, host.encode(), port, raw, len(raw), plain_host_raw_key, None
    )
    lib.libssh2_knownhost_free(hosts)
    lib.libssh2_session_free(session)
    return ["match", "mismatch", "notfound", "failure"][verdict]


class TestUrls:
    @pytest.mark.parametrize(
        ("url", "kind"),
        [
            ("https://git.example.com/fleet.git", "http"),
            ("/srv/git/fleet", "local"),
            ("file:///srv/x", "local"),
        ],
    )
    def test_urls_are_classified_by_transport(self, url: str, kind: str) -> None:
        assert transport(url) == kind

    def test_a_password_written_into_a_url_is_redacted(self) -> None:
        assert (
            redact(f"https://fleet:{TOKEN}@git.example.com/x.git")
            == "https://fleet:***@git.example.com/x.git"
        )
        assert redact("https://git.example.com/x.git") == "https://git.example.com/x.git"


async def test_concurrent_fetches_share_one_revision(remote: Remote, state: Path) -> None:
    remote.commit({"a": "1"})
    fetcher = GitSourceFetcher(source(remote.path), state)
    results: list[Snapshot] = await asyncio.gather(*(fetcher.fetch() for _ in range(4)))
    assert all(r is results[0] for r in results)
    assert snapshot_dirs(state) == {results[0].revision}


def force_push(remote: Remote, files: Files, message: str) -> str:
    """Point main at a new root commit, as a force push that rewrites history does."""
    tree = remote._tree(files)
    oid = remote.repo.create_commit(None, SIGNATURE, SIGNATURE, message, tree, [])
    remote.repo.references.create("refs/heads/main", oid, force=True)
    return str(oid)


def loose_objects(state: Path) -> list[Path]:
    return [
        p for d in (state / "git" / "mirror.git" / "objects").glob("[0-9a-f][0-9a-f]") for p in d.iterdir()
    ]


def packs(state: Path) -> list[Path]:
    return list((state / "git" / "mirror.git" / "objects" / "pack").glob("*.pack"))


def mirror_has(state: Path, revision: str) -> bool:
    return pygit2.Repository(str(state / "git" / "mirror.git")).get(revision) is not None


class TestUpkeep:
    async def test_upkeep_repacks_into_one_pack_and_drops_history_no_ref_or_revision_in_use_reaches(
        self, remote: Remote, state: Path
    ) -> None:
        fetcher = GitSourceFetcher(source(remote.path), state)
        old = [remote.commit({"a": f"{n}"}) for n in range(3)]
        await fetcher.fetch()
        previous = force_push(remote, {"b": "rewritten"}, "rewrite")
        await fetcher.fetch()
        current = force_push(remote, {"b": "rewritten again"}, "rewrite again")
        await fetcher.fetch()
        assert len(packs(state)) == 3  # one per fetch
        report = await fetcher.upkeep()
        assert report is not None
        assert not loose_objects(state)
        assert len(packs(state)) == 1
        assert report.packed_objects == 6  # two commits in use, each with its tree and blob
        assert not [r for r in old if mirror_has(state, r)]
        assert mirror_has(state, previous)
        assert mirror_has(state, current)
        assert report.removed_snapshots == ()
        assert snapshot_dirs(state) == {previous, current}
        latest = remote.commit({"b": "after the repack"})
        assert (await fetcher.fetch()).revision == latest

    async def test_pinned_revisions_keep_their_objects_and_snapshots(
        self, remote: Remote, state: Path
    ) -> None:
        fetcher = GitSourceFetcher(source(remote.path), state)
        wave_revision = remote.commit({"a": "held back"})
        await fetcher.fetch()
        for n in range(2):
            force_push(remote, {"a": f"rewritten {n}"}, "rewrite")
            await fetcher.fetch()
        fetcher.pin([wave_revision])
        stray = state / "snapshots" / ".tmp-0123456789ab-crash"
        stray.mkdir()
        report = await fetcher.upkeep()
        assert report is not None
        assert ".tmp-0123456789ab-crash" in report.removed_snapshots
        assert mirror_has(state, wave_revision)
        snapshot = await fetcher.snapshot_at(wave_revision)
        assert (snapshot.root / "a").read_text() == "held back"

    async def test_disk_use_is_measured_after_a_new_revision_and_after_upkeep(
        self, remote: Remote, state: Path
    ) -> None:
        fetcher = GitSourceFetcher(source(remote.path), state)
        before = fetcher.disk_usage
        assert before is None
        for n in range(20):
            remote.commit({f"f{n}": "x" * 100, "a": f"{n}"})
            await fetcher.fetch()
        usage = fetcher.disk_usage
        assert usage is not None
        assert usage.mirror_bytes > 0
        assert usage.snapshots == 2
        assert usage.total_bytes == usage.mirror_bytes + usage.snapshot_bytes
        report = await fetcher.upkeep()
        assert report is not None
        assert report.after.mirror_bytes < report.before.mirror_bytes
        assert fetcher.disk_usage == report.after

    async def test_upkeep_is_due_one_interval_after_start_and_after_each_round(
        self, remote: Remote, state: Path
    ) -> None:
        fetcher = GitSourceFetcher(source(remote.path, upkeep_interval=3600.0), state)
        assert 3590 < fetcher.upkeep_due_in <= 3600
        report = await fetcher.upkeep()  # before any fetch: nothing to pack, nothing removed
        assert report is not None
        assert (report.packed_objects, report.removed_snapshots) == (0, ())
        assert 3590 < fetcher.upkeep_due_in <= 3600


class TestShallow:
    async def test_depth_1_fetches_only_the_tip_and_later_fetches_and_upkeep_keep_working(
        self, remote: Remote, state: Path, http_server: GitHttpServer, tmp_path: Path
    ) -> None:
        first = remote.commit({"a": "1"})
        remote.commit({"a": "2"})
        tip = remote.commit({"a": "3"})
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN)
        auth = GitAuth(token_file=token_file, username="fleet")
        fetcher = GitSourceFetcher(source(f"{http_server.url}/remote.git", auth=auth, depth=1), state)
        snapshot = await fetcher.fetch()
        assert snapshot.revision == tip
        mirror = pygit2.Repository(str(state / "git" / "mirror.git"))
        assert mirror.is_shallow
        assert mirror.get(first) is None
        newer = remote.commit({"a": "4"})
        assert (await fetcher.fetch()).revision == newer
        assert await fetcher.upkeep() is not None
        assert (await fetcher.fetch()).revision == newer
        assert (fetcher.current.root / "a").read_text() == "4"  # type: ignore[union-attr]
