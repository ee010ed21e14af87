"""One bad input never stops the fleet: each fault stays in its cluster or sync, and clears by itself.

A daemon reconciles three real spokes. In the middle of the run one input
turns hostile — a kubeconfig, an object in git, a file-system oddity in git,
a ledger edited by hand in one spoke, a full state directory, a spoke that
answers every call with an error. Every time, the other clusters and syncs
keep converging, ``/healthz`` stays 200, the fault becomes a failed status and
an event that say what is wrong, the daemon recovers once the input is
fixed, and a restart with the bad input still in place serves the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from fleetd.daemon.events import EventKind
from fleetd.daemon.root import Daemon
from fleetd.reconcile.ledger import SYSTEM_NAMESPACE
from testbed.bed import Spoke
from testbed.processes import free_port
from tests.gitrepo import WorkRepo
from tests.integration.fleet import configmap, eventually, get, put, running, write_fleet

pytestmark = [pytest.mark.testbed, pytest.mark.timeout(240)]


@pytest.fixture
def repo(tmp_path: Path) -> WorkRepo:
    return WorkRepo(tmp_path / "repo")


def fleet(
    tmp_path: Path, repo: WorkRepo, spokes: list[Spoke], namespace: str, state_dir: Path | None = None
) -> Path:
    """Two syncs on every spoke: ``apps`` (the healthy one) and ``extra``."""
    repo.write(
        {
            "apps/cm.yaml": configmap("cm", namespace, {"v": "1"}),
            "extra/cm.yaml": configmap("x", namespace, {"v": "1"}),
        }
    )
    repo.commit("two syncs")
    syncs = [{"name": "apps", "path": "apps"}, {"name": "extra", "path": "extra", "max_prune": "100%"}]
    config = write_fleet(
        tmp_path, repo=repo.path, clusters={s.name: s.kubeconfig for s in spokes}, syncs=syncs
    )
    if state_dir is not None:
        config.write_text(config.read_text().replace(f'"{tmp_path / "state"}"', f'"{state_dir}"'))
    return config


def ready_at(daemon: Daemon, cluster: str, sync: str, revision: str) -> bool:
    status = daemon.state.status(cluster, sync)
    return status is not None and status.result == "ready" and status.revision == revision


async def converged(daemon: Daemon, pairs: list[tuple[str, str]], revision: str, what: str) -> None:
    async def check() -> bool:
        return all(ready_at(daemon, c, s, revision) for c, s in pairs)

    await eventually(check, what, timeout=60)


async def failed_with(daemon: Daemon, cluster: str, sync: str, *words: str) -> str:
    async def check() -> bool:
        status = daemon.state.status(cluster, sync)
        return (
            status is not None and status.result == "failed" and all(w in (status.error or "") for w in words)
        )

    await eventually(check, f"{cluster}/{sync} failed saying {words}", timeout=60)
    return daemon.state.status(cluster, sync).error or ""  # type: ignore[union-attr]


async def healthz(daemon: Daemon) -> int:
    url = f"http://{daemon.fleet.listen_host}:{daemon.fleet.listen_port}/healthz"
    await daemon.http_ready.wait()
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status


def journal_has(daemon: Daemon, kind: EventKind, cluster: str | None = None, sync: str | None = None) -> bool:
    return bool(daemon.state.events(cluster=cluster, sync=sync, kinds=(str(kind),)))


async def edit(spoke: Spoke, path: str, change: dict[str, object]) -> None:
    """A hand edit: read the object, change top-level fields, write it back."""
    obj = await get(spoke, path)
    assert obj is not None, path
    obj.update(change)
    if obj.get("data") is None:
        obj.pop("data", None)
    await put(spoke, "PUT", path, obj)


def everyone(spokes: list[Spoke], syncs: tuple[str, ...] = ("apps", "extra")) -> list[tuple[str, str]]:
    return [(s.name, y) for s in spokes for y in syncs]


# -- a kubeconfig ------------------------------------------------------------------------------------


BAD_KUBECONFIGS = {
    "not yaml": "clusters: [unclosed\n",
    "a list": "- apiVersion: v1\n- kind: Config\n",
    "wrong types": "apiVersion: v1\nkind: Config\nclusters: 7\ncontexts: {a: b}\ncurrent-context: [x]\n",
    "binary": "\x00\x01\x02 garbage \xff",
    "no such context": "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n",
}


@pytest.mark.parametrize("content", list(BAD_KUBECONFIGS.values()), ids=list(BAD_KUBECONFIGS))
async def test_a_malformed_kubeconfig_fails_its_cluster_alone_and_recovers_when_fixed(
    spokes: list[Spoke], repo: WorkRepo, tmp_path: Path, namespace: str, content: str
) -> None:
    config = fleet(tmp_path, repo, spokes, namespace)
    victim, healthy = spokes[2], spokes[:2]
    bad = tmp_path / "bad.kubeconfig"
    bad.write_text(content, errors="surrogateescape")
    cluster_file = config.parent / f"{victim.name}.toml"
    good_text = cluster_file.read_text()
    async with running(config) as daemon:
        await converged(daemon, everyone(spokes), repo.head(), "first sync everywhere")
        cluster_file.write_text(good_text.replace(str(victim.kubeconfig), str(bad)))
        assert await daemon.reload()
        repo.write({"apps/cm.yaml": configmap("cm", namespace, {"v": "2"})})
        second = repo.commit("v2")
        daemon.trigger_fetch()
        await converged(daemon, everyone(healthy), second, "the healthy clusters at v2")
        error = await failed_with(daemon, victim.name, "apps", "kubeconfig", str(bad))
        assert "Traceback" not in error
        assert daemon.state.cluster(victim.name).reachable is False
        assert journal_has(daemon, EventKind.RECONCILE_FAILED, victim.name)
        assert await healthz(daemon) == 200
        cluster_file.write_text(good_text)
        assert await daemon.reload()
        await converged(daemon, everyone([victim]), second, "the fixed cluster at v2")
    cluster_file.write_text(good_text.replace(str(victim.kubeconfig), str(bad)))
    async with running(config) as daemon:  # restarted with the bad input in place
        repo.write({"apps/cm.yaml": configmap("cm", namespace, {"v": "3"})})
        third = repo.commit("v3")
        daemon.trigger_fetch()
        await converged(daemon, everyone(healthy), third, "the healthy clusters after a restart")
        await failed_with(daemon, victim.name, "apps", "kubeconfig")


async def test_a_kubeconfig_that_is_a_directory_is_a_clear_error(
    spokes: list[Spoke], repo: WorkRepo, tmp_path: Path, namespace: str
) -> None:
    config = fleet(tmp_path, repo, spokes[:2], namespace)
    victim = spokes[1]
    cluster_file = config.parent / f"{victim.name}.toml"
    cluster_file.write_text(cluster_file.read_text().replace(str(victim.kubeconfig), str(tmp_path)))
    async with running(config) as daemon:
        await converged(daemon, everyone(spokes[:1]), repo.head(), "the healthy cluster")
        await failed_with(daemon, victim.name, "apps", "not a file")


# -- git -------------------------------------------------------------------------------------------


MALFORMED = {
    "name is a list": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": [1, 2]}},
    "labels is a string": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": "x"}},
    "annotation value is a map": {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "annotations": {"k": {"v": 1}}},
    },
    "namespace is a number": {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": 7},
    },
    "kind is a map": {"apiVersion": "v1", "kind": {"x": 1}, "metadata": {"name": "a"}},
    "metadata is a list": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": ["name", "a"]},
    "data values are maps": {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": {}},
    },
}  # fmt: skip


@pytest.mark.parametrize("doc", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_a_malformed_object_in_git_fails_its_sync_alone(
    spokes: list[Spoke], repo: WorkRepo, tmp_path: Path, namespace: str, doc: dict[str, object]
) -> None:
    config = fleet(tmp_path, repo, spokes, namespace)
    async with running(config) as daemon:
        await converged(daemon, everyone(spokes), repo.head(), "first sync everywhere")
        repo.write(
            {"apps/cm.yaml": configmap("cm", namespace, {"v": "2"}), "extra/bad.json": json.dumps(doc)}
        )
        second = repo.commit("a malformed object in extra")
        daemon.trigger_fetch()
        await converged(daemon, everyone(spokes, ("apps",)), second, "apps at v2 everywhere")
        for spoke in spokes:
            error = await failed_with(daemon, spoke.name, "extra")
            assert "extra/bad.json" in error, error
        assert await healthz(daemon) == 200
        repo.remove("extra/bad.json")
        fixed = repo.commit("fixed")
        daemon.trigger_fetch()
        await converged(daemon, everyone(spokes), fixed, "everything at the fix")


def _symlinks(repo: WorkRepo, case: str) -> None:
    extra = repo.path / "extra"
    if case == "loop":
        (extra / "a.yaml").symlink_to("b.yaml")
        (extra / "b.yaml").symlink_to("a.yaml")
    elif case == "self":
        (extra / "sub").symlink_to(".")
    elif case == "dangling":
        (extra / "gone.yaml").symlink_to("nowhere.yaml")
    else:
        (extra / "escape.yaml").symlink_to("/etc/hostname")


@pytest.mark.parametrize("case", ["loop", "self", "dangling", "escaping"])
async def test_symlink_oddities_in_git_stay_in_their_sync(
    spokes: list[Spoke], repo: WorkRepo, tmp_path: Path, namespace: str, case: str
) -> None:
    config = fleet(tmp_path, repo, spokes[:2], namespace)
    async with running(config) as daemon:
        await converged(daemon, everyone(spokes[:2]), repo.head(), "first sync")
        _symlinks(repo, case)
        repo.write({"apps/cm.yaml": configmap("cm", namespace, {"v": "2"})})
        second = repo.commit(f"symlinks: {case}")
        daemon.trigger_fetch()
        await converged(daemon, everyone(spokes[:2], ("apps",)), second, "apps at v2")

        async def extra_settled() -> bool:
            statuses = [daemon.state.status(s.name, "extra") for s in spokes[:2]]
            return all(
                st is not None and st.revision == second and st.result in ("ready", "failed")
                for st in statuses
            )

        await eventually(extra_settled, "extra reconciled at the symlink commit")
        assert (
            await get(spokes[0], f"/api/v1/namespaces/{namespace}/configmaps/x")
        ) is not None  # nothing pruned
        assert await healthz(daemon) == 200
    async with running(config) as daemon:  # a restart with the oddity still in git
        await converged(daemon, everyone(spokes[:2], ("apps",)), second, "apps after a restart")


# -- a ledger edited by hand -------------------------------------------------------------------------


CORRUPT_LEDGERS = {
    "garbage entries": {"data": {"entries": "this is not|an entry", "revision": "x", "prune": "true"}},
    "prune is a word": {"data": {"entries": "", "revision": "x", "prune": "perhaps"}},
    "data removed": {"data": None},
}


@pytest.mark.parametrize("patch", list(CORRUPT_LEDGERS.values()), ids=list(CORRUPT_LEDGERS))
async def test_a_ledger_corrupted_by_hand_fails_that_sync_there_and_prunes_nothing(
    spokes: list[Spoke], repo: WorkRepo, tmp_path: Path, namespace: str, patch: dict[str, object]
) -> None:
    config = fleet(tmp_path, repo, spokes, namespace)
    victim = spokes[1]
    async with running(config) as daemon:
        await converged(daemon, everyone(spokes), repo.head(), "first sync everywhere")
        path = f"/api/v1/namespaces/{SYSTEM_NAMESPACE}/configmaps/{daemon.fleet.name}.extra"
        await edit(victim, path, patch)
        repo.remove("extra/cm.yaml")
        repo.write(
            {
                "extra/other.yaml": configmap("y", namespace, {"v": "1"}),
                "apps/cm.yaml": configmap("cm", namespace, {"v": "2"}),
            }
        )
        second = repo.commit("x leaves git")
        daemon.trigger_fetch()
        healthy = [s for s in spokes if s is not victim]
        await converged(
            daemon, [*everyone(healthy), (victim.name, "apps")], second, "all but the broken ledger"
        )
        error = await failed_with(daemon, victim.name, "extra", "ledger", "edited by hand")
        assert "delete it" in error
        assert await get(victim, f"/api/v1/namespaces/{namespace}/configmaps/x") is not None  # not pruned
        assert await healthz(daemon) == 200
        await put(victim, "DELETE", path, None)
        await converged(
            daemon, [(victim.name, "extra")], second, "the sync recovers once the ledger is deleted"
        )


# -- a full state directory --------------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(path: Path, size: str = "16m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * (1 << 16))
            out.flush()
            os.fsync(out.fileno())
    return filler


async def test_a_full_state_directory_degrades_to_not_recording_and_reconciling_goes_on(
    spokes: list[Spoke], repo: WorkRepo, tmp_path: Path, namespace: str
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        config = fleet(tmp_path, repo, spokes, namespace, state_dir=disk / "state")
        async with running(config) as daemon:
            await converged(daemon, everyone(spokes), repo.head(), "first sync everywhere")
            filler = await asyncio.to_thread(fill, disk)
            daemon.trigger()  # every sync records a status: the writes fail
            url = f"http://{daemon.fleet.listen_host}:{daemon.fleet.listen_port}"

            async def not_ready() -> bool:
                async with aiohttp.ClientSession() as http, http.get(url + "/readyz") as resp:
                    return resp.status == 503 and "cannot record" in await resp.text()

            await eventually(not_ready, "/readyz says the state cannot be recorded")
            assert await healthz(daemon) == 200
            await edit(spokes[0], f"/api/v1/namespaces/{namespace}/configmaps/cm", {"data": {"v": "hand"}})

            async def corrected() -> bool:
                cm = await get(spokes[0], f"/api/v1/namespaces/{namespace}/configmaps/cm")
                return cm is not None and cm["data"] == {"v": "1"}

            daemon.trigger(spokes[0].name, "apps")  # drift correction or this reconcile: either restores it
            await eventually(corrected, "the hand edit reverted while the disk is full", timeout=60)
            filler.unlink()
            daemon.trigger()

            async def ready_again() -> bool:
                async with aiohttp.ClientSession() as http, http.get(url + "/readyz") as resp:
                    return resp.status == 200

            await eventually(ready_again, "/readyz back once there is space")
            assert journal_has(daemon, EventKind.STATE_RECORDED)


# -- a spoke that answers every call with an error -----------------------------------------------------


@contextlib.asynccontextmanager
async def hostile_server(mode: str) -> AsyncIterator[str]:
    """A loopback HTTP server playing a broken API server: 500s, 200s that are not JSON, or 429s."""

    async def answer(request: web.Request) -> web.StreamResponse:
        if mode == "500":
            return web.json_response({"kind": "Status", "code": 500, "message": "etcdserver: leader changed"},
                                     status=500)  # fmt: skip
        if mode == "429":
            return web.json_response(
                {"kind": "Status", "code": 429}, status=429, headers={"Retry-After": "2"}
            )
        return web.Response(body=b"<html>proxy says hello</html>", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("mode", ["500", "not json", "429"])
async def test_a_spoke_answering_every_call_with_an_error_fails_alone(
    spokes: list[Spoke], repo: WorkRepo, tmp_path: Path, namespace: str, mode: str
) -> None:
    async with hostile_server(mode) as server:
        kubeconfig = tmp_path / "hostile.kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: h\n"
            f"clusters: [{{name: h, cluster: {{server: '{server}'}}}}]\n"
            "users: [{name: h, user: {token: abc}}]\ncontexts: [{name: h, context: {cluster: h, user: h}}]\n"
        )
        config = fleet(tmp_path, repo, spokes[:2], namespace)
        (config.parent / "hostile.toml").write_text(
            (config.parent / f"{spokes[0].name}.toml")
            .read_text()
            .replace(str(spokes[0].kubeconfig), str(kubeconfig))
        )
        async with running(config) as daemon:
            await converged(daemon, everyone(spokes[:2]), repo.head(), "the real spokes")
            await failed_with(daemon, "hostile", "apps")
            assert daemon.state.cluster("hostile").reachable is False
            assert await healthz(daemon) == 200
