"""SOPS secrets end to end: files encrypted by the real sops, a real git repository, three real spokes.

Two syncs read encrypted files: ``plain`` (a plain directory holding a YAML
and a JSON Secret, encrypted whole) and ``kust`` (a kustomization whose
``secretGenerator`` reads an encrypted dotenv and an encrypted binary file).
Each sync also holds a ConfigMap ``old``; a broken commit removes it and adds
a ConfigMap ``new``, so "nothing applied, nothing pruned" is visible in the
spokes.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyrage
import pytest
import yaml

from fleetd.daemon.root import Daemon
from testbed.bed import Spoke
from testbed.build import toolset
from tests.gitrepo import WorkRepo
from tests.integration.fleet import configmap, eventually, get, running, write_fleet

pytestmark = [pytest.mark.testbed, pytest.mark.timeout(120)]

SOPS = toolset().path("sops")
DB_PASSWORD = "db-pw-4f1c9e-plaintext"
API_KEY = "api-key-7b20d3-plaintext"
DOTENV_PASSWORD = "dotenv-pw-e81a55-plaintext"
TOKEN = b"\x00\x01binary-token-93bd17-plaintext\xff"
LEAKY = "leaky-namespace-5d0c2a-plaintext"
PLAINTEXTS = [DB_PASSWORD, API_KEY, DOTENV_PASSWORD, "binary-token-93bd17-plaintext", LEAKY]
ONLY_DATA = ("--encrypted-regex", "^(data|stringData)$")


class Keys:
    """Two age keys — one the fleet is configured with, one it is not — and ``sops --encrypt``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ours, self.theirs = pyrage.x25519.Identity.generate(), pyrage.x25519.Identity.generate()
        self.key_file = root / "fleet-age.txt"
        self.key_file.write_text(f"# public key: {self.ours.to_public()}\n{self.ours}\n")
        self.key_file.chmod(0o600)

    def encrypt(self, name: str, plain: str | bytes, *flags: str, theirs: bool = False) -> str:
        """`plain` encrypted by sops as a file called `name` (its extension picks the format)."""
        source = self.root / "plain" / name
        source.parent.mkdir(exist_ok=True)
        source.write_bytes(plain.encode() if isinstance(plain, str) else plain)
        recipient = str((self.theirs if theirs else self.ours).to_public())
        argv = [str(SOPS), "--encrypt", "--age", recipient, *flags, str(source)]
        env = {"PATH": os.environ["PATH"], "HOME": str(self.root)}
        done = subprocess.run(argv, capture_output=True, env=env, timeout=30, check=True)
        source.unlink()
        return done.stdout.decode()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    if not SOPS.is_file():
        pytest.fail(f"sops is not built at {SOPS}: run `python -m testbed build`")
    return Keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The daemon's private runtime directory (it runs in this process), where the private kustomize
    copies go, so they can be seen."""
    tmp = tmp_path / "runtime"
    tmp.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp))
    return tmp


def secret(name: str, **string_data: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": string_data}


def kustomization(*resources: str, namespace: str | None = None) -> str:
    doc: dict[str, object] = {
        "resources": list(resources),
        "generatorOptions": {"disableNameSuffixHash": True},
        "secretGenerator": [{"name": "creds", "envs": ["creds.env"], "files": ["token.bin"]}],
    }
    return yaml.safe_dump(doc | ({"namespace": namespace} if namespace else {}))


def good_repo(repo: WorkRepo, keys: Keys, ns: str) -> str:
    """Both syncs with their secrets and their ConfigMap "old"; returns the commit."""
    repo.write(
        {
            "plain/db.yaml": keys.encrypt(
                "db.yaml", yaml.safe_dump(secret("db", password=DB_PASSWORD)), *ONLY_DATA
            ),
            "plain/api.json": keys.encrypt("api.json", json.dumps(secret("api", key=API_KEY))),
            "plain/old.yaml": configmap("plain-old", ns, {"v": "1"}),
            "kust/kustomization.yaml": kustomization("old.yaml"),
            "kust/creds.env": keys.encrypt("creds.env", f"USER=admin\nPASSWORD={DOTENV_PASSWORD}\n"),
            "kust/token.bin": keys.encrypt("token.bin", TOKEN),
            "kust/old.yaml": configmap("kust-old", ns, {"v": "1"}),
        }
    )
    return repo.commit("good: encrypted secrets")


def secrets_fleet(
    tmp_path: Path, repo: WorkRepo, spokes: list[Spoke], ns: str, key_file: Path | None
) -> Path:
    """A fleet of `spokes` with the syncs plain and kust, named after `ns` (so a rewrite keeps its name)."""
    syncs = [{"name": name, "path": name, "namespace": ns} for name in ("plain", "kust")]
    clusters = {s.name: s.kubeconfig for s in spokes}
    config = write_fleet(tmp_path, repo=repo.path, clusters=clusters, syncs=syncs, name=f"secrets-{ns}")
    if key_file is not None:
        config.write_text(config.read_text() + f'\n[decryption]\nage_key_files = ["{key_file}"]\n')
    return config


async def secret_data(spoke: Spoke, ns: str, name: str) -> dict[str, bytes] | None:
    obj = await get(spoke, f"/api/v1/namespaces/{ns}/secrets/{name}")
    return None if obj is None else {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}


async def configmap_exists(spoke: Spoke, ns: str, name: str) -> bool:
    return await get(spoke, f"/api/v1/namespaces/{ns}/configmaps/{name}") is not None


async def until_status(daemon: Daemon, spokes: list[Spoke], sync: str, result: str, revision: str) -> None:
    async def check() -> bool:
        found = [daemon.state.status(s.name, sync) for s in spokes]
        return all(s is not None and (s.result, s.revision) == (result, revision) for s in found)

    await eventually(check, f"{sync} {result} at {revision[:12]} on every spoke")


async def assert_secrets_decrypted(spokes: list[Spoke], ns: str) -> None:
    for spoke in spokes:
        assert await secret_data(spoke, ns, "db") == {"password": DB_PASSWORD.encode()}
        assert await secret_data(spoke, ns, "api") == {"key": API_KEY.encode()}
        creds = {"USER": b"admin", "PASSWORD": DOTENV_PASSWORD.encode(), "token.bin": TOKEN}
        assert await secret_data(spoke, ns, "creds") == creds


class TestDecryptedSecretsReachEverySpoke:
    async def test_whole_secrets_and_generator_inputs_land_decrypted_and_the_copy_is_gone(
        self, spokes: list[Spoke], namespace: str, keys: Keys, tmp_path: Path, private_tmp: Path
    ) -> None:
        repo = WorkRepo(tmp_path / "repo")
        good = good_repo(repo, keys, namespace)
        config = secrets_fleet(tmp_path, repo, spokes, namespace, keys.key_file)
        async with running(config) as daemon:
            for sync in ("plain", "kust"):
                await until_status(daemon, spokes, sync, "ready", good)
            await assert_secrets_decrypted(spokes, namespace)
        assert leftovers(private_tmp) == []


# --- broken files ----------------------------------------------------------------------------


def flip_value(text: str, after: str) -> str:
    """`text` with the first ciphertext character of the ENC value following `after` changed."""
    at = text.index("data:", text.index(after)) + len("data:")
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]


Breakage = Callable[[Keys, str], str]
BROKEN: dict[str, tuple[str, str, Breakage, str]] = {
    # kind: (sync, file, how the file is broken, what the error must say)
    "tampered value": (
        "plain",
        "plain/db.yaml",
        lambda k, text: flip_value(text, "password:"),
        "plain/db.yaml: cannot decrypt: the encrypted value at stringData.password failed authentication",
    ),
    "tampered MAC": (
        "kust",
        "kust/creds.env",
        lambda k, text: flip_value(text, "sops_mac="),
        "kust/creds.env: cannot decrypt: sops.mac failed authentication",
    ),
    "edited without sops": (
        "plain",
        "plain/db.yaml",
        lambda k, text: text.replace("name: db", "name: db-renamed"),
        "plain/db.yaml: cannot decrypt: the MAC does not match the content",
    ),
    "wrong key": (
        "kust",
        "kust/token.bin",
        lambda k, text: k.encrypt("token.bin", b"new token for someone else", theirs=True),
        "kust/token.bin: cannot decrypt: none of the configured keys opens this file",
    ),
    "truncated": (
        "plain",
        "plain/api.json",
        lambda k, text: text[: len(text) // 2],
        "plain/api.json: holds SOPS-encrypted values (ENC[AES256_GCM,…]) but no complete sops metadata",
    ),
}


def break_sync(repo: WorkRepo, sync: str, ns: str) -> None:
    """Remove the sync's ConfigMap "old" and add "new", as a commit that also breaks a secret would."""
    repo.remove(f"{sync}/old.yaml")
    repo.write({f"{sync}/new.yaml": configmap(f"{sync}-new", ns, {"v": "2"})})
    if sync == "kust":
        repo.write({"kust/kustomization.yaml": kustomization("new.yaml")})


async def assert_nothing_applied_or_pruned(spokes: list[Spoke], ns: str, sync: str) -> None:
    for spoke in spokes:
        assert not await configmap_exists(spoke, ns, f"{sync}-new"), f"{spoke.name}: a failed sync applied"
        assert await configmap_exists(spoke, ns, f"{sync}-old"), f"{spoke.name}: a failed sync pruned"
    await assert_secrets_decrypted(spokes, ns)


class TestBrokenSecretsApplyAndPruneNothing:
    @pytest.mark.parametrize("kind", list(BROKEN))
    async def test_a_broken_encrypted_file_fails_its_sync_with_its_own_message(
        self, spokes: list[Spoke], namespace: str, keys: Keys, tmp_path: Path, kind: str
    ) -> None:
        sync, file, breakage, message = BROKEN[kind]
        repo = WorkRepo(tmp_path / "repo")
        good = good_repo(repo, keys, namespace)
        async with running(secrets_fleet(tmp_path, repo, spokes, namespace, keys.key_file)) as daemon:
            await until_status(daemon, spokes, sync, "ready", good)
            break_sync(repo, sync, namespace)
            repo.write({file: breakage(keys, (repo.path / file).read_text())})
            broken = repo.commit(f"broken: {kind}")
            daemon.trigger_fetch()
            await until_status(daemon, spokes, sync, "failed", broken)
            other = "kust" if sync == "plain" else "plain"
            await until_status(daemon, spokes, other, "ready", broken)
            for spoke in spokes:
                error = daemon.state.statuses[(spoke.name, sync)].error or ""
                assert error.startswith(message), error
            await assert_nothing_applied_or_pruned(spokes, namespace, sync)

    async def test_without_decryption_keys_every_sync_with_secrets_fails_and_keeps_what_it_applied(
        self, spokes: list[Spoke], namespace: str, keys: Keys, tmp_path: Path
    ) -> None:
        repo = WorkRepo(tmp_path / "repo")
        good = good_repo(repo, keys, namespace)
        async with running(secrets_fleet(tmp_path, repo, spokes, namespace, keys.key_file)) as daemon:
            await until_status(daemon, spokes, "kust", "ready", good)
            await until_status(daemon, spokes, "plain", "ready", good)
        for sync in ("plain", "kust"):
            break_sync(repo, sync, namespace)
        unkeyed = repo.commit("new ConfigMaps, while the hub lost its keys")
        async with running(secrets_fleet(tmp_path, repo, spokes, namespace, None)) as daemon:
            for sync in ("plain", "kust"):
                await until_status(daemon, spokes, sync, "failed", unkeyed)
            for sync, files in (("plain", "db.yaml|api.json"), ("kust", "creds.env|token.bin")):
                error = daemon.state.statuses[(spokes[0].name, sync)].error
                assert re.fullmatch(
                    rf"{sync}/({files}): the file is SOPS-encrypted but no decryption keys are "
                    r"configured \(\[decryption\] in the fleet file\)",
                    error or "",
                ), error
            for sync in ("plain", "kust"):
                await assert_nothing_applied_or_pruned(spokes, namespace, sync)


# --- hygiene ---------------------------------------------------------------------------------


def leftovers(directory: Path) -> list[Path]:
    """Private kustomize copies left in `directory` (other temporary files are not ours to judge)."""
    return list(directory.glob("fleetd-kustomize-*"))


def forms(plaintext: str) -> list[bytes]:
    """`plaintext` as it could appear in a file or a message: as is, or base64 as in a Secret's data."""
    return [plaintext.encode(), base64.b64encode(plaintext.encode())]


def leaks(data: bytes) -> list[str]:
    return [text for text in PLAINTEXTS for form in forms(text) if form in data]


def state_files(state_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(state_dir)): p.read_bytes() for p in state_dir.rglob("*") if p.is_file()}


def leaky_commit(repo: WorkRepo, keys: Keys, ns: str) -> str:
    """A kustomization that fails on a decrypted value kustomize prints, and a tampered secret."""
    leaky = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "leaky", "namespace": [LEAKY]}}
    repo.write(
        {
            "kust/leaky.yaml": keys.encrypt("leaky.yaml", yaml.safe_dump(leaky)),
            "kust/kustomization.yaml": kustomization("old.yaml", "leaky.yaml", namespace=ns),
            "plain/db.yaml": flip_value((repo.path / "plain/db.yaml").read_text(), "password:"),
        }
    )
    return repo.commit("kustomize chokes on a decrypted value; a tampered secret")


class TestPlaintextStaysOut:
    async def test_no_plaintext_reaches_the_logs_the_state_directory_or_status(
        self,
        spokes: list[Spoke],
        namespace: str,
        keys: Keys,
        tmp_path: Path,
        private_tmp: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="fleetd")
        repo = WorkRepo(tmp_path / "repo")
        good = good_repo(repo, keys, namespace)
        config = secrets_fleet(tmp_path, repo, spokes, namespace, keys.key_file)
        async with running(config) as daemon:
            await until_status(daemon, spokes, "kust", "ready", good)
            await assert_secrets_decrypted(spokes, namespace)
            bad = leaky_commit(repo, keys, namespace)
            daemon.trigger_fetch()
            await until_status(daemon, spokes, "kust", "failed", bad)
            await until_status(daemon, spokes, "plain", "failed", bad)
            assert "node contents" in (daemon.state.statuses[(spokes[0].name, "kust")].error or "")
        formatter = logging.Formatter("%(name)s %(levelname)s %(message)s %(args)s")
        logged = "\n".join(formatter.format(record) for record in caplog.records)
        assert "[redacted]" in logged, "the kustomize failure should have been logged, redacted"
        assert leaks(logged.encode()) == []
        state = state_files(tmp_path / "state")
        assert any(name.startswith("snapshots/") for name in state), "the walk should see the snapshots"
        assert {name: leaks(data) for name, data in state.items() if leaks(data)} == {}
        status = fleetd_status(config)
        assert "[redacted]" in status
        assert leaks(status.encode()) == []
        assert leftovers(private_tmp) == []


def fleetd_status(config: Path) -> str:
    argv = [sys.executable, "-m", "fleetd", "status", "--config", str(config), "--json"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False).stdout
