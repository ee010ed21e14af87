"""Rendering a sync path: real files in a temporary repository, the real kustomize."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import textwrap
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pyrage
import pytest
import yaml

from fleetd.errors import FleetdError
from fleetd.inventory.model import Decryption
from fleetd.render import Decrypt, Loaded, RenderCache, RenderError, RenderResult, render
from fleetd.render import pipeline as render_module
from fleetd.secrets.decryptor import decryptor
from testbed.build import toolset

pytestmark = pytest.mark.timeout(10)

REVISION = "0123456789abcdef0123456789abcdef01234567"
SOPS = toolset().path("sops")


@pytest.fixture(scope="session")
def kustomize_bin() -> Path:
    path = toolset().path("kustomize")
    assert path.is_file(), "build the test bed first: python -m testbed build"
    return path


def write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))


def config_map(name: str, namespace: str | None = None, **data: str) -> str:
    meta: dict[str, str] = {"name": name} | ({"namespace": namespace} if namespace else {})
    return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})


async def rendered(
    root: Path,
    path: str = "app",
    variables: Mapping[str, str] | None = None,
    namespace: str | None = None,
    **options: Any,
) -> RenderResult:
    return await render(root, REVISION, PurePosixPath(path), variables or {}, namespace, **options)


def names(result: RenderResult) -> list[str]:
    return [r.obj["metadata"]["name"] for r in result.objects]


class TestPlainDirectories:
    async def test_a_directory_renders_recursively_in_sorted_order_with_every_document(
        self, tmp_path: Path
    ) -> None:
        write(
            tmp_path,
            {
                "app/b.yaml": config_map("b1") + "---\n" + config_map("b2"),
                "app/a.yml": config_map("a"),
                "app/sub/c.json": json.dumps(json.loads(json.dumps(yaml.safe_load(config_map("c"))))),
                "app/sub/deeper/d.yaml": config_map("d"),
            },
        )
        result = await rendered(tmp_path)
        assert names(result) == ["a", "b1", "b2", "c", "d"]
        origins = [(r.file, r.document) for r in result.objects]
        assert origins[1:4] == [("app/b.yaml", 1), ("app/b.yaml", 2), ("app/sub/c.json", 1)]

    async def test_files_that_are_not_manifests_are_ignored(self, tmp_path: Path) -> None:
        write(
            tmp_path,
            {
                "app/README.md": "# not yaml: at all\n",
                "app/run.sh": "echo hi\n",
                "app/.sops.yaml": "creation_rules: [{age: age1xyz}]\n",
                "app/.github/workflows/ci.yaml": "on: push\njobs: {}\n",
                "app/overlay/kustomization.yaml": "resources: [../x.yaml]\n",
                "app/overlay/Kustomization": "resources: []\n",
                "app/component.yaml": "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n",
                "app/empty.yaml": "---\n---\n# only a comment\n",
                "app/web.yaml": "null\n---\n" + config_map("web") + "---\n",
            },
        )
        result = await rendered(tmp_path)
        assert names(result) == ["web"]
        assert result.objects[0].document == 2

    async def test_a_list_is_expanded_into_its_items(self, tmp_path: Path) -> None:
        items = [yaml.safe_load(config_map("one")), yaml.safe_load(config_map("two"))]
        write(
            tmp_path, {"app/list.yaml": yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items})}
        )
        result = await rendered(tmp_path)
        assert names(result) == ["one", "two"]
        assert [r.item for r in result.objects] == [1, 2]

    @pytest.mark.parametrize(
        ("text", "problem", "line"),
        [
            ("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", "missing metadata.name", 9),
            ("kind: ConfigMap\nmetadata: {name: x}\n", "missing apiVersion", 7),
            ("just a string\n", "is a string, not a Kubernetes object", 7),
            ("- a\n- b\n", "is a list, not a Kubernetes object", 7),
        ],
    )
    async def test_a_document_that_is_not_an_object_is_an_error_naming_file_document_and_line(
        self, tmp_path: Path, text: str, problem: str, line: int
    ) -> None:
        write(tmp_path, {"app/web.yaml": config_map("ok") + "---\n" + text})
        with pytest.raises(RenderError, match=problem) as caught:
            await rendered(tmp_path)
        assert (caught.value.file, caught.value.document, caught.value.line) == ("app/web.yaml", 2, line)
        assert str(caught.value).startswith(f"app/web.yaml:{line} (document 2")

    async def test_a_bad_list_item_is_located_by_document_and_item(self, tmp_path: Path) -> None:
        items = [yaml.safe_load(config_map("one")), {"kind": "ConfigMap"}]
        write(
            tmp_path, {"app/list.yaml": yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items})}
        )
        with pytest.raises(RenderError, match=r"^app/list.yaml:\d+ \(document 1, item 2, ConfigMap\)"):
            await rendered(tmp_path)

    async def test_invalid_yaml_is_an_error_with_file_document_and_line(self, tmp_path: Path) -> None:
        write(tmp_path, {"app/web.yaml": config_map("ok") + "---\nkind: ConfigMap: x\n"})
        expected = r"^app/web.yaml:7 \(document 2\): invalid YAML: mapping values .* \(column 16\)"
        with pytest.raises(RenderError, match=expected):
            await rendered(tmp_path)

    async def test_duplicate_keys_are_an_error_instead_of_a_silent_last_wins(self, tmp_path: Path) -> None:
        write(tmp_path, {"app/web.yaml": config_map("ok") + "metadata: {name: again}\n"})
        with pytest.raises(RenderError, match="duplicate key 'metadata'"):
            await rendered(tmp_path)

    async def test_dates_stay_strings_and_yaml_1_1_scalars_read_as_kubernetes_reads_them(
        self, tmp_path: Path
    ) -> None:
        write(tmp_path, {"app/web.yaml": config_map("web") + "spec: {since: 2024-05-01, on: yes}\n"})
        (web,) = (await rendered(tmp_path)).objects
        assert web.obj["spec"] == {"since": "2024-05-01", "true": True}

    async def test_an_object_defined_twice_is_an_error_naming_both_files(self, tmp_path: Path) -> None:
        write(
            tmp_path,
            {
                "app/a.yaml": config_map("web", "demo"),
                "app/z/b.yaml": config_map("other", "demo") + "---\n" + config_map("web", "demo"),
            },
        )
        with pytest.raises(RenderError) as caught:
            await rendered(tmp_path)
        message = str(caught.value)
        assert message.startswith("app/z/b.yaml:8 (document 2, ConfigMap demo/web): defined twice")
        assert "also in app/a.yaml:1 (document 1)" in message

    async def test_the_same_name_in_other_kinds_or_namespaces_is_no_duplicate(self, tmp_path: Path) -> None:
        secret = config_map("web", "demo").replace("ConfigMap", "Secret")
        write(tmp_path, {"app/a.yaml": config_map("web", "demo") + "---\n" + config_map("web", "prod")})
        write(tmp_path, {"app/b.yaml": secret})
        assert len((await rendered(tmp_path)).objects) == 3

    async def test_an_object_left_without_namespace_duplicates_one_given_the_sync_namespace(
        self, tmp_path: Path
    ) -> None:
        write(tmp_path, {"app/a.yaml": config_map("web"), "app/b.yaml": config_map("web", "demo")})
        with pytest.raises(RenderError, match="defined twice"):
            await rendered(tmp_path, namespace="demo")

    @pytest.mark.parametrize("path", ["missing", "../elsewhere", "/etc"])
    async def test_a_sync_path_that_is_not_a_directory_of_the_repository_is_refused(
        self, tmp_path: Path, path: str
    ) -> None:
        (tmp_path / "app").mkdir()
        with pytest.raises(RenderError, match=f"sync path {path}"):
            await rendered(tmp_path, path)

    async def test_a_manifest_linked_from_outside_the_repository_is_refused(self, tmp_path: Path) -> None:
        repo = tmp_path / "repo"
        write(tmp_path, {"secret.yaml": config_map("stolen")})
        (repo / "app").mkdir(parents=True)
        (repo / "app/link.yaml").symlink_to(tmp_path / "secret.yaml")
        with pytest.raises(RenderError, match=r"app/link.yaml: symbolic link to outside the repository"):
            await rendered(repo)

    async def test_an_empty_directory_renders_to_no_objects(self, tmp_path: Path) -> None:
        (tmp_path / "app").mkdir()
        assert (await rendered(tmp_path)).objects == ()


class TestKustomize:
    async def test_an_overlay_renders_with_its_patch(self, tmp_path: Path, kustomize_bin: Path) -> None:
        write(
            tmp_path,
            {
                "base/kustomization.yaml": "resources: [config.yaml]\n",
                "base/config.yaml": config_map("settings", level="info"),
                "overlays/prod/kustomization.yaml": """\
                    resources: [../../base]
                    patches:
                    - patch: |
                        apiVersion: v1
                        kind: ConfigMap
                        metadata: {name: settings}
                        data: {level: "${level}"}
                    """,
            },
        )
        result = await rendered(tmp_path, "overlays/prod", {"level": "warn"}, "prod", kustomize=kustomize_bin)
        (settings,) = result.objects
        assert settings.obj["data"] == {"level": "warn"}
        assert settings.obj["metadata"]["namespace"] == "prod"
        assert (settings.file, settings.document) == ("overlays/prod/kustomization.yaml", 1)

    async def test_a_failing_build_is_a_render_error_naming_the_sync_path(
        self, tmp_path: Path, kustomize_bin: Path
    ) -> None:
        write(tmp_path, {"app/kustomization.yaml": "resources: [gone.yaml]\n"})
        with pytest.raises(RenderError, match=r"^app: kustomize build failed: Error: .*gone.yaml"):
            await rendered(tmp_path, kustomize=kustomize_bin)

    async def test_a_remote_base_is_a_render_error(self, tmp_path: Path, kustomize_bin: Path) -> None:
        write(tmp_path, {"app/kustomization.yaml": "resources:\n- https://example.org/app.yaml\n"})
        with pytest.raises(RenderError, match=r"^app/kustomization.yaml: resources entry .* remote"):
            await rendered(tmp_path, kustomize=kustomize_bin)


class TestVariables:
    async def render_one(self, tmp_path: Path, data: Mapping[str, Any], **variables: str) -> dict[str, Any]:
        doc = yaml.safe_load(config_map("web", "demo")) | {"data": dict(data)}
        write(tmp_path, {"app/web.yaml": yaml.safe_dump(doc)})
        (web,) = (await rendered(tmp_path, variables=variables)).objects
        return web.obj

    async def test_defined_variables_are_substituted_into_string_values(self, tmp_path: Path) -> None:
        obj = await self.render_one(
            tmp_path, {"url": "https://${host}:${port}/"}, host="h.example", port="80"
        )
        assert obj["data"] == {"url": "https://h.example:80/"}

    async def test_a_default_applies_when_the_variable_is_undefined_or_empty(self, tmp_path: Path) -> None:
        data = {"a": "${a:=one}", "b": "${b:-two}", "c": "${c:=three}", "d": "${d:=}"}
        obj = await self.render_one(tmp_path, data, b="", c="set")
        assert obj["data"] == {"a": "one", "b": "two", "c": "set", "d": ""}

    async def test_a_doubled_dollar_escapes_to_a_literal_reference(self, tmp_path: Path) -> None:
        obj = await self.render_one(tmp_path, {"script": "echo $${HOME} ${who} $$ $x"}, who="me")
        assert obj["data"] == {"script": "echo ${HOME} me $$ $x"}

    async def test_a_whole_scalar_value_stays_a_string_and_cannot_break_the_structure(
        self, tmp_path: Path
    ) -> None:
        obj = await self.render_one(tmp_path, {"n": "${n}", "y": "${y}"}, n="3", y="a: b\n- c")
        assert obj["data"] == {"n": "3", "y": "a: b\n- c"}

    async def test_keys_and_non_string_values_are_untouched(self, tmp_path: Path) -> None:
        write(
            tmp_path, {"app/web.yaml": config_map("web") + "spec: {'${k}': 1, n: 2, b: true, l: ['${k}']}\n"}
        )
        (web,) = (await rendered(tmp_path, variables={"k": "v"})).objects
        assert web.obj["spec"] == {"${k}": 1, "n": 2, "b": True, "l": ["v"]}

    async def test_undefined_variables_are_an_error_naming_file_object_and_every_variable(
        self, tmp_path: Path
    ) -> None:
        doc = yaml.safe_load(config_map("web", "demo")) | {
            "data": {"a": "${domain}", "b": "${zone} ${domain}"}
        }
        write(tmp_path, {"app/web.yaml": config_map("ok") + "---\n" + yaml.safe_dump(doc)})
        with pytest.raises(RenderError) as caught:
            await rendered(tmp_path)
        assert str(caught.value).startswith(
            "app/web.yaml:7 (document 2, ConfigMap demo/web): undefined variables ${domain}, ${zone} — "
            "define them in the cluster's [variables] or give a default: ${domain:=<default>}"
        )
        assert caught.value.object_ref == "v1/ConfigMap demo/web"

    async def test_an_object_can_opt_out_of_substitution(self, tmp_path: Path) -> None:
        doc = yaml.safe_load(config_map("script")) | {"data": {"run": "echo ${HOME}"}}
        doc["metadata"]["annotations"] = {"fleetd.dev/substitute": "disabled"}
        write(tmp_path, {"app/script.yaml": yaml.safe_dump(doc)})
        (script,) = (await rendered(tmp_path)).objects
        assert script.obj["data"] == {"run": "echo ${HOME}"}


CRD = """\
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata: {name: widgets.example.com}
    spec:
      group: example.com
      scope: SCOPE
      names: {kind: Widget, plural: widgets}
    """


class TestTargetNamespace:
    def objects(self) -> dict[str, str]:
        return {
            "app/config.yaml": config_map("plain") + "---\n" + config_map("pinned", "elsewhere"),
            "app/cluster.yaml": """\
                apiVersion: v1
                kind: Namespace
                metadata: {name: team}
                ---
                apiVersion: rbac.authorization.k8s.io/v1
                kind: ClusterRole
                metadata: {name: reader}
                """,
            "app/widget.yaml": "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
        }

    async def namespaces(self, tmp_path: Path, namespace: str | None, **options: Any) -> dict[str, Any]:
        result = await rendered(tmp_path, namespace=namespace, **options)
        return {r.obj["metadata"]["name"]: r.obj["metadata"].get("namespace") for r in result.objects}

    async def test_namespaced_objects_without_one_get_the_sync_namespace(self, tmp_path: Path) -> None:
        write(tmp_path, self.objects())
        assert await self.namespaces(tmp_path, "demo") == {
            "plain": "demo",
            "pinned": "elsewhere",
            "team": None,
            "reader": None,
            "w": "demo",  # unknown kind, no hook: namespaced
        }

    async def test_without_a_sync_namespace_objects_are_left_as_written(self, tmp_path: Path) -> None:
        write(tmp_path, self.objects())
        assert (await self.namespaces(tmp_path, None))["plain"] is None

    async def test_the_hook_decides_for_kinds_fleetd_does_not_know(self, tmp_path: Path) -> None:
        write(tmp_path, self.objects())
        asked: list[tuple[str, str]] = []

        def cluster_scoped(api_version: str, kind: str) -> bool:
            asked.append((api_version, kind))
            return kind == "Widget"

        assert (await self.namespaces(tmp_path, "demo", cluster_scoped=cluster_scoped))["w"] is None
        assert asked == [("v1", "ConfigMap"), ("example.com/v1", "Widget")]

    @pytest.mark.parametrize(("scope", "expected"), [("Cluster", None), ("Namespaced", "demo")])
    async def test_a_crd_of_the_same_render_declares_its_kinds_scope(
        self, tmp_path: Path, scope: str, expected: str | None
    ) -> None:
        write(tmp_path, self.objects() | {"app/crd.yaml": CRD.replace("SCOPE", scope)})
        everything_cluster_scoped = lambda api_version, kind: True  # noqa: E731 - overruled by the CRD
        found = await self.namespaces(tmp_path, "demo", cluster_scoped=everything_cluster_scoped)
        assert found["w"] == expected


def fake_sops(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` as SOPS would mark it: "ENC[...]" values and a metadata block."""
    data = {key: f"ENC[{value}]" for key, value in doc["data"].items()}
    return doc | {"data": data, "sops": {"mac": "ENC[mac]", "lastmodified": "2024-01-01T00:00:00Z"}}


def decrypt(data: bytes, fmt: str) -> bytes:
    """A trivial stand-in for SOPS: strips the ENC[...] wrapping and the metadata."""
    docs = [json.loads(data)] if fmt == "json" else list(yaml.safe_load_all(data))
    for doc in docs:
        doc.pop("sops")
        doc["data"] = {key: value[4:-1] for key, value in doc["data"].items()}
    return json.dumps(docs[0]).encode() if fmt == "json" else yaml.safe_dump_all(docs).encode()


SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "db"},
    "data": {"password": "aHVudGVyMg=="},
}


class TestSops:
    async def test_an_encrypted_file_without_keys_is_an_error(self, tmp_path: Path) -> None:
        write(tmp_path, {"app/db.yaml": yaml.safe_dump(fake_sops(SECRET))})
        with pytest.raises(RenderError) as caught:
            await rendered(tmp_path)
        assert str(caught.value) == (
            "app/db.yaml: the file is SOPS-encrypted but no decryption keys are configured "
            "([decryption] in the fleet file)"
        )

    async def test_an_encrypted_file_is_decrypted_before_use(self, tmp_path: Path) -> None:
        write(tmp_path, {"app/db.yaml": yaml.safe_dump(fake_sops(SECRET))})
        (db,) = (await rendered(tmp_path, decrypt=decrypt)).objects
        assert db.obj == SECRET

    async def test_an_encrypted_resource_of_a_kustomization_is_decrypted_before_the_build(
        self, tmp_path: Path, kustomize_bin: Path
    ) -> None:
        write(
            tmp_path,
            {
                "app/kustomization.yaml": "resources: [db.yaml]\n",
                "app/db.yaml": yaml.safe_dump(fake_sops(SECRET)),
            },
        )
        (db,) = (await rendered(tmp_path, kustomize=kustomize_bin, decrypt=decrypt)).objects
        assert db.obj == SECRET

    async def test_a_decryption_failure_is_a_render_error_naming_the_file(self, tmp_path: Path) -> None:
        write(tmp_path, {"app/db.yaml": yaml.safe_dump(fake_sops(SECRET))})

        def failing(data: bytes, fmt: str) -> bytes:
            raise FleetdError("no age identity matches the file's recipients")

        with pytest.raises(RenderError, match=r"^app/db.yaml: cannot decrypt: no age identity"):
            await rendered(tmp_path, decrypt=failing)


class Sops:
    """The real sops binary and two age keys of the test's own ("ours" and "theirs")."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.identities = {name: pyrage.x25519.Identity.generate() for name in ("ours", "theirs")}
        self.key_file = root / "age.txt"
        self.key_file.write_text(f"{self.identities['ours']}\n")
        self.key_file.chmod(0o600)

    def hook(self) -> Decrypt:
        made = decryptor(Decryption(age_key_files=(self.key_file,)))
        assert made is not None
        return made

    def encrypt(self, name: str, plain: str | bytes, *flags: str, key: str = "ours") -> str:
        """`plain` as ``sops --encrypt`` writes it for a file called `name` (which picks the format)."""
        source = self.root / "plain" / name
        source.parent.mkdir(exist_ok=True)
        source.write_bytes(plain.encode() if isinstance(plain, str) else plain)
        recipient = str(self.identities[key].to_public())
        argv = [str(SOPS), "--encrypt", "--age", recipient, *flags, str(source)]
        env = {"PATH": os.environ["PATH"], "HOME": str(self.root)}
        done = subprocess.run(argv, capture_output=True, env=env, timeout=30, check=True)
        return done.stdout.decode()


@pytest.fixture(scope="module")
def sops(tmp_path_factory: pytest.TempPathFactory) -> Sops:
    if not SOPS.is_file():
        pytest.fail(f"sops is not built at {SOPS}: run `python -m testbed build`")
    return Sops(tmp_path_factory.mktemp("sops"))


DB_SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "db"},
    "type": "Opaque",
    "stringData": {"password": "hunter2-from-sops"},
}
ONLY_DATA = ("--encrypted-regex", "^(data|stringData)$")


class TestRealSopsFiles:
    async def test_whole_secrets_encrypted_by_sops_render_decrypted_from_yaml_and_json(
        self, tmp_path: Path, sops: Sops
    ) -> None:
        other = DB_SECRET | {"metadata": {"name": "api"}}
        write(tmp_path, {"app/db.yaml": sops.encrypt("db.yaml", yaml.safe_dump(DB_SECRET), *ONLY_DATA)})
        write(tmp_path, {"app/api.json": sops.encrypt("api.json", json.dumps(other))})
        api, db = (await rendered(tmp_path, decrypt=sops.hook())).objects
        assert (db.obj, api.obj) == (DB_SECRET, other)

    async def test_an_encrypted_secret_is_decrypted_before_kustomize_renames_and_relabels_it(
        self, tmp_path: Path, sops: Sops, kustomize_bin: Path
    ) -> None:
        write(
            tmp_path,
            {
                "base/kustomization.yaml": "resources: [db.yaml]\n",
                "base/db.yaml": sops.encrypt("db.yaml", yaml.safe_dump(DB_SECRET), *ONLY_DATA),
                "app/kustomization.yaml": """\
                    namespace: prod
                    namePrefix: p-
                    labels: [{pairs: {team: db}}]
                    resources: [../base]
                    """,
            },
        )
        (db,) = (await rendered(tmp_path, kustomize=kustomize_bin, decrypt=sops.hook())).objects
        assert db.obj["metadata"] == {"name": "p-db", "namespace": "prod", "labels": {"team": "db"}}
        assert db.obj["stringData"] == {"password": "hunter2-from-sops"}

    async def test_generator_inputs_in_dotenv_binary_and_yaml_render_decrypted(
        self, tmp_path: Path, sops: Sops, kustomize_bin: Path
    ) -> None:
        token = bytes(range(256))
        write(
            tmp_path,
            {
                "app/kustomization.yaml": """\
                    secretGenerator:
                    - name: creds
                      envs: [creds.env]
                      files: [token.bin]
                    configMapGenerator:
                    - name: settings
                      files: [settings.yaml]
                    """,
                "app/creds.env": sops.encrypt("creds.env", "USER=admin\nPASSWORD=hunter2-dotenv\n"),
                "app/settings.yaml": sops.encrypt("settings.yaml", "level: debug\nretries: 3\n"),
            },
        )
        (tmp_path / "app/token.bin").write_text(sops.encrypt("token.bin", token))
        result = await rendered(tmp_path, kustomize=kustomize_bin, decrypt=sops.hook())
        by_kind = {r.obj["kind"]: r.obj for r in result.objects}
        secret = {key: base64.b64decode(value) for key, value in by_kind["Secret"]["data"].items()}
        assert secret == {"USER": b"admin", "PASSWORD": b"hunter2-dotenv", "token.bin": token}
        assert yaml.safe_load(by_kind["ConfigMap"]["data"]["settings.yaml"]) == {
            "level": "debug",
            "retries": 3,
        }

    async def test_a_file_for_another_key_fails_naming_the_file_and_its_recipient(
        self, tmp_path: Path, sops: Sops
    ) -> None:
        write(tmp_path, {"app/db.yaml": sops.encrypt("db.yaml", yaml.safe_dump(DB_SECRET), key="theirs")})
        with pytest.raises(RenderError) as caught:
            await rendered(tmp_path, decrypt=sops.hook())
        message = str(caught.value)
        assert message.startswith("app/db.yaml: cannot decrypt: none of the configured keys opens this file")
        assert str(sops.identities["theirs"].to_public()) in message
        assert "<memory>" not in message

    async def test_a_truncated_file_fails_instead_of_applying_its_ciphertext(
        self, tmp_path: Path, sops: Sops
    ) -> None:
        encrypted = sops.encrypt("db.yaml", yaml.safe_dump(DB_SECRET), *ONLY_DATA)
        write(tmp_path, {"app/db.yaml": encrypted[: encrypted.index("sops:")]})
        with pytest.raises(RenderError, match=r"^app/db.yaml: holds SOPS-encrypted values .* truncated"):
            await rendered(tmp_path, decrypt=sops.hook())


class TestDigest:
    async def test_the_digest_changes_exactly_when_the_objects_change(self, tmp_path: Path) -> None:
        write(tmp_path, {"app/web.yaml": config_map("web", value="${v}")})
        first = await rendered(tmp_path, variables={"v": "1"})
        assert (await rendered(tmp_path, variables={"v": "1"})).digest == first.digest
        assert (await rendered(tmp_path, variables={"v": "2"})).digest != first.digest


class TestCache:
    @pytest.fixture
    def loads(self, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        """Names each sync path the real `load` is called for."""
        calls: list[str] = []
        real_load = render_module.load

        async def counting_load(root: Path, revision: str, path: PurePosixPath, **options: Any) -> Loaded:
            calls.append(f"{path}@{revision}")
            return await real_load(root, revision, path, **options)

        monkeypatch.setattr(render_module, "load", counting_load)
        return calls

    async def get(
        self, cache: RenderCache, root: Path, revision: str = REVISION, **variables: str
    ) -> RenderResult:
        return await cache.get(root, revision, PurePosixPath("app"), variables, "demo")

    async def test_the_same_key_renders_once_and_returns_the_same_result(
        self, tmp_path: Path, loads: list[str]
    ) -> None:
        write(tmp_path, {"app/web.yaml": config_map("web", value="${v}")})
        cache = RenderCache()
        first = await self.get(cache, tmp_path, v="1")
        assert await self.get(cache, tmp_path, v="1") is first
        assert loads == [f"app@{REVISION}"]

    async def test_concurrent_callers_of_one_key_share_one_render(
        self, tmp_path: Path, kustomize_bin: Path, loads: list[str]
    ) -> None:
        write(
            tmp_path, {"app/kustomization.yaml": "resources: [web.yaml]\n", "app/web.yaml": config_map("web")}
        )
        cache = RenderCache()
        results = await asyncio.gather(
            *(
                cache.get(tmp_path, REVISION, PurePosixPath("app"), {}, "demo", kustomize=kustomize_bin)
                for _ in range(8)
            )
        )
        assert all(result is results[0] for result in results)
        assert len(loads) == 1

    async def test_other_variables_are_another_entry_sharing_the_load(
        self, tmp_path: Path, loads: list[str]
    ) -> None:
        write(tmp_path, {"app/web.yaml": config_map("web", value="${v}")})
        cache = RenderCache()
        one, two = await self.get(cache, tmp_path, v="1"), await self.get(cache, tmp_path, v="2")
        assert (one.objects[0].obj["data"], two.objects[0].obj["data"]) == ({"value": "1"}, {"value": "2"})
        assert (len(cache), len(loads)) == (2, 1)

    async def test_results_for_two_namespaces_share_unchanged_parts_but_never_their_metadata(
        self, tmp_path: Path
    ) -> None:
        write(tmp_path, {"app/web.yaml": config_map("web", static="same", dynamic="${v}")})
        cache = RenderCache()
        args = (tmp_path, REVISION, PurePosixPath("app"), {"v": "1"})
        (one,) = (await cache.get(*args, "one")).objects
        (two,) = (await cache.get(*args, "two")).objects
        assert (one.obj["metadata"]["namespace"], two.obj["metadata"]["namespace"]) == ("one", "two")
        assert one.obj["data"] == two.obj["data"] == {"static": "same", "dynamic": "1"}
        (three,) = (await cache.get(tmp_path, REVISION, PurePosixPath("app"), {"v": "3"}, None)).objects
        assert "namespace" not in three.obj["metadata"]
        assert three.obj["data"]["dynamic"] == "3"

    async def test_an_error_is_remembered_for_its_key_without_poisoning_others(
        self, tmp_path: Path, loads: list[str]
    ) -> None:
        write(tmp_path, {"app/web.yaml": config_map("web", value="${v}")})
        cache = RenderCache()
        with pytest.raises(RenderError, match="undefined variable") as first:
            await self.get(cache, tmp_path)
        with pytest.raises(RenderError) as second:
            await self.get(cache, tmp_path)
        assert second.value is first.value
        assert (await self.get(cache, tmp_path, v="1")).objects[0].obj["data"] == {"value": "1"}

    async def test_a_temporary_error_is_retried_on_the_next_call(
        self, tmp_path: Path, kustomize_bin: Path
    ) -> None:
        write(
            tmp_path, {"app/kustomization.yaml": "resources: [web.yaml]\n", "app/web.yaml": config_map("web")}
        )
        cache = RenderCache()
        args: tuple[Path, str, PurePosixPath, dict[str, str], None] = (
            tmp_path,
            REVISION,
            PurePosixPath("app"),
            {},
            None,
        )
        with pytest.raises(RenderError, match="cannot run") as caught:
            await cache.get(*args, kustomize=tmp_path / "not-installed")
        assert caught.value.temporary
        assert len((await cache.get(*args, kustomize=kustomize_bin)).objects) == 1

    async def test_a_cancelled_caller_does_not_cancel_the_shared_render(
        self, tmp_path: Path, kustomize_bin: Path
    ) -> None:
        write(
            tmp_path, {"app/kustomization.yaml": "resources: [web.yaml]\n", "app/web.yaml": config_map("web")}
        )
        cache = RenderCache()
        args: tuple[Path, str, PurePosixPath, dict[str, str], None] = (
            tmp_path,
            REVISION,
            PurePosixPath("app"),
            {},
            None,
        )
        impatient = asyncio.create_task(cache.get(*args, kustomize=kustomize_bin))
        patient = asyncio.create_task(cache.get(*args, kustomize=kustomize_bin))
        await asyncio.sleep(0)  # both are waiting on the shared render now
        impatient.cancel()
        assert len((await patient).objects) == 1
        assert impatient.cancelled()

    async def test_older_revisions_are_evicted_on_request(self, tmp_path: Path, loads: list[str]) -> None:
        write(tmp_path, {"app/web.yaml": config_map("web")})
        cache = RenderCache()
        old = await self.get(cache, tmp_path, "old")
        await self.get(cache, tmp_path, "new")
        assert cache.evict_except("new") == 1
        assert len(cache) == 1
        assert await self.get(cache, tmp_path, "old") is not old
        assert loads == ["app@old", "app@new", "app@old"]

    async def test_the_least_recently_used_entry_goes_when_the_cache_is_full(self, tmp_path: Path) -> None:
        write(tmp_path, {"app/web.yaml": config_map("web")})
        cache = RenderCache(size=2)
        first = {revision: await self.get(cache, tmp_path, revision) for revision in ("r1", "r2")}
        await self.get(cache, tmp_path, "r1")
        await self.get(cache, tmp_path, "r3")
        assert len(cache) == 2
        assert await self.get(cache, tmp_path, "r1") is first["r1"]  # used after r2: kept
        assert await self.get(cache, tmp_path, "r2") is not first["r2"]  # least recently used: gone
