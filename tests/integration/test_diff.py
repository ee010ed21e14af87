"""``fleetd diff`` against real spokes: converged, changed, secrets masked, errors, and never a write."""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
from pathlib import Path

import pytest
import yaml

from fleetd.cli.diff import run
from fleetd.daemon.root import Daemon
from fleetd.reconcile.diff import diff_cluster
from fleetd.reconcile.ledger import SYSTEM_NAMESPACE
from testbed.bed import Spoke, TestBed
from tests.gitrepo import WorkRepo
from tests.integration.fleet import (
    configmap,
    deployment,
    eventually,
    get,
    namespace_doc,
    running,
    unique,
    write_fleet,
)
from tests.integration.test_secrets import ONLY_DATA, SOPS, Keys
from tests.integration.test_sync_engine import cm_path, deploy_path, kubectl, until_status

pytestmark = [pytest.mark.testbed, pytest.mark.timeout(120)]

OLD_PW, NEW_PW = "diff-old-pw-5a7e21-plaintext", "diff-new-pw-c03b94-plaintext"


@pytest.fixture
def repo(tmp_path: Path) -> WorkRepo:
    return WorkRepo(tmp_path / "repo")


async def diff(
    capsys: pytest.CaptureFixture[str],
    config: Path,
    cluster: str,
    sync: str | None = None,
    *,
    as_json: bool = False,
) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of one in-process `fleetd diff`."""
    capsys.readouterr()
    code = await run(config, cluster, sync, as_json)
    out, err = capsys.readouterr()
    return code, out, err


async def versions(spoke: Spoke, paths: list[str]) -> dict[str, str | None]:
    """resourceVersion per path (None: absent)."""
    return {p: ((await get(spoke, p)) or {}).get("metadata", {}).get("resourceVersion") for p in paths}


def apps_repo(repo: WorkRepo, ns: str) -> str:
    repo.write(
        {
            "apps/ns.yaml": namespace_doc(ns),
            "apps/settings.yaml": configmap("settings", ns, {"colour": "blue", "cluster": "${cluster_name}"}),
            "apps/web.yaml": deployment("web", ns),
            "apps/old.yaml": configmap("old", ns, {"v": "1"}),
            "apps/keep.yaml": configmap("keep", ns, {"v": "1"}, annotations={"fleetd.dev/prune": "disabled"}),
        }
    )
    return repo.commit("apps")


async def converged(config: Path, spoke: Spoke, rev: str) -> None:
    async with running(config) as daemon:
        await until_status(daemon, spoke.name, "apps", "ready", rev)


def one_spoke_fleet(tmp_path: Path, repo: WorkRepo, spoke: Spoke) -> Path:
    return write_fleet(
        tmp_path,
        repo=repo.path,
        clusters={spoke.name: spoke.kubeconfig},
        syncs=[{"name": "apps", "path": "apps"}],
    )


# --- nothing to do --------------------------------------------------------------------------------


async def test_a_converged_cluster_diffs_clean_while_the_daemon_runs_and_nothing_is_written(
    spokes: list[Spoke], repo: WorkRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ns, spoke = unique("calm"), spokes[0]
    rev = apps_repo(repo, ns)
    config = one_spoke_fleet(tmp_path, repo, spoke)
    async with running(config) as daemon:
        await until_status(daemon, spoke.name, "apps", "ready", rev)
        paths = [cm_path(ns, "settings"), deploy_path(ns, "web"), f"/api/v1/namespaces/{ns}"]
        paths.append(cm_path(SYSTEM_NAMESPACE, f"{daemon.fleet.name}.apps"))
        before = await versions(spoke, paths)
        code, out, err = await diff(capsys, config, spoke.name)
        assert (code, err) == (0, ""), out + err
        assert out.splitlines()[-2:] == ["sync apps: no changes", "0 to create, 0 to change, 0 to prune"]
        assert f"cluster {spoke.name} at {rev[:12]} (branch main)" in out
        assert await versions(spoke, paths) == before


async def test_before_the_first_reconcile_everything_is_created_and_no_state_is_left_behind(
    spokes: list[Spoke],
    repo: WorkRepo,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ns, spoke = unique("first"), spokes[0]
    apps_repo(repo, ns)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    code, out, err = await diff(capsys, one_spoke_fleet(tmp_path, repo, spoke), spoke.name)
    assert (code, err) == (1, ""), out + err
    lines = out.splitlines()
    assert f"+ Namespace {ns} (created)" in lines
    assert f"+ Deployment {ns}/web (created)" in lines
    assert "    note: validated once its Namespace or CRD exists" in lines
    assert lines[-1] == "5 to create, 0 to change, 0 to prune"
    assert await get(spoke, f"/api/v1/namespaces/{ns}") is None
    assert not list(scratch.glob("fleetd-diff-*")), "the throw-away source directory is removed"
    assert not (tmp_path / "state").exists(), "the daemon's state directory is never touched"


# --- changes --------------------------------------------------------------------------------------


async def test_a_changed_value_a_new_object_and_a_removed_manifest_are_shown_and_nothing_is_written(
    spokes: list[Spoke], repo: WorkRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ns, spoke = unique("plan"), spokes[0]
    config = one_spoke_fleet(tmp_path, repo, spoke)
    await converged(config, spoke, apps_repo(repo, ns))
    await asyncio.to_thread(kubectl, spoke, "-n", ns, "label", "configmap/settings", "by-hand=yes")
    repo.write(
        {"apps/settings.yaml": configmap("settings", ns, {"colour": "green", "cluster": "${cluster_name}"})}
    )
    repo.write({"apps/fresh.yaml": configmap("fresh", ns, {"v": "1"})})
    repo.remove("apps/old.yaml", "apps/keep.yaml")
    repo.commit("recolour, add fresh, drop old and keep")
    paths = [cm_path(ns, n) for n in ("settings", "old", "keep", "fresh")]
    before = await versions(spoke, paths)

    code, out, err = await diff(capsys, config, spoke.name, "apps")

    assert (code, err) == (1, ""), out + err
    lines = out.splitlines()
    assert f"+ ConfigMap {ns}/fresh (created)" in lines
    assert f"~ ConfigMap {ns}/settings (changed)" in lines
    assert "    note: fields written by kubectl-label are taken over" in lines
    assert "    -  colour: blue" in lines
    assert "    +  colour: green" in lines
    assert "    -    by-hand: 'yes'" in lines, "kubectl's label is removed once its fields are taken over"
    assert f"- ConfigMap {ns}/old (would prune)" in lines
    assert not any("keep" in ln for ln in lines), "a protected object is never pruned"
    assert not any("web" in ln or "Namespace" in ln for ln in lines), "unchanged objects are not listed"
    assert lines[-1] == "1 to create, 1 to change, 1 to prune"
    assert await versions(spoke, paths) == before
    assert before[cm_path(ns, "fresh")] is None

    code, out, _ = await diff(capsys, config, spoke.name, as_json=True)
    doc = json.loads(out)
    assert code == 1
    assert doc["summary"] == {"created": 1, "changed": 1, "pruned": 1}
    settings = next(o for o in doc["syncs"][0]["objects"] if o["name"] == "settings")
    assert "+  colour: green" in settings["diff"]


async def test_after_the_daemon_applies_a_diff_the_next_diff_is_empty(
    spokes: list[Spoke], repo: WorkRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ns, spoke = unique("again"), spokes[1]
    config = one_spoke_fleet(tmp_path, repo, spoke)
    await converged(config, spoke, apps_repo(repo, ns))
    await asyncio.to_thread(kubectl, spoke, "-n", ns, "label", "configmap/settings", "by-hand=yes")
    repo.write({"apps/settings.yaml": configmap("settings", ns, {"colour": "green"})})
    rev = repo.commit("recolour")
    assert (await diff(capsys, config, spoke.name))[0] == 1
    await converged(config, spoke, rev)
    code, out, err = await diff(capsys, config, spoke.name)
    assert (code, out.splitlines()[-1]) == (0, "0 to create, 0 to change, 0 to prune"), out + err


async def test_a_sync_removed_from_the_cluster_shows_its_objects_as_would_prune(
    spokes: list[Spoke], repo: WorkRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ns, spoke = unique("moved"), spokes[2]
    config = one_spoke_fleet(tmp_path, repo, spoke)
    await converged(config, spoke, apps_repo(repo, ns))
    (config.parent / f"{spoke.name}.toml").write_text(f'[cluster]\nkubeconfig = "{spoke.kubeconfig}"\n')
    code, out, err = await diff(capsys, config, spoke.name)
    assert (code, err) == (1, ""), out + err
    lines = out.splitlines()
    assert "sync apps: (removed from this cluster)" in lines
    assert f"- Deployment {ns}/web (would prune)" in lines
    assert f"- Namespace {ns} (would prune)" in lines
    assert lines[-1] == "0 to create, 0 to change, 4 to prune", "everything but the protected ConfigMap"


# --- secrets --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    if not SOPS.is_file():
        pytest.fail(f"sops is not built at {SOPS}: run `python -m testbed build`")
    return Keys(tmp_path_factory.mktemp("keys"))


def encrypted_secret(keys: Keys, ns: str, password: str) -> str:
    doc = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": ns}}
    doc["stringData"] = {"password": password, "user": "admin"}
    return keys.encrypt("db.yaml", yaml.safe_dump(doc), *ONLY_DATA)


async def test_a_changed_secret_is_shown_masked_and_no_value_appears_anywhere(
    spokes: list[Spoke], repo: WorkRepo, tmp_path: Path, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    ns, spoke = unique("secret"), spokes[2]
    repo.write({"apps/ns.yaml": namespace_doc(ns), "apps/db.yaml": encrypted_secret(keys, ns, OLD_PW)})
    rev = repo.commit("secret")
    config = one_spoke_fleet(tmp_path, repo, spoke)
    config.write_text(config.read_text() + f'\n[decryption]\nage_key_files = ["{keys.key_file}"]\n')
    await converged(config, spoke, rev)
    repo.write({"apps/db.yaml": encrypted_secret(keys, ns, NEW_PW)})
    repo.commit("rotate the password")

    code, out, err = await diff(capsys, config, spoke.name)
    _, doc, json_err = await diff(capsys, config, spoke.name, as_json=True)

    assert code == 1, out + err
    assert f"~ Secret {ns}/db (changed)" in out
    assert "    +  password: '*** (changed)'" in out.splitlines()
    assert "    -  password: '***'" in out.splitlines()
    assert "       user: '***'" in out.splitlines(), "an unchanged value is context, not a change"
    assert "*** (changed)" in json.loads(doc)["syncs"][0]["objects"][1]["diff"]
    everything = out + err + doc + json_err
    for value in (OLD_PW, NEW_PW):
        assert value not in everything
        assert base64.b64encode(value.encode()).decode() not in everything


# --- errors ---------------------------------------------------------------------------------------


async def test_an_unreachable_cluster_exits_2_naming_it(
    spare_spoke: Spoke, testbed: TestBed, repo: WorkRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    apps_repo(repo, unique("gone"))
    config = one_spoke_fleet(tmp_path, repo, spare_spoke)
    testbed.stop_spoke(spare_spoke.name)
    code, out, err = await diff(capsys, config, spare_spoke.name)
    assert (code, out) == (2, "")
    assert err.startswith(f"fleetd diff: cluster {spare_spoke.name}: cannot connect to {spare_spoke.server}")


async def test_an_unknown_cluster_or_sync_and_an_invalid_inventory_exit_2_with_the_names(
    spokes: list[Spoke], repo: WorkRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    apps_repo(repo, unique("names"))
    spoke = spokes[0]
    config = one_spoke_fleet(tmp_path, repo, spoke)
    code, _, err = await diff(capsys, config, "nope")
    assert code == 2
    assert f'no cluster "nope" in the inventory of {config} (clusters: {spoke.name})' in err
    code, out, err = await diff(capsys, config, spoke.name, "nope", as_json=True)
    assert code == 2
    assert f'cluster {spoke.name} has no sync "nope" (syncs: apps)' in err
    assert json.loads(out)["ok"] is False
    (config.parent / f"{spoke.name}.toml").write_text('[cluster]\nkubeconfig = "x"\nwave = "first"\n')
    code, _, err = await diff(capsys, config, spoke.name)
    assert code == 2
    assert "the inventory is invalid" in err
    assert f"{spoke.name}.toml" in err


async def test_a_sync_that_does_not_render_exits_2_naming_file_object_and_variable(
    spokes: list[Spoke], repo: WorkRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ns, spoke = unique("broken"), spokes[0]
    repo.write({"apps/ns.yaml": namespace_doc(ns), "apps/cm.yaml": configmap("cm", ns, {"v": "${nowhere}"})})
    repo.commit("undefined variable")
    code, _, err = await diff(capsys, one_spoke_fleet(tmp_path, repo, spoke), spoke.name)
    assert code == 2
    assert (
        f"fleetd diff: cluster {spoke.name}, sync apps: apps/cm.yaml:1 (document 1, ConfigMap {ns}/cm)" in err
    )
    assert "nowhere" in err


# --- the diff is the daemon's own plan ----------------------------------------------------------


async def test_the_diff_predicts_exactly_what_the_next_reconcile_writes(
    spokes: list[Spoke], repo: WorkRepo, tmp_path: Path, keys: Keys
) -> None:
    ns, spoke = unique("predict"), spokes[1]
    repo.write({
        "apps/ns.yaml": namespace_doc(ns),
        "apps/a.yaml": configmap("a", ns, {"v": "1"}),
        "apps/b.yaml": configmap("b", ns, {"v": "1"}),
        "apps/db.yaml": encrypted_secret(keys, ns, OLD_PW),
        "apps/same.yaml": json.dumps({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "same", "namespace": ns},
            "stringData": {"token": "unchanged-plain-value"},
        }),
    })  # fmt: skip
    first = repo.commit("namespace, two ConfigMaps, a rotated and a steady Secret (stringData)")
    config = one_spoke_fleet(tmp_path, repo, spoke)
    config.write_text(config.read_text() + f'\n[decryption]\nage_key_files = ["{keys.key_file}"]\n')
    async with running(config) as daemon:
        await eventually(lambda: _ready(daemon, spoke.name, first), "first revision applied")
        repo.remove("apps/b.yaml")
        repo.write({
            "apps/a.yaml": configmap("a", ns, {"v": "2"}),
            "apps/c.yaml": configmap("c", ns, {"v": "1"}),
            "apps/db.yaml": encrypted_secret(keys, ns, NEW_PW),
        })  # fmt: skip
        second = repo.commit("change a, drop b, add c, rotate the password")
        report = await diff_cluster(daemon.fleet, spoke.name, "apps")
        predicted = {
            (o.action, str(o.ref)) for s in report.syncs for o in s.objects if o.action != "unchanged"
        }
        daemon.trigger_fetch()
        await eventually(lambda: _ready(daemon, spoke.name, second), "second revision applied")
        (event,) = [
            e
            for e in daemon.state.events(cluster=spoke.name, sync="apps", kinds=("reconcile.succeeded",))
            if e.revision == second
        ]
        status = daemon.state.status(spoke.name, "apps")
    assert report.revision == second
    assert predicted == {
        ("changed", f"ConfigMap {ns}/a"), ("pruned", f"ConfigMap {ns}/b"), ("created", f"ConfigMap {ns}/c"),
        ("changed", f"Secret {ns}/db"),
    }  # fmt: skip
    assert set(event.objects) == {ref for _, ref in predicted}, "the reconcile wrote exactly what diff said"
    assert status is not None
    assert (status.changed, status.pruned) == (3, 1)


async def _ready(daemon: Daemon, cluster: str, revision: str) -> bool:
    status = daemon.state.status(cluster, "apps")
    return status is not None and status.result == "ready" and status.revision == revision
