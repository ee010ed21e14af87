"""``fleetd check`` against real spokes: healthy, unreachable, under-privileged, invalid, secrets."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from testbed.bed import Spoke, TestBed
from tests.gitrepo import WorkRepo
from tests.integration.test_secrets import ONLY_DATA, SOPS, Keys

pytestmark = pytest.mark.testbed


def _inventory(tmp_path: Path, clusters: dict[str, Path], *, syncs: str = "", fleet_extra: str = "") -> Path:
    """A fleet file and one cluster file per kubeconfig; the source is a repository with one commit."""
    repo = tmp_path / "repo"
    if not repo.exists():
        WorkRepo(repo).write({"README.md": "nothing to deploy\n"}).commit("empty")
    fleet = tmp_path / "fleetd.toml"
    fleet.write_text(
        f'[fleet]\nstate_dir = "{tmp_path / "state"}"\n\n[source]\nurl = "{repo}"\n{fleet_extra}'
    )
    for name, kubeconfig in clusters.items():
        (tmp_path / f"{name}.toml").write_text(f'[cluster]\nkubeconfig = "{kubeconfig}"\n{syncs}')
    return fleet


def _check(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "fleetd", "check", "--config", str(config), *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_check_reports_every_healthy_spoke_with_its_version(spokes: list[Spoke], tmp_path: Path) -> None:
    config = _inventory(tmp_path, {s.name: s.kubeconfig for s in spokes})
    result = _check(config)
    assert result.returncode == 0, result.stdout + result.stderr
    for spoke in spokes:
        line = next(ln for ln in result.stdout.splitlines() if ln.startswith(spoke.name))
        assert spoke.server in line
        assert "v1.36" in line
        assert line.rstrip().endswith("ok")


def test_check_json_describes_each_cluster(spokes: list[Spoke], tmp_path: Path) -> None:
    config = _inventory(tmp_path, {s.name: s.kubeconfig for s in spokes})
    result = _check(config, "--json")
    doc = json.loads(result.stdout)
    assert doc["ok"] is True
    assert doc["inventory"]["ok"] is True
    assert {c["name"] for c in doc["clusters"]} == {s.name for s in spokes}
    assert all(
        c["reachable"] and c["missing"] == [] and c["version"].startswith("v1.") for c in doc["clusters"]
    )


def test_a_stopped_spoke_is_reported_unreachable_and_the_others_are_still_checked(
    spokes: list[Spoke], spare_spoke: Spoke, testbed: TestBed, tmp_path: Path
) -> None:
    clusters = {s.name: s.kubeconfig for s in spokes} | {spare_spoke.name: spare_spoke.kubeconfig}
    config = _inventory(tmp_path, clusters)
    testbed.stop_spoke(spare_spoke.name)
    result = _check(config, "--json")
    assert result.returncode == 1
    by_name = {c["name"]: c for c in json.loads(result.stdout)["clusters"]}
    assert by_name[spare_spoke.name]["reachable"] is False
    assert "cannot connect" in by_name[spare_spoke.name]["error"]
    assert all(by_name[s.name]["ok"] for s in spokes)
    table = _check(config)
    assert f"{spare_spoke.name}: cannot connect to {spare_spoke.server}" in table.stdout


def test_a_non_admin_kubeconfig_lists_the_missing_permissions(spokes: list[Spoke], tmp_path: Path) -> None:
    viewer = spokes[0]
    config = _inventory(tmp_path, {"viewer": viewer.viewer_kubeconfig, spokes[1].name: spokes[1].kubeconfig})
    result = _check(config)
    assert result.returncode == 1
    missing = [ln for ln in result.stdout.splitlines() if ln.startswith("viewer: missing permission")]
    assert any("patch all resources (all API groups) cluster-wide" in ln for ln in missing)
    assert any("delete all resources" in ln for ln in missing)
    assert any("configmaps" in ln and "fleetd-system" in ln for ln in missing)
    assert f"{spokes[1].name}" in result.stdout


def test_two_cluster_files_on_one_api_server_are_a_problem_naming_both(
    spokes: list[Spoke], tmp_path: Path
) -> None:
    twin = tmp_path / "twin.kubeconfig"
    twin.write_text(spokes[0].kubeconfig.read_text())
    config = _inventory(
        tmp_path, {"aaa": spokes[0].kubeconfig, "zzz": twin, spokes[1].name: spokes[1].kubeconfig}
    )
    result = _check(config)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [ln for ln in result.stdout.splitlines() if ln.startswith(("aaa:", "zzz:"))]
    assert len(errors) == 1, result.stdout
    assert "the same Kubernetes cluster as" in errors[0]
    assert "remove one" in errors[0]


def test_a_missing_kubeconfig_is_named(spokes: list[Spoke], tmp_path: Path) -> None:
    config = _inventory(
        tmp_path, {"ghost": tmp_path / "nope.kubeconfig", spokes[0].name: spokes[0].kubeconfig}
    )
    result = _check(config)
    assert result.returncode == 1
    assert f"ghost: kubeconfig {tmp_path / 'nope.kubeconfig'} does not exist" in result.stdout


def test_an_invalid_inventory_exits_2_and_names_file_and_key(tmp_path: Path) -> None:
    config = _inventory(tmp_path, {"broken": tmp_path / "x.kubeconfig"})
    (tmp_path / "broken.toml").write_text('[cluster]\nkubeconfig = "x"\nwave = "first"\n')
    result = _check(config)
    assert result.returncode == 2
    assert "broken.toml" in result.stderr
    assert "wave" in result.stderr


# --- secrets ----------------------------------------------------------------------------------

SYNCS = '\n[[syncs]]\nname = "apps"\npath = "apps"\n\n[[syncs]]\nname = "gen"\npath = "gen"\n'
PASSWORD = "check-never-prints-this-3e9a"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    if not SOPS.is_file():
        pytest.fail(f"sops is not built at {SOPS}: run `python -m testbed build`")
    return Keys(tmp_path_factory.mktemp("keys"))


def _secrets_repo(tmp_path: Path, keys: Keys, *, stranger: bool = False) -> None:
    """apps/db.yaml (a whole Secret) and gen/creds.env (a generator input), encrypted; with
    `stranger`, also apps/other.yaml for a key the fleet does not have, and a truncated file."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db"},
        "stringData": {"pw": PASSWORD},
    }
    files = {
        "apps/db.yaml": keys.encrypt("db.yaml", yaml.safe_dump(secret), *ONLY_DATA),
        "apps/plain.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain}\n",
        "gen/kustomization.yaml": "secretGenerator:\n- name: creds\n  envs: [creds.env]\n",
        "gen/creds.env": keys.encrypt("creds.env", f"PASSWORD={PASSWORD}\n"),
    }
    if stranger:
        files["apps/other.yaml"] = keys.encrypt("other.yaml", yaml.safe_dump(secret), theirs=True)
        files["gen/creds.env"] = files["gen/creds.env"].split("sops_")[0]
    WorkRepo(tmp_path / "repo").write(files).commit("secrets")


def _keyed(keys: Keys) -> str:
    return f'\n[decryption]\nage_key_files = ["{keys.key_file}"]\n'


def test_check_reports_the_encrypted_files_the_keys_decrypt(
    spokes: list[Spoke], tmp_path: Path, keys: Keys
) -> None:
    _secrets_repo(tmp_path, keys)
    config = _inventory(
        tmp_path, {spokes[0].name: spokes[0].kubeconfig}, syncs=SYNCS, fleet_extra=_keyed(keys)
    )
    table = _check(config)
    assert table.returncode == 0, table.stdout + table.stderr
    assert re.search(
        r"^secrets: 2 file\(s\) decrypt with the configured keys at revision [0-9a-f]{12}$",
        table.stdout,
        re.M,
    )
    doc = json.loads(_check(config, "--json").stdout)
    assert doc["ok"] is True
    assert doc["source"]["ok"] is True
    by_file = {f["file"]: f for f in doc["secrets"]}
    assert set(by_file) == {"apps/db.yaml", "gen/creds.env"}
    assert by_file["gen/creds.env"]["format"] == "dotenv"
    assert by_file["apps/db.yaml"]["syncs"] == [f"{spokes[0].name}/apps"]
    assert by_file["apps/db.yaml"]["recipients"] == [str(keys.ours.to_public())]
    assert PASSWORD not in table.stdout + table.stderr + json.dumps(doc)


def test_check_names_each_file_no_key_opens_and_exits_1(
    spokes: list[Spoke], tmp_path: Path, keys: Keys
) -> None:
    _secrets_repo(tmp_path, keys, stranger=True)
    config = _inventory(
        tmp_path, {spokes[0].name: spokes[0].kubeconfig}, syncs=SYNCS, fleet_extra=_keyed(keys)
    )
    result = _check(config)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert re.match(r"secrets: 1 of 3 file\(s\) decrypt with the configured keys", lines[-3])
    stranger = f"apps/other.yaml: no configured key matches (recipients {keys.theirs.to_public()}); add"
    assert any(ln.startswith(stranger) for ln in lines)
    assert any(ln.startswith("gen/creds.env: holds SOPS-encrypted values") for ln in lines)
    doc = json.loads(_check(config, "--json").stdout)
    assert doc["ok"] is False
    assert {f["file"]: f["ok"] for f in doc["secrets"]} == {
        "apps/db.yaml": True,
        "apps/other.yaml": False,
        "gen/creds.env": False,
    }
    assert PASSWORD not in result.stdout + result.stderr


def test_without_decryption_keys_every_encrypted_file_is_a_problem(
    spokes: list[Spoke], tmp_path: Path, keys: Keys
) -> None:
    _secrets_repo(tmp_path, keys)
    result = _check(_inventory(tmp_path, {spokes[0].name: spokes[0].kubeconfig}, syncs=SYNCS))
    assert result.returncode == 1
    assert "secrets: 0 of 2 file(s) decrypt with the configured keys" in result.stdout
    assert (
        "apps/db.yaml: the file is SOPS-encrypted but no decryption keys are configured "
        f"([decryption] in the fleet file); it is encrypted for {keys.ours.to_public()}"
    ) in result.stdout


def test_a_source_that_cannot_be_read_is_a_problem(spokes: list[Spoke], tmp_path: Path) -> None:
    config = _inventory(tmp_path, {spokes[0].name: spokes[0].kubeconfig})
    config.write_text(config.read_text().replace(str(tmp_path / "repo"), str(tmp_path / "no-such-repo")))
    result = _check(config, "--json")
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert doc["clusters"][0]["ok"] is True
    assert doc["source"]["ok"] is False
    assert doc["source"]["errors"][0].startswith("cannot look for encrypted files: git source")
