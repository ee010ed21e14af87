"""Secrets in rendering: decrypted values are applied verbatim, never quoted, and plaintext Secrets are found.

SOPS files are made by the real sops binary and decrypted by fleetd's real
decryption hook; kustomize is the real binary. Where a decryption hook must
misbehave (return text that does not parse), a stand-in is used and named.
"""

from __future__ import annotations

import base64
import textwrap
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from fleetd.errors import InventoryError
from fleetd.inventory import load_fleet
from fleetd.render import RenderCache, RenderError, RenderResult, plaintext_warning, render
from testbed.build import toolset
from tests.unit.test_render import SOPS, Sops

pytestmark = pytest.mark.timeout(30)

REVISION = "0123456789abcdef0123456789abcdef01234567"
ONLY_DATA = ("--encrypted-regex", "^(data|stringData)$")
PASSWORD = "pa${DB_PASS}ss-$${escaped}-${never_defined}"
VARIABLES = {"DB_PASS": "SUBSTITUTED", "team": "web", "HOST": "h.example"}


@pytest.fixture(scope="module")
def sops(tmp_path_factory: pytest.TempPathFactory) -> Sops:
    assert SOPS.is_file(), f"sops is not built at {SOPS}: run `python -m testbed build`"
    return Sops(tmp_path_factory.mktemp("sops"))


@pytest.fixture(scope="module")
def kustomize_bin() -> Path:
    path = toolset().path("kustomize")
    assert path.is_file(), "build the test bed first: python -m testbed build"
    return path


def write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))


def secret(name: str, **string_data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "annotations": {"owner": "${team}"}},
        "stringData": string_data,
    }


def config_map(name: str, value: str) -> str:
    return yaml.safe_dump(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"value": value}}
    )


async def rendered(root: Path, path: str = "app", **options: Any) -> RenderResult:
    return await render(root, REVISION, PurePosixPath(path), VARIABLES, "demo", **options)


def by_name(result: RenderResult) -> dict[str, dict[str, Any]]:
    return {r.obj["metadata"]["name"]: r.obj for r in result.objects}


class TestDecryptedValuesAreVerbatim:
    async def test_a_decrypted_password_with_variables_is_applied_exactly_and_the_plain_fields_substituted(
        self, tmp_path: Path, sops: Sops
    ) -> None:
        write(
            tmp_path,
            {"app/db.yaml": sops.encrypt("db.yaml", yaml.safe_dump(secret("db", pw=PASSWORD)), *ONLY_DATA)},
        )
        (db,) = (await rendered(tmp_path, decrypt=sops.hook())).objects
        assert db.obj["stringData"] == {"pw": PASSWORD}
        assert db.obj["metadata"]["annotations"] == {"owner": "web"}
        assert db.from_sops

    async def test_decrypted_kustomize_inputs_are_applied_exactly_and_plain_objects_substituted(
        self, tmp_path: Path, sops: Sops, kustomize_bin: Path
    ) -> None:
        write(
            tmp_path,
            {
                "app/kustomization.yaml": """\
                    resources: [db.yaml, plain.yaml]
                    secretGenerator:
                    - name: creds
                      envs: [creds.env]
                    configMapGenerator:
                    - name: settings
                      files: [settings.yaml]
                    generatorOptions: {disableNameSuffixHash: true}
                    """,
                "app/db.yaml": sops.encrypt("db.yaml", yaml.safe_dump(secret("db", pw=PASSWORD)), *ONLY_DATA),
                "app/creds.env": sops.encrypt("creds.env", f"PASSWORD={PASSWORD}\n"),
                "app/settings.yaml": sops.encrypt("settings.yaml", "url: https://${HOST}/\n"),
                "app/plain.yaml": config_map("plain", "${HOST}"),
            },
        )
        objects = by_name(await rendered(tmp_path, kustomize=kustomize_bin, decrypt=sops.hook()))
        assert objects["db"]["stringData"] == {"pw": PASSWORD}
        assert base64.b64decode(objects["creds"]["data"]["PASSWORD"]).decode() == PASSWORD
        assert objects["settings"]["data"] == {"settings.yaml": "url: https://${HOST}/\n"}
        assert objects["plain"]["data"] == {"value": "h.example"}

    async def test_an_undefined_variable_error_names_only_plain_variables(
        self, tmp_path: Path, sops: Sops
    ) -> None:
        write(
            tmp_path,
            {"app/db.yaml": sops.encrypt("db.yaml", yaml.safe_dump(secret("db", pw=PASSWORD)), *ONLY_DATA)},
        )
        write(
            tmp_path,
            {"app/web.yaml": config_map("web", "${nope}")},
        )
        with pytest.raises(RenderError) as caught:
            await rendered(tmp_path, decrypt=sops.hook())
        assert "undefined variable ${nope}" in str(caught.value)
        assert "never_defined" not in str(caught.value)


class TestMessagesNeverQuoteDecryptedContent:
    CANARY = "canary-7f3a9c"

    @pytest.mark.parametrize(
        "plaintext",
        [
            f"apiVersion: v1\nkind: Secret\nmetadata: {{name: x}}\nstringData: {{pw: {CANARY}: broken}}\n",
            f"apiVersion: v1\nkind: Secret\nmetadata: {{name: x}}\n{CANARY}: 1\n{CANARY}: 2\n",
            f"apiVersion: v1\nkind: Secret\nmetadata: {{name: x}}\nstringData: {{pw: !{CANARY} x}}\n",
        ],
        ids=["invalid YAML", "a duplicate key", "an unknown tag"],
    )
    async def test_a_decrypted_file_that_does_not_parse_is_reported_without_its_content(
        self, tmp_path: Path, sops: Sops, plaintext: str
    ) -> None:
        write(
            tmp_path,
            {"app/db.yaml": sops.encrypt("db.yaml", yaml.safe_dump(secret("db", pw="x")), *ONLY_DATA)},
        )

        def stand_in_hook(data: bytes, fmt: str) -> bytes:
            """Stands in for a decryption that yields text which does not parse (sops itself never does)."""
            return plaintext.encode()

        with pytest.raises(RenderError) as caught:
            await rendered(tmp_path, decrypt=stand_in_hook)
        message = str(caught.value)
        assert message.startswith("app/db.yaml (document 1): the decrypted content is not valid YAML at line")
        assert self.CANARY not in message


class TestPlaintextSecrets:
    async def test_a_secret_in_git_unencrypted_is_listed_and_encrypted_ones_are_not(
        self, tmp_path: Path, sops: Sops
    ) -> None:
        empty = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "token"},
            "type": "kubernetes.io/tls",
        }
        write(
            tmp_path,
            {
                "app/db.yaml": sops.encrypt("db.yaml", yaml.safe_dump(secret("db", pw="x")), *ONLY_DATA),
                "app/plain.yaml": yaml.safe_dump(secret("plain", pw="hunter2")),
                "app/empty.yaml": yaml.safe_dump(empty),
                "app/config.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n",
            },
        )
        result = await rendered(tmp_path, decrypt=sops.hook())
        (plain,) = result.plaintext_secrets
        assert (plain.file, plain.ref) == ("app/plain.yaml", "v1/Secret demo/plain")
        assert plaintext_warning(plain) == (
            "app/plain.yaml:1 (document 1): v1/Secret demo/plain is a Secret stored in git unencrypted; "
            "encrypt it with sops (sops --encrypt --encrypted-regex '^(data|stringData)$' --in-place "
            "app/plain.yaml)"
        )

    async def test_kustomize_secrets_from_literals_are_plaintext_and_from_encrypted_inputs_are_not(
        self, tmp_path: Path, sops: Sops, kustomize_bin: Path
    ) -> None:
        write(
            tmp_path,
            {
                "app/kustomization.yaml": """\
                    secretGenerator:
                    - name: literal
                      literals: [PASSWORD=in-clear]
                    - name: sealed
                      envs: [creds.env]
                    """,
                "app/creds.env": sops.encrypt("creds.env", "PASSWORD=hunter2\n"),
            },
        )
        result = await rendered(tmp_path, kustomize=kustomize_bin, decrypt=sops.hook())
        assert [r.obj["metadata"]["name"].rsplit("-", 1)[0] for r in result.plaintext_secrets] == ["literal"]

    async def test_with_require_encrypted_secrets_a_plaintext_secret_fails_the_render(
        self, tmp_path: Path
    ) -> None:
        write(tmp_path, {"app/plain.yaml": yaml.safe_dump(secret("plain", pw="hunter2"))})
        with pytest.raises(RenderError) as caught:
            await rendered(tmp_path, require_encrypted_secrets=True)
        assert str(caught.value).startswith(
            "app/plain.yaml:1 (document 1, Secret demo/plain): a Secret stored in git unencrypted, refused "
            "because [decryption] require_encrypted_secrets is true; encrypt it with sops"
        )
        assert "hunter2" not in str(caught.value)
        cache = RenderCache()
        args = (tmp_path, REVISION, PurePosixPath("app"), VARIABLES, "demo")
        assert len((await cache.get(*args)).plaintext_secrets) == 1
        with pytest.raises(RenderError, match="require_encrypted_secrets is true"):
            await cache.get(*args, require_encrypted_secrets=True)

    def test_the_inventory_sets_require_encrypted_secrets_under_decryption(self, tmp_path: Path) -> None:
        source = '[source]\nurl = "https://example.com/fleet.git"\n'
        (tmp_path / "fleetd.toml").write_text(source + "[decryption]\nrequire_encrypted_secrets = true\n")
        assert load_fleet(tmp_path / "fleetd.toml").decryption.require_encrypted_secrets
        (tmp_path / "fleetd.toml").write_text(source + '[decryption]\nrequire_encrypted_secrets = "yes"\n')
        with pytest.raises(InventoryError, match=r"decryption\.require_encrypted_secrets"):
            load_fleet(tmp_path / "fleetd.toml")
