"""Notifications end to end: a real daemon, real spokes and git, real loopback receivers.

The receivers (tests/notifysinks.py) are an aiohttp server that checks
apprise's JSON payload, recomputes the webhook's HMAC signature and plays
the statuses endpoints of GitHub, Gitea and GitLab, checking their auth
headers and payloads. They are stand-ins for the forges, not real Gitea
or GitLab servers.

The scenario: two syncs on a canary cluster (wave 0) and a production
cluster (wave 1). A commit that breaks both syncs fails on the canary
again and again; production is held back by the rollout. A fix recovers
both.
"""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleetd.daemon.events import EventKind
from fleetd.daemon.root import Daemon
from testbed.bed import Spoke
from tests.gitrepo import WorkRepo
from tests.integration.fleet import configmap, eventually, running, write_fleet
from tests.notifysinks import Sinks, notifications_toml, running_sinks

pytestmark = [pytest.mark.testbed, pytest.mark.timeout(150)]

SYNCS = ("apps", "base")


def commit(repo: WorkRepo, ns: str, *, broken: bool, message: str) -> str:
    files = {}
    for sync in SYNCS:
        files[f"{sync}/settings.yaml"] = configmap(f"{sync}-settings", ns, {"broken": str(broken)})
        if broken:
            files[f"{sync}/bad.yaml"] = configmap("Not_A_Valid_Name", ns, {"x": "1"})
    repo.write(files)
    if not broken:
        repo.remove(*(f"{s}/bad.yaml" for s in SYNCS if (repo.path / s / "bad.yaml").exists()))
    return repo.commit(message)


async def ready_at(daemon: Daemon, cluster: str, revision: str) -> bool:
    return all(
        (s := daemon.state.status(cluster, sync)) is not None
        and s.result == "ready"
        and s.revision == revision
        for sync in SYNCS
    )


async def failed_at_least(daemon: Daemon, cluster: str, sync: str, times: int) -> bool:
    kinds = (str(EventKind.RECONCILE_FAILED),)
    return len(daemon.state.events(cluster=cluster, sync=sync, kinds=kinds)) >= times


def subjects(sinks: Sinks) -> Counter[str]:
    """Chat titles without the fleet and revision: ``spoke-a/apps failed``."""
    return Counter(doc["title"].split("] ", 1)[1].split(" at ")[0] for doc in sinks.apprise["chat"])


async def scrape(daemon: Daemon) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    url = f"http://{daemon.fleet.listen_host}:{daemon.fleet.listen_port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        text = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_a_failing_commit_sends_one_failure_per_sync_and_one_recovery_and_holds_later_waves_pending(
    tmp_path: Path, spokes: list[Spoke], namespace: str
) -> None:
    canary, prod = spokes[0], spokes[1]
    ns = namespace
    repo = WorkRepo(tmp_path / "repo")
    good = commit(repo, ns, broken=False, message="good")
    config = write_fleet(
        tmp_path, repo=repo.path, clusters={canary.name: canary.kubeconfig, prod.name: prod.kubeconfig},
        syncs=[{"name": s, "path": s} for s in SYNCS], waves={canary.name: 0, prod.name: 1},
    )  # fmt: skip
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    async with running_sinks() as sinks:
        config.write_text(config.read_text() + notifications_toml(sinks, secrets))
        async with running(config) as daemon:
            await eventually(lambda: ready_at(daemon, prod.name, good), "the good commit everywhere", 60)
            await eventually(lambda: _true(len(sinks.latest("github", good)) == 4), "success statuses")
            assert {s["state"] for s in sinks.latest("github", good).values()} == {"success"}

            bad = commit(repo, ns, broken=True, message="broken: an invalid ConfigMap name")
            daemon.trigger_fetch()
            for round_ in range(3):  # the same failure, again and again
                for sync in SYNCS:
                    check = functools.partial(failed_at_least, daemon, canary.name, sync, round_ + 1)
                    await eventually(check, f"failure {round_ + 1} of {sync}")
                daemon.trigger(canary.name)
            await eventually(
                lambda: _true(_held_back(sinks.latest("github", bad), prod.name)), "prod pending"
            )
            held = sinks.latest("github", bad)
            assert {held[f"fleetd/{canary.name}/{s}"]["state"] for s in SYNCS} == {"failure"}
            assert daemon.state.status(prod.name, "apps").revision == good  # type: ignore[union-attr]

            fixed = commit(repo, ns, broken=False, message="fixed")
            daemon.trigger_fetch()
            await eventually(lambda: ready_at(daemon, prod.name, fixed), "the fix everywhere", 60)
            await eventually(
                lambda: _true(len(sinks.latest("gitlab", fixed)) == 4), "fixed statuses at GitLab"
            )
            await eventually(lambda: _true(subjects(sinks)[f"{canary.name}/apps recovered"] == 1), "recovery")
            await eventually(lambda: _true(len(sinks.hooks) == 4), "webhook deliveries")
            metrics = await scrape(daemon)

    for sync in SYNCS:
        assert subjects(sinks)[f"{canary.name}/{sync} failed"] == 1, subjects(sinks)
        assert subjects(sinks)[f"{canary.name}/{sync} recovered"] == 1, subjects(sinks)
    assert not [s for s in subjects(sinks) if s.startswith(prod.name)]
    assert sorted(h["reason"] for h in sinks.hooks) == ["failure", "failure", "recovery", "recovery"]
    assert {h["event"]["revision"] for h in sinks.hooks if h["reason"] == "failure"} == {bad}
    assert not sinks.bad, sinks.bad
    for forge in ("github", "gitea", "gitlab"):
        statuses = sinks.latest(forge, fixed)
        assert {s["state"] for s in statuses.values()} == {"success"}, (forge, statuses)
        assert set(statuses) == {f"fleetd/{c}/{s}" for c in (canary.name, prod.name) for s in SYNCS}
    suppressed = metrics[("fleetd_notifications_total", (("notification", "chat"), ("result", "suppressed")))]
    assert metrics[("fleetd_notifications_total", (("notification", "chat"), ("result", "sent")))] >= 4
    assert suppressed >= 4  # two more failures per sync were held back
    status_info = {k for k in metrics if k[0] == "fleetd_sync_status_info"}
    assert len(status_info) == 4


def _held_back(statuses: dict[str, dict[str, str]], cluster: str) -> bool:
    mine = [s for context, s in statuses.items() if context.startswith(f"fleetd/{cluster}/")]
    return len(mine) == 2 and all(s["state"] == "pending" and "held back" in s["description"] for s in mine)


async def _true(value: bool) -> bool:
    return value
