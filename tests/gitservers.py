"""Real git servers on loopback for the source tests: sshd, smart HTTP over TLS, a GitHub App token endpoint.

Started once per session by the ``git_servers`` fixture (tests/conftest.py,
via `start_servers`) on the first test that asks for them, and stopped at the end.

* `SshServer`: Debian's OpenSSH ``sshd`` with its own config, host keys
  (ed25519, RSA, and an ed25519 host certificate signed by a host CA), on a
  free loopback port, as root (sshd must switch users). Logins go to user
  `GIT_USER`, whose shell is ``git-shell``: it can run git's upload-pack and
  nothing else. Client keys: ed25519, RSA, an ed25519 key with a passphrase,
  and one key that is not authorised.
* `HttpsGitServer`: ``git http-backend`` as CGI behind an aiohttp server
  with TLS from a test CA (`LoopbackCa`) and basic auth, plus redirects (same
  host, and to another host name) and a second port whose certificate comes
  from a CA nobody trusts. It runs in a thread with its own event loop, so
  blocking tests cannot starve it.
* `GitHubAppStandIn`, on the same server under ``/api/v3``: a loopback
  stand-in for GitHub's ``POST /app/installations/{id}/access_tokens``. It
  verifies the JWT as GitHub does (RS256 signature with the App's public
  key, ``iss``, ``iat``, ``exp`` at most ten minutes ahead) and issues
  tokens that the git routes then accept as ``x-access-token``. It is not
  GitHub: only the behaviour fleetd relies on is reproduced.

Repositories live in one world-readable directory (`GitServers.repos`), so
the SSH user can read what root's tests commit.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pygit2
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from pygit2.enums import FileMode, ObjectType

GIT_USER = "fleetd-git"
HTTP_USER = "fleet"
HTTP_TOKEN = "s3cr3t-token-4f9a"
APP_ID = 4242
INSTALLATION = 77
SHORT_LIVED_INSTALLATION = 78
"""Its tokens expire 1 s after fleetd's refresh margin, so the cache turns over within a test."""
SIGNATURE = pygit2.Signature("Fleet Tester", "tester@example.com")
DEADLINE = 15.0

Files = Mapping[str, str | tuple[str, FileMode]]
_T = TypeVar("_T")


class Remote:
    """A bare repository that tests commit to directly."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.repo = pygit2.init_repository(str(path), bare=True)

    @property
    def name(self) -> str:
        return self.path.name

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, what: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"{what} does not listen on 127.0.0.1:{port} after {DEADLINE:g}s")


def ssh_keygen(*args: str) -> None:
    if shutil.which("ssh-keygen") is None:
        raise RuntimeError("ssh-keygen is missing: apt-get install openssh-client")
    subprocess.run(["ssh-keygen", "-q", *args], check=True, capture_output=True)


# --- TLS -------------------------------------------------------------------------------------------


_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


class LoopbackCa:
    """A throw-away CA (ECDSA P-256) that signs loopback server certificates."""

    def __init__(self, directory: Path, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_CA_USAGE, critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = directory / f"{name}.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def server_context(self, directory: Path, name: str) -> ssl.SSLContext:
        """A server TLS context with a certificate for 127.0.0.1 and localhost."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        return context


# --- SSH -------------------------------------------------------------------------------------------


@dataclass
class SshServer:
    """Debian's sshd on loopback, logins to `GIT_USER` (git-shell) with the authorised client keys."""

    workdir: Path
    repos: Path
    port: int = 0
    keys: dict[str, Path] = field(default_factory=dict)
    """Client keys: ed25519, rsa, passphrase (ed25519, passphrase in keys["passphrase_file"]), stranger."""
    host_keys: dict[str, str] = field(default_factory=dict)
    """Host public keys as known_hosts fields ("ssh-ed25519 AAAA..."): ed25519, rsa, ca."""
    _proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("the SSH tests start sshd, which must run as root to switch users")
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        if not Path(sshd).is_file():
            raise RuntimeError("sshd is missing: apt-get install openssh-server (make system-deps)")
        home = self._user()
        self._host_keys()
        self._client_keys()
        (self.workdir / "sshd.log").touch()
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        self.port = free_port()
        config = self.workdir / "sshd_config"
        config.write_text(
            f"ListenAddress 127.0.0.1:{self.port}\n"
            f"HostKey {self.workdir / 'host_ed25519'}\n"
            f"HostKey {self.workdir / 'host_rsa'}\n"
            f"HostCertificate {self.workdir / 'host_ed25519-cert.pub'}\n"
            "PidFile none\n"
            f"AuthorizedKeysFile {self.workdir / 'authorized_keys'}\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "StrictModes no\nPermitRootLogin no\n"
            f"AllowUsers {GIT_USER}\n"
            "LogLevel VERBOSE\n"
        )
        log = open(self.workdir / "sshd.log", "ab")  # noqa: SIM115 - open for the life of sshd
        self._proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
        log.close()
        wait_for_port(self.port, f"sshd (log: {self.workdir / 'sshd.log'})", self._proc)
        assert home.is_dir()

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def url(self, remote: Remote, *, scp_like: bool = False) -> str:
        if scp_like:
            return f"{GIT_USER}@127.0.0.1:{remote.path}"  # port 22 only: for parsing tests
        return f"ssh://{GIT_USER}@127.0.0.1:{self.port}{remote.path}"

    def known_hosts(self, directory: Path, *lines: str) -> Path:
        """A known_hosts file in `directory` holding `lines`."""
        path = directory / f"known_hosts-{secrets.token_hex(4)}"
        path.write_text("".join(f"{line}\n" for line in lines))
        return path

    @property
    def name(self) -> str:
        return f"[127.0.0.1]:{self.port}"

    def _user(self) -> Path:
        """Create (or re-point) the git-shell user; idempotent across sessions."""
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        (home / ".gitconfig").write_text("[safe]\n\tdirectory = *\n")  # repositories belong to root
        home.chmod(0o755)
        exists = subprocess.run(["id", "-u", GIT_USER], capture_output=True).returncode == 0
        if not exists:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--home-dir", str(home),
                 "--shell", "/usr/bin/git-shell", GIT_USER],
                check=True, capture_output=True,
            )  # fmt: skip
        subprocess.run(
            ["usermod", "--home", str(home), "--shell", "/usr/bin/git-shell", "--password", "*", GIT_USER],
            check=True,
            capture_output=True,
        )  # fmt: skip  (a "!" password would count as locked: sshd refuses locked accounts without PAM)
        return home

    def _host_keys(self) -> None:
        w = self.workdir
        ssh_keygen("-t", "ed25519", "-N", "", "-f", str(w / "host_ed25519"))
        ssh_keygen("-t", "rsa", "-b", "2048", "-N", "", "-f", str(w / "host_rsa"))
        ssh_keygen("-t", "ed25519", "-N", "", "-f", str(w / "host_ca"))
        ssh_keygen("-s", str(w / "host_ca"), "-I", "fleetd-test-host", "-h", "-n", "127.0.0.1",
                   str(w / "host_ed25519.pub"))  # fmt: skip
        for name in ("ed25519", "rsa"):
            self.host_keys[name] = " ".join((w / f"host_{name}.pub").read_text().split()[:2])
        self.host_keys["ca"] = " ".join((w / "host_ca.pub").read_text().split()[:2])

    def _client_keys(self) -> None:
        w = self.workdir / "client"
        w.mkdir()
        ssh_keygen("-t", "ed25519", "-N", "", "-C", "ed25519", "-f", str(w / "id_ed25519"))
        ssh_keygen("-t", "rsa", "-b", "2048", "-N", "", "-C", "rsa", "-f", str(w / "id_rsa"))
        ssh_keygen("-t", "ed25519", "-N", "correct horse", "-C", "pass", "-f", str(w / "id_passphrase"))
        ssh_keygen("-t", "ed25519", "-N", "", "-C", "stranger", "-f", str(w / "id_stranger"))
        (w / "passphrase").write_text("correct horse\n")
        self.keys = {
            "ed25519": w / "id_ed25519",
            "rsa": w / "id_rsa",
            "passphrase": w / "id_passphrase",
            "passphrase_file": w / "passphrase",
            "stranger": w / "id_stranger",
        }
        authorised = [(w / f"{name}.pub").read_text() for name in ("id_ed25519", "id_rsa", "id_passphrase")]
        (self.workdir / "authorized_keys").write_text("".join(authorised))
        for key in w.glob("id_*.pub"):
            key.unlink()  # fleetd must never need the .pub file


# --- HTTPS, redirects and the GitHub App stand-in ----------------------------------------------------


class _Loop:
    """An event loop in a thread of its own, for servers that must answer while tests block."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=DEADLINE)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=DEADLINE)
        self.loop.close()


@dataclass
class Installation:
    """One installation of the stand-in's App: token lifetime and issued tokens."""

    lifetime: float
    issued: dict[str, float] = field(default_factory=dict)
    """token -> monotonic expiry."""
    requests: int = 0
    refusals: list[str] = field(default_factory=list)


class GitHubAppStandIn:
    """The token endpoint of a GitHub App, checking JWTs the way GitHub documents it."""

    def __init__(self, directory: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_file = directory / "app.pem"
        self.key_file.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )  # fmt: skip
        self.key_file.chmod(0o600)
        self.installations = {
            INSTALLATION: Installation(lifetime=3600.0),
            SHORT_LIVED_INSTALLATION: Installation(lifetime=301.0),
        }

    def valid(self, token: str) -> bool:
        now = time.monotonic()
        return any(token in i.issued and i.issued[token] > now for i in self.installations.values())

    async def access_tokens(self, request: web.Request) -> web.Response:
        installation = self.installations.get(int(request.match_info["installation"]))
        problem = self._check_jwt(request.headers.get("Authorization", ""))
        if installation is not None:
            installation.requests += 1
        if problem is not None:
            if installation is not None:
                installation.refusals.append(problem)
            return web.json_response({"message": problem}, status=401)
        if installation is None:
            return web.json_response({"message": "Not Found"}, status=404)
        token = "ghs_" + secrets.token_hex(18)
        installation.issued[token] = time.monotonic() + installation.lifetime
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=installation.lifetime)
        answer = {"token": token, "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}
        return web.json_response(answer | {"permissions": {"contents": "read"}}, status=201)

    def _check_jwt(self, authorization: str) -> str | None:
        if not authorization.startswith("Bearer "):
            return "A JSON web token could not be decoded"
        try:
            header_b64, claims_b64, signature_b64 = authorization.removeprefix("Bearer ").split(".")
            header, claims = json.loads(_unb64(header_b64)), json.loads(_unb64(claims_b64))
            self.key.public_key().verify(
                _unb64(signature_b64),
                f"{header_b64}.{claims_b64}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except Exception:  # noqa: BLE001 - any malformed or forged token gets GitHub's answer
            return "A JSON web token could not be decoded"
        now = time.time()
        if header.get("alg") != "RS256":
            return "'alg' must be RS256"
        if str(claims.get("iss")) != str(APP_ID):
            return "Integration not found"
        if not isinstance(claims.get("iat"), int) or claims["iat"] > now + 5:
            return "'Issued at' claim ('iat') must be an Integer representing a time in the past"
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= now:
            return "'Expiration time' claim ('exp') must be a numeric value representing the future time"
        if claims["exp"] - now > 600 or claims["exp"] - claims["iat"] > 660:
            return "'Expiration time' claim ('exp') is too far in the future"
        return None


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class HttpsGitServer:
    """``git http-backend`` over TLS with basic auth, redirects, and the GitHub App stand-in."""

    def __init__(self, workdir: Path, repos: Path) -> None:
        self.workdir = workdir
        self.repos = repos
        self.ca = LoopbackCa(workdir, "fleetd-test-ca")
        self.stranger_ca = LoopbackCa(workdir, "stranger-ca")
        self.app = GitHubAppStandIn(workdir)
        self.port = 0
        self.untrusted_port = 0
        self.requests: list[tuple[str, str]] = []
        """(method, path) of every git request, for tests that count round trips."""
        self._loop = _Loop("https-git-server")
        self._runner: web.AppRunner | None = None

    def start(self) -> None:
        if shutil.which("git") is None:
            raise RuntimeError("git (for git http-backend) is missing: apt-get install git")
        self._loop.run(self._start())

    def stop(self) -> None:
        if self._runner is not None:
            self._loop.run(self._runner.cleanup())
        self._loop.stop()

    def url(self, remote: Remote, route: str = "git", *, untrusted: bool = False) -> str:
        port = self.untrusted_port if untrusted else self.port
        return f"https://127.0.0.1:{port}/{route}/{remote.name}"

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/api/v3"

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/git/{path:.*}", self._git)
        app.router.add_route("*", "/moved/{path:.*}", self._moved)
        app.router.add_route("*", "/elsewhere/{path:.*}", self._elsewhere)
        app.router.add_post("/api/v3/app/installations/{installation}/access_tokens", self.app.access_tokens)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        trusted = web.TCPSite(
            self._runner, "127.0.0.1", 0, ssl_context=self.ca.server_context(self.workdir, "git")
        )
        untrusted = web.TCPSite(
            self._runner,
            "127.0.0.1",
            0,
            ssl_context=self.stranger_ca.server_context(self.workdir, "stranger"),
        )
        await trusted.start()
        await untrusted.start()
        self.port = _port(trusted)
        self.untrusted_port = _port(untrusted)

    def _authorised(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        user, _, password = base64.b64decode(header.removeprefix("Basic ")).decode().partition(":")
        if (user, password) == (HTTP_USER, HTTP_TOKEN):
            return True
        return user == "x-access-token" and self.app.valid(password)

    async def _moved(self, request: web.Request) -> web.Response:
        target = f"/git/{request.match_info['path']}"
        raise web.HTTPMovedPermanently(target + (f"?{request.query_string}" if request.query_string else ""))

    async def _elsewhere(self, request: web.Request) -> web.Response:
        target = f"https://localhost:{self.port}/git/{request.match_info['path']}"
        raise web.HTTPMovedPermanently(target + (f"?{request.query_string}" if request.query_string else ""))

    async def _git(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        if not self._authorised(request.headers.get("Authorization")):
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="git"'})
        body = await request.read()
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(self.repos),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_GLOBAL": str(self.workdir / "gitconfig"),
            "REQUEST_METHOD": request.method,
            "PATH_INFO": "/" + request.match_info["path"],
            "QUERY_STRING": request.query_string,
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "GIT_PROTOCOL": request.headers.get("Git-Protocol", ""),
            "REMOTE_USER": "fleetd",
            "REMOTE_ADDR": "127.0.0.1",
        }
        proc = await asyncio.create_subprocess_exec(
            "git", "http-backend", stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        output, _ = await proc.communicate(body)
        head, _, payload = output.partition(b"\r\n\r\n")
        status, headers = 200, {}
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers[name] = value.strip()
        return web.Response(status=status, headers=headers, body=payload)


def _port(site: web.TCPSite) -> int:
    server = site._server
    assert isinstance(server, asyncio.base_events.Server)
    return int(server.sockets[0].getsockname()[1])


# --- the session's servers ----------------------------------------------------------------------------


@dataclass
class GitServers:
    """Everything the remote-source tests talk to; one per test session."""

    repos: Path
    ssh: SshServer
    https: HttpsGitServer

    def remote(self, name: str | None = None) -> Remote:
        """A new bare repository the servers serve."""
        return Remote(self.repos / f"{name or secrets.token_hex(6)}.git")


def start_servers() -> Iterator[GitServers]:
    """Start sshd and the HTTPS server; yields once; stops them. Used as a session fixture."""
    base = Path(tempfile.mkdtemp(prefix="fleetd-gitservers-"))
    base.chmod(0o755)
    repos = base / "repos"
    repos.mkdir(mode=0o755)
    repos.chmod(0o755)
    (base / "ssh").mkdir()
    (base / "ssh").chmod(0o755)
    (base / "https").mkdir()
    (base / "https" / "gitconfig").write_text("[safe]\n\tdirectory = *\n")
    ssh = SshServer(base / "ssh", repos)
    https = HttpsGitServer(base / "https", repos)
    try:
        ssh.start()
        https.start()
        yield GitServers(repos=repos, ssh=ssh, https=https)
    finally:
        ssh.stop()
        https.stop()
        shutil.rmtree(base, ignore_errors=True)
