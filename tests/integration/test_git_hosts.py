"""The git source against real git servers: sshd, smart HTTP over TLS, a GitHub App token endpoint.

The servers (tests/gitservers.py) start once per session. Every failure is
checked for its own message, for keeping the last good revision, and for
never showing a secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fleetd.inventory.model import GitAuth, GitHubApp, GitRef, GitSource, RefKind
from fleetd.source import AuthError, FetchError, GitSourceFetcher, SourceError, TrustError
from fleetd.source.github_app import REFRESH_MARGIN
from tests.gitservers import (
    APP_ID,
    GIT_USER,
    HTTP_TOKEN,
    HTTP_USER,
    INSTALLATION,
    SHORT_LIVED_INSTALLATION,
    GitServers,
    Remote,
    free_port,
    ssh_keygen,
)

pytestmark = pytest.mark.timeout(60)


def source(url: str, auth: GitAuth | None = None, **kw: object) -> GitSource:
    return GitSource(url=url, ref=GitRef(kind=RefKind.BRANCH, value="main"), auth=auth, timeout=15.0, **kw)  # type: ignore[arg-type]


def secret_file(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    path.chmod(0o600)
    return path


def everything_written(state: Path) -> str:
    """Every file under the state directory, as text (to look for secrets in)."""
    texts = []
    for path in state.rglob("*"):
        if path.is_file() and not path.is_symlink():
            texts.append(path.read_bytes().decode("latin-1"))
    return "\n".join(texts)


# --- SSH ---------------------------------------------------------------------------------------------


class TestSsh:
    def auth(self, servers: GitServers, tmp_path: Path, key: str = "ed25519", **kw: object) -> GitAuth:
        known = servers.ssh.known_hosts(tmp_path, f"{servers.ssh.name} {servers.ssh.host_keys['ed25519']}")
        values: dict[str, object] = {"ssh_key_file": servers.ssh.keys[key], "known_hosts_file": known}
        return GitAuth(username=GIT_USER, **(values | kw))  # type: ignore[arg-type]

    @pytest.mark.parametrize("key", ["ed25519", "rsa"])
    async def test_a_deploy_key_clones_and_a_later_fetch_brings_the_new_commit(
        self, git_servers: GitServers, tmp_path: Path, key: str
    ) -> None:
        remote = git_servers.remote()
        first = remote.commit({"apps/web.yaml": "kind: Deployment\n"}, "Add web")
        fetcher = GitSourceFetcher(
            source(git_servers.ssh.url(remote), self.auth(git_servers, tmp_path, key)), tmp_path / "state"
        )
        snapshot = await fetcher.fetch()
        assert (snapshot.revision, snapshot.message) == (first, "Add web")
        assert (snapshot.root / "apps" / "web.yaml").read_text() == "kind: Deployment\n"
        second = remote.commit({"apps/web.yaml": "kind: Deployment # v2\n"}, "v2")
        assert (await fetcher.fetch()).revision == second

    async def test_a_key_with_a_passphrase_read_from_a_file_clones(
        self, git_servers: GitServers, tmp_path: Path
    ) -> None:
        remote = git_servers.remote()
        sha = remote.commit({"a": "1"})
        auth = self.auth(
            git_servers, tmp_path, "passphrase", passphrase_file=git_servers.ssh.keys["passphrase_file"]
        )
        assert (
            await GitSourceFetcher(source(git_servers.ssh.url(remote), auth), tmp_path / "s").fetch()
        ).revision == sha

    async def test_a_wrong_passphrase_is_named_as_such(self, git_servers: GitServers, tmp_path: Path) -> None:
        remote = git_servers.remote()
        remote.commit({"a": "1"})
        wrong = secret_file(tmp_path, "passphrase", "battery staple\n")
        auth = self.auth(git_servers, tmp_path, "passphrase", passphrase_file=wrong)
        with pytest.raises(
            AuthError,
            match=rf"cannot use ssh_key_file .*: the passphrase in passphrase_file {wrong} is wrong",
        ) as caught:
            await GitSourceFetcher(source(git_servers.ssh.url(remote), auth), tmp_path / "s").fetch()
        assert "battery" not in str(caught.value)

    async def test_a_key_with_a_passphrase_but_no_passphrase_file_is_refused_before_connecting(
        self, git_servers: GitServers, tmp_path: Path
    ) -> None:
        auth = self.auth(git_servers, tmp_path, "passphrase")
        url = (
            f"ssh://{GIT_USER}@127.0.0.1:{free_port()}/nothing.git"  # nothing listens: no connection is made
        )
        with pytest.raises(AuthError, match=r"is protected by a passphrase; .*set passphrase_file"):
            await GitSourceFetcher(source(url, auth), tmp_path / "s").fetch()

    async def test_a_key_the_server_does_not_authorise_is_refused_naming_the_key_and_the_fix(
        self, git_servers: GitServers, tmp_path: Path
    ) -> None:
        remote = git_servers.remote()
        remote.commit({"a": "1"})
        auth = self.auth(git_servers, tmp_path, "stranger")
        with pytest.raises(
            AuthError, match=r"the server refused the SSH key in .*id_stranger .*deploy key"
        ) as caught:
            await GitSourceFetcher(source(git_servers.ssh.url(remote), auth), tmp_path / "s").fetch()
        assert not isinstance(caught.value, TrustError)

    async def test_a_hashed_known_hosts_entry_for_a_non_standard_port_is_trusted(
        self, git_servers: GitServers, tmp_path: Path
    ) -> None:
        remote = git_servers.remote()
        sha = remote.commit({"a": "1"})
        known = git_servers.ssh.known_hosts(
            tmp_path, f"other.example ssh-ed25519 {git_servers.ssh.host_keys['rsa'].split()[1]}",
            f"{git_servers.ssh.name} {git_servers.ssh.host_keys['ed25519']}",
        )  # fmt: skip
        ssh_keygen("-H", "-f", str(known))
        assert git_servers.ssh.name not in known.read_text()
        assert all(line.startswith("|1|") for line in known.read_text().splitlines())
        auth = GitAuth(
            username=GIT_USER, ssh_key_file=git_servers.ssh.keys["ed25519"], known_hosts_file=known
        )
        assert (
            await GitSourceFetcher(source(git_servers.ssh.url(remote), auth), tmp_path / "s").fetch()
        ).revision == sha

    async def test_an_rsa_host_key_entry_makes_the_server_present_its_rsa_key(
        self, git_servers: GitServers, tmp_path: Path
    ) -> None:
        remote = git_servers.remote()
        sha = remote.commit({"a": "1"})
        known = git_servers.ssh.known_hosts(
            tmp_path, f"{git_servers.ssh.name} {git_servers.ssh.host_keys['rsa']}"
        )
        auth = GitAuth(
            username=GIT_USER, ssh_key_file=git_servers.ssh.keys["ed25519"], known_hosts_file=known
        )
        assert (
            await GitSourceFetcher(source(git_servers.ssh.url(remote), auth), tmp_path / "s").fetch()
        ).revision == sha

    async def test_an_unknown_host_is_refused_before_connecting_with_the_keyscan_line(
        self, git_servers: GitServers, tmp_path: Path
    ) -> None:
        remote = git_servers.remote()
        known = git_servers.ssh.known_hosts(
            tmp_path, f"127.0.0.1 {git_servers.ssh.host_keys['ed25519']}"
        )  # port 22 only
        auth = GitAuth(
            username=GIT_USER, ssh_key_file=git_servers.ssh.keys["ed25519"], known_hosts_file=known
        )
        port = git_servers.ssh.port
        with pytest.raises(
            TrustError,
            match=rf"host 127\.0\.0\.1 port {port} has no entry in {known}; "
            rf".*ssh-keyscan -p {port} 127\.0\.0\.1 >> {known}",
        ):
            await GitSourceFetcher(source(git_servers.ssh.url(remote), auth), tmp_path / "s").fetch()

    async def test_a_changed_host_key_is_refused_with_how_to_replace_the_entry(
        self, git_servers: GitServers, tmp_path: Path
    ) -> None:
        remote = git_servers.remote()
        remote.commit({"a": "1"})
        impostor = git_servers.ssh.host_keys["ca"]  # an ed25519 key, but not the server's
        known = git_servers.ssh.known_hosts(tmp_path, f"{git_servers.ssh.name} {impostor}")
        auth = GitAuth(
            username=GIT_USER, ssh_key_file=git_servers.ssh.keys["ed25519"], known_hosts_file=known
        )
        with pytest.raises(
            TrustError, match=r"does not match .*changed .*ssh-keygen -R '\[127\.0\.0\.1\]:\d+' -f "
        ):
            await GitSourceFetcher(source(git_servers.ssh.url(remote), auth), tmp_path / "s").fetch()

    async def test_cert_authority_entries_are_refused_clearly_though_openssh_accepts_them(
        self, git_servers: GitServers, tmp_path: Path
    ) -> None:
        remote = git_servers.remote()
        remote.commit({"a": "1"})
        known = git_servers.ssh.known_hosts(
            tmp_path, f"@cert-authority {git_servers.ssh.name} {git_servers.ssh.host_keys['ca']}"
        )
        ssh = (
            f"ssh -i {git_servers.ssh.keys['ed25519']} -o UserKnownHostsFile={known} -o IdentitiesOnly=yes "
            "-o StrictHostKeyChecking=yes -o BatchMode=yes"
        )
        listed = await asyncio.to_thread(
            subprocess.run, ["git", "ls-remote", git_servers.ssh.url(remote)],
            env=os.environ | {"GIT_SSH_COMMAND": ssh}, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr  # the host certificate is valid for OpenSSH
        auth = GitAuth(
            username=GIT_USER, ssh_key_file=git_servers.ssh.keys["ed25519"], known_hosts_file=known
        )
        with pytest.raises(
            TrustError, match=r"only through @cert-authority .*cannot verify; add the host's own key"
        ):
            await GitSourceFetcher(source(git_servers.ssh.url(remote), auth), tmp_path / "s").fetch()

    async def test_every_ssh_failure_keeps_the_last_good_revision_and_a_fix_recovers(
        self, git_servers: GitServers, tmp_path: Path
    ) -> None:
        remote = git_servers.remote()
        remote.commit({"a": "1"})
        key = tmp_path / "deploy_key"
        shutil.copy(git_servers.ssh.keys["ed25519"], key)
        auth = self.auth(git_servers, tmp_path)
        auth = GitAuth(username=GIT_USER, ssh_key_file=key, known_hosts_file=auth.known_hosts_file)
        assert auth.known_hosts_file is not None
        fetcher = GitSourceFetcher(source(git_servers.ssh.url(remote), auth), tmp_path / "s")
        good = await fetcher.fetch()
        remote.commit({"a": "2"})
        trusted = auth.known_hosts_file.read_text()
        failures: list[type[SourceError]] = []
        for breakage, expected in [("key", AuthError), ("host", TrustError)]:
            if breakage == "key":
                shutil.copy(git_servers.ssh.keys["stranger"], key)
            else:
                shutil.copy(git_servers.ssh.keys["ed25519"], key)
                auth.known_hosts_file.write_text(
                    f"{git_servers.ssh.name} {git_servers.ssh.host_keys['ca']}\n"
                )
            with pytest.raises(expected) as caught:
                await fetcher.fetch()
            failures.append(type(caught.value))
            assert fetcher.current is good
            assert fetcher.last_error is caught.value
        assert failures == [AuthError, TrustError]
        auth.known_hosts_file.write_text(trusted)
        assert (await fetcher.fetch()).revision != good.revision

    async def test_an_ssh_server_that_is_not_there_is_a_fetch_error(
        self, git_servers: GitServers, tmp_path: Path
    ) -> None:
        port = free_port()
        known = git_servers.ssh.known_hosts(
            tmp_path, f"[127.0.0.1]:{port} {git_servers.ssh.host_keys['ed25519']}"
        )
        auth = GitAuth(
            username=GIT_USER, ssh_key_file=git_servers.ssh.keys["ed25519"], known_hosts_file=known
        )
        url = f"ssh://{GIT_USER}@127.0.0.1:{port}/x.git"
        with pytest.raises(FetchError, match=r"reachable") as caught:
            await GitSourceFetcher(source(url, auth), tmp_path / "s").fetch()
        assert not isinstance(caught.value, AuthError)


# --- HTTPS -------------------------------------------------------------------------------------------


class TestHttps:
    def auth(self, servers: GitServers, token_file: Path, **kw: object) -> GitAuth:
        values: dict[str, object] = {
            "token_file": token_file,
            "username": HTTP_USER,
            "ca_file": servers.https.ca.bundle,
        }
        return GitAuth(**(values | kw))  # type: ignore[arg-type]

    async def test_a_token_from_a_file_fetches_over_tls_trusting_the_ca_file(
        self, git_servers: GitServers, tmp_path: Path
    ) -> None:
        remote = git_servers.remote()
        sha = remote.commit({"a.yaml": "over https\n"})
        auth = self.auth(git_servers, secret_file(tmp_path, "token", HTTP_TOKEN + "\n"))
        snapshot = await GitSourceFetcher(source(git_servers.https.url(remote), auth), tmp_path / "s").fetch()
        assert snapshot.revision == sha
        assert (snapshot.root / "a.yaml").read_text() == "over https\n"

    async def test_a_wrong_token_is_a_401_message_naming_the_file_never_the_token(
        self, git_servers: GitServers, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        remote = git_servers.remote()
        remote.commit({"a": "1"})
        token_file = secret_file(tmp_path, "token", "wrong-" + HTTP_TOKEN)
        fetcher = GitSourceFetcher(
            source(git_servers.https.url(remote), self.auth(git_servers, token_file)), tmp_path / "s"
        )
        with (
            caplog.at_level(logging.DEBUG),
            pytest.raises(
                AuthError, match=rf"refused the token in token_file {token_file} .*\(HTTP 401\)"
            ) as caught,
        ):
            await fetcher.fetch()
        shown = [str(caught.value), repr(caught.value), repr(fetcher), repr(fetcher.config), caplog.text]
        assert not [text for text in shown if HTTP_TOKEN in text]

    async def test_token_rotation_needs_no_restart_and_the_failure_keeps_the_last_good_revision(
        self, git_servers: GitServers, tmp_path: Path
    ) -> None:
        remote = git_servers.remote()
        remote.commit({"a": "1"})
        token_file = secret_file(tmp_path, "token", HTTP_TOKEN)
        fetcher = GitSourceFetcher(
            source(git_servers.https.url(remote), self.auth(git_servers, token_file)), tmp_path / "s"
        )
        good = await fetcher.fetch()
        remote.commit({"a": "2"})
        token_file.write_text("revoked")
        with pytest.raises(AuthError):
            await fetcher.fetch()
        assert fetcher.current is good
        token_file.write_text(HTTP_TOKEN)
        assert (await fetcher.fetch()).revision != good.revision

    async def test_a_certificate_from_a_ca_nobody_trusts_is_refused_naming_ca_file(
        self, git_servers: GitServers, tmp_path: Path
    ) -> None:
        remote = git_servers.remote()
        remote.commit({"a": "1"})
        auth = self.auth(git_servers, secret_file(tmp_path, "token", HTTP_TOKEN))
        url = git_servers.https.url(remote, untrusted=True)
        with pytest.raises(
            TrustError,
            match=r"TLS certificate of 127\.0\.0\.1 is not trusted \(ca_file .* does not vouch .*set ca_file",
        ):
            await GitSourceFetcher(source(url, auth), tmp_path / "s").fetch()

    async def test_a_missing_ca_file_is_named(self, git_servers: GitServers, tmp_path: Path) -> None:
        remote = git_servers.remote()
        auth = self.auth(
            git_servers, secret_file(tmp_path, "token", HTTP_TOKEN), ca_file=tmp_path / "nope.pem"
        )
        with pytest.raises(TrustError, match=r"ca_file .*nope\.pem does not exist"):
            await GitSourceFetcher(source(git_servers.https.url(remote), auth), tmp_path / "s").fetch()

    async def test_a_redirect_on_the_same_host_is_followed(
        self, git_servers: GitServers, tmp_path: Path
    ) -> None:
        remote = git_servers.remote()
        sha = remote.commit({"a": "1"})
        auth = self.auth(git_servers, secret_file(tmp_path, "token", HTTP_TOKEN))
        url = git_servers.https.url(remote, "moved")
        assert (await GitSourceFetcher(source(url, auth), tmp_path / "s").fetch()).revision == sha

    async def test_a_redirect_to_another_host_gets_no_credentials(
        self, git_servers: GitServers, tmp_path: Path
    ) -> None:
        remote = git_servers.remote()
        remote.commit({"a": "1"})
        auth = self.auth(git_servers, secret_file(tmp_path, "token", HTTP_TOKEN))
        url = git_servers.https.url(remote, "elsewhere")
        with pytest.raises(
            TrustError,
            match=r"sent fleetd on to https://localhost:\d+/git/.*credentials only to the url's own host",
        ):
            await GitSourceFetcher(source(url, auth), tmp_path / "s").fetch()


# --- GitHub App ----------------------------------------------------------------------------------------


class TestGitHubApp:
    def auth(self, servers: GitServers, installation: int = INSTALLATION, key: Path | None = None) -> GitAuth:
        app = GitHubApp(
            app_id=APP_ID, installation_id=installation, private_key_file=key or servers.https.app.key_file,
            api_url=servers.https.api_url,
        )  # fmt: skip
        return GitAuth(github_app=app, ca_file=servers.https.ca.bundle)

    async def test_an_installation_token_fetches_and_is_reused_until_near_its_expiry(
        self, git_servers: GitServers, tmp_path: Path
    ) -> None:
        remote = git_servers.remote()
        first = remote.commit({"a": "1"})
        installation = git_servers.https.app.installations[INSTALLATION]
        before = installation.requests
        fetcher = GitSourceFetcher(
            source(git_servers.https.url(remote), self.auth(git_servers)), tmp_path / "s"
        )
        assert (await fetcher.fetch()).revision == first
        second = remote.commit({"a": "2"})
        assert (await fetcher.fetch()).revision == second
        assert installation.requests - before == 1

    async def test_a_token_close_to_its_expiry_is_replaced(
        self, git_servers: GitServers, tmp_path: Path
    ) -> None:
        remote = git_servers.remote()
        remote.commit({"a": "1"})
        installation = git_servers.https.app.installations[SHORT_LIVED_INSTALLATION]
        assert installation.lifetime - REFRESH_MARGIN <= 1.5
        fetcher = GitSourceFetcher(
            source(git_servers.https.url(remote), self.auth(git_servers, SHORT_LIVED_INSTALLATION)),
            tmp_path / "s",
        )
        await fetcher.fetch()
        before = installation.requests
        deadline = time.monotonic() + 10
        while installation.requests == before and time.monotonic() < deadline:
            await fetcher.fetch()
            await asyncio.sleep(0.1)  # re-fetch pacing, not a wait for a condition: the loop polls
        assert installation.requests == before + 1
        assert fetcher.last_error is None

    async def test_a_key_that_is_not_the_apps_is_refused_with_what_to_check(
        self, git_servers: GitServers, tmp_path: Path
    ) -> None:
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key = tmp_path / "old.pem"
        key.write_bytes(
            other.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        remote = git_servers.remote()
        remote.commit({"a": "1"})
        fetcher = GitSourceFetcher(
            source(git_servers.https.url(remote), self.auth(git_servers, key=key)), tmp_path / "s"
        )
        with pytest.raises(
            AuthError,
            match=rf"GitHub refused the JSON web token of App {APP_ID} \(401 .*check github_app_id and "
            rf"that private_key_file {key} is a current key",
        ):
            await fetcher.fetch()

    async def test_a_private_key_file_that_is_no_rsa_key_is_named(
        self, git_servers: GitServers, tmp_path: Path
    ) -> None:
        key = secret_file(tmp_path, "app.pem", "not a key\n")
        remote = git_servers.remote()
        fetcher = GitSourceFetcher(
            source(git_servers.https.url(remote), self.auth(git_servers, key=key)), tmp_path / "s"
        )
        with pytest.raises(AuthError, match=rf"private_key_file {key} is not an unencrypted PEM private key"):
            await fetcher.fetch()

    async def test_an_unknown_installation_is_named(self, git_servers: GitServers, tmp_path: Path) -> None:
        remote = git_servers.remote()
        fetcher = GitSourceFetcher(
            source(git_servers.https.url(remote), self.auth(git_servers, 999)), tmp_path / "s"
        )
        with pytest.raises(AuthError, match=r"has no installation 999 \(404"):
            await fetcher.fetch()

    async def test_an_unreachable_api_is_a_fetch_error_that_keeps_the_last_good_revision(
        self, git_servers: GitServers, tmp_path: Path
    ) -> None:
        remote = git_servers.remote()
        remote.commit({"a": "1"})
        good = await GitSourceFetcher(
            source(git_servers.https.url(remote), self.auth(git_servers)), tmp_path / "s"
        ).fetch()
        app = GitHubApp(
            app_id=APP_ID, installation_id=INSTALLATION, private_key_file=git_servers.https.app.key_file,
            api_url=f"https://127.0.0.1:{free_port()}/api/v3",
        )  # fmt: skip
        fetcher = GitSourceFetcher(
            source(git_servers.https.url(remote), GitAuth(github_app=app)), tmp_path / "s"
        )
        with pytest.raises(
            FetchError, match=r"cannot reach the GitHub API at https://127\.0\.0\.1:\d+/api/v3"
        ):
            await fetcher.fetch()
        assert good.root.is_dir()

    async def test_the_token_never_appears_in_logs_errors_the_state_dir_or_the_mirror_config(
        self, git_servers: GitServers, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        remote = git_servers.remote()
        remote.commit({"a": "1"})
        installation = git_servers.https.app.installations[INSTALLATION]
        fetcher = GitSourceFetcher(
            source(git_servers.https.url(remote), self.auth(git_servers)), tmp_path / "s"
        )
        with caplog.at_level(logging.DEBUG):
            await fetcher.fetch()
            tokens = list(installation.issued)
            shutil.rmtree(remote.path)
            with pytest.raises(SourceError) as caught:
                await fetcher.fetch()
        written = everything_written(tmp_path / "s")
        assert "[remote" not in (tmp_path / "s" / "git" / "mirror.git" / "config").read_text()
        shown = [
            written,
            caplog.text,
            str(caught.value),
            repr(caught.value),
            repr(fetcher),
            repr(fetcher.config),
        ]
        assert not [t for t in tokens for text in shown if t in text]


# --- the daemon's user -------------------------------------------------------------------------------

FETCH_TWICE = """
import asyncio, json, os, stat, sys
os.umask(0o077)  # what systemd's UMask=0077 sets before fleetd starts
from pathlib import Path
from fleetd.inventory.model import GitAuth, GitRef, GitSource, RefKind
from fleetd.source import GitSourceFetcher

async def main() -> None:
    state = Path(sys.argv[1])
    auth = GitAuth(token_file=Path(sys.argv[3]), username=sys.argv[4], ca_file=Path(sys.argv[5]))
    config = GitSource(url=sys.argv[2], ref=GitRef(kind=RefKind.BRANCH, value="main"), auth=auth, timeout=20)
    for _ in range(2):
        fetcher = GitSourceFetcher(config, state)  # a new daemon each time: the mirror is re-opened
        print((await fetcher.fetch()).revision, flush=True)
        sys.stdin.readline()  # the test commits again
    dirs = [p for p in state.rglob("*") if p.is_dir() and p.parent.name != "snapshots"]
    dirs = [p for p in dirs if "snapshots" not in p.relative_to(state).parts[:-1]]
    print(json.dumps({str(p.relative_to(state)): oct(stat.S_IMODE(p.stat().st_mode)) for p in dirs}))
    print(os.getuid())

asyncio.run(main())
"""


NOBODY = 65534


def unprivileged_home(uid: int) -> tuple[Path, Path, Path]:
    """A fresh home, state directory and token file owned by `uid` (the daemon's user)."""
    home = Path(tempfile.mkdtemp(prefix="fleetd-unprivileged-"))
    home.chmod(0o755)
    state = home / "state"
    state.mkdir()
    token = secret_file(home, "token", HTTP_TOKEN)
    for path in (home, state, token):
        os.chown(path, uid, uid)
    return home, state, token


async def test_a_fetch_as_an_unprivileged_user_on_a_fresh_state_dir_works_with_private_modes(
    git_servers: GitServers, tmp_path: Path
) -> None:
    """As the systemd unit runs fleetd: its own user, UMask=0077, a state directory it owns."""
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv is missing: apt-get install util-linux")
    home, state, token = unprivileged_home(NOBODY)
    try:
        remote = git_servers.remote()
        first = remote.commit({"a": "1"})
        argv = [
            "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all",
            sys.executable, "-c", FETCH_TWICE, str(state), git_servers.https.url(remote), str(token),
            HTTP_USER, str(git_servers.https.ca.bundle),
        ]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={"PATH": os.environ["PATH"], "HOME": str(home)},
        )  # fmt: skip
        assert proc.stdin is not None
        assert proc.stdout is not None
        async with asyncio.timeout(40):
            fetched = [(await proc.stdout.readline()).decode().strip()]
            second = await asyncio.to_thread(remote.commit, {"a": "2"})
            proc.stdin.write(b"\n")
            fetched.append((await proc.stdout.readline()).decode().strip())
            proc.stdin.write(b"\n")
            out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        modes_line, uid = out.decode().splitlines()
        assert int(uid) == NOBODY
        assert fetched == [first, second]
        modes = json.loads(modes_line)
        assert modes["git"] == modes["git/mirror.git"] == modes["snapshots"] == "0o700"
        assert set(modes.values()) == {"0o700"}, modes
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_the_ssh_fixture_user_has_git_shell(git_servers: GitServers) -> None:
    entry = subprocess.run(["getent", "passwd", GIT_USER], capture_output=True, text=True, check=True).stdout
    assert entry.strip().endswith(":/usr/bin/git-shell")
    assert isinstance(git_servers.remote("x"), Remote)
