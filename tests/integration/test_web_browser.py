"""The web UI in a real browser (Debian's Chromium, Playwright) against a daemon reconciling the test bed.

Each test runs its own daemon over two spokes and three syncs (``base``,
and ``apps`` and ``web`` depending on it); the browser is shared by the
session. Live updates are checked without reloading: a marker put into the
page's ``window`` must still be there at the end. Screenshots land in
``artefacts/web/`` (``FLEETD_ARTEFACTS`` overrides).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page

from fleetd.daemon.root import Daemon
from testbed.bed import Spoke
from testbed.build import toolset
from tests.conftest import FCP
from tests.gitrepo import WorkRepo
from tests.integration.fleet import configmap, eventually, namespace_doc, running, unique, write_fleet

pytestmark = [pytest.mark.testbed, pytest.mark.timeout(120)]
REPO = Path(__file__).resolve().parents[2]
ARTEFACTS = Path(os.environ.get("FLEETD_ARTEFACTS", REPO / "artefacts")) / "web"
TOKEN = "alice:0123456789abcdef0123456789abcdef"
LIVE = 15_000  # ms a live update may take to show
SYNCS = ("base", "apps", "web")


@dataclass
class Fleet:
    daemon: Daemon
    repo: WorkRepo
    ns: str
    spokes: list[Spoke]
    url: str

    def cluster(self, i: int = 0) -> str:
        return self.spokes[i].name


def manifests(ns: str) -> dict[str, str]:
    return {
        "base/ns.yaml": namespace_doc(ns),
        "apps/cm.yaml": configmap("cm", ns, {"colour": "blue"}),
        "web/cm.yaml": configmap("web", ns, {"greeting": "hello"}),
    }


@pytest.fixture
async def fleet(spokes: list[Spoke], tmp_path: Path) -> AsyncIterator[Fleet]:
    ns = unique("web")
    repo = WorkRepo(tmp_path / "repo").write(manifests(ns))
    head = repo.commit("web ui: first")
    syncs: list[dict[str, Any]] = [
        {"name": "base", "path": "base"},
        {"name": "apps", "path": "apps", "depends_on": ["base"], "drift": "report"},
        {"name": "web", "path": "web", "depends_on": ["base"]},
    ]
    two = spokes[:2]
    config = write_fleet(tmp_path, repo=repo.path, clusters={s.name: s.kubeconfig for s in two}, syncs=syncs)
    (tokens := tmp_path / "web.tokens").write_text(TOKEN + "\n")
    tokens.chmod(0o600)
    with config.open("a") as f:
        f.write(f'\n[web]\nactions = true\ntoken_file = "{tokens}"\n')
    async with running(config) as daemon:
        await daemon.http_ready.wait()
        url = f"http://{daemon.fleet.listen_host}:{daemon.fleet.listen_port}"
        await eventually(lambda: _all_ready(daemon, head), "every sync ready", timeout=60)
        yield Fleet(daemon, repo, ns, two, url)


async def _all_ready(daemon: Daemon, revision: str) -> bool:
    rows = [daemon.state.status(c.name, s.name) for c in daemon.fleet.clusters for s in c.syncs]
    return all(r is not None and r.result == "ready" and r.revision == revision for r in rows)


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    tab = await context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    # A refused action is answered 401 on purpose; any other console error is a fault of the page.
    expected = "the server responded with a status of 401"
    tab.on(
        "console", lambda m: errors.append(m.text) if m.type == "error" and expected not in m.text else None
    )
    yield tab
    await context.close()
    assert errors == [], f"the page reported errors: {errors}"


async def mark(page: Page) -> None:
    """Put a marker in the page; `unreloaded` checks that no navigation dropped it."""
    await page.evaluate("window.__fleetdMarker = 'still here'")
    await page.wait_for_selector("#live.on", timeout=LIVE)  # the stream is connected


async def unreloaded(page: Page) -> None:
    assert await page.evaluate("window.__fleetdMarker") == "still here"


async def shot(page: Page, name: str) -> Path:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / f"{name}.png"
    await page.evaluate("window.scrollTo(0, 0)")  # the sticky header stays at the top of the picture
    await page.screenshot(path=str(path), full_page=True)
    return path


async def kubectl(spoke: Spoke, *args: str) -> None:
    argv = [str(toolset().path("kubectl")), "--kubeconfig", str(spoke.kubeconfig), *args]
    await asyncio.to_thread(subprocess.run, argv, check=True, capture_output=True, timeout=30)


async def test_the_overview_shows_every_cluster_and_sync(fleet: Fleet, page: Page) -> None:
    started = time.monotonic()
    await page.goto(fleet.url + "/")
    cells = page.locator("td.cell[data-state]")
    assert await cells.count() == len(fleet.spokes) * len(SYNCS)
    for spoke in fleet.spokes:
        for sync in SYNCS:
            cell = page.locator(f'td.cell[data-cluster="{spoke.name}"][data-sync="{sync}"]')
            assert await cell.get_attribute("data-state") == "ready"
    assert "None: every sync is ready" in await page.inner_text("#problems")
    paint = await page.evaluate(FCP)
    print(
        f"overview: first contentful paint {paint:.0f} ms, load {1000 * (time.monotonic() - started):.0f} ms"
    )
    await shot(page, "overview")
    await details_come_from_the_running_daemon(fleet)
    await page.set_viewport_size({"width": 390, "height": 844})  # a phone
    await page.emulate_media(color_scheme="dark")
    await shot(page, "overview-phone-dark")


async def details_come_from_the_running_daemon(fleet: Fleet) -> None:
    """Objects from the drift tracker with live health, the server version, the commit's author."""
    async with aiohttp.ClientSession() as session:

        async def doc(path: str) -> dict[str, Any]:
            async with session.get(fleet.url + path) as response:
                assert response.status == 200, path
                result: dict[str, Any] = await response.json()
                return result

        apps = await doc(f"/api/v1/clusters/{fleet.cluster()}/syncs/apps")
        assert apps["objects_source"] == "watch"
        assert [(o["kind"], o["name"], o["health"], o["drifted"]) for o in apps["objects"]] == [
            ("ConfigMap", "cm", "current", False)
        ]
        assert (await doc(f"/api/v1/clusters/{fleet.cluster()}"))["version"].startswith("v1.")
        (revision,) = (await doc("/api/v1/revisions"))["revisions"]
        assert (revision["author"], revision["message"], revision["rollout"]) == (
            "fleetd tests",
            "web ui: first",
            "complete",
        )


async def test_a_hand_edit_shows_as_drift_and_then_as_corrected_without_a_reload(
    fleet: Fleet, page: Page
) -> None:
    spoke = fleet.spokes[0]
    row = f'tr[data-object="ConfigMap/{fleet.ns}/cm"]'
    await page.goto(f"{fleet.url}/clusters/{spoke.name}/syncs/apps")
    await page.wait_for_selector(f'{row}[data-drifted="false"]')
    await mark(page)
    # drift = "report": the edit stays, and the page says so.
    await kubectl(
        spoke, "-n", fleet.ns, "patch", "configmap", "cm", "--type=merge", "-p", '{"data":{"colour":"red"}}'
    )
    await page.wait_for_selector(f'{row}[data-drifted="true"]', timeout=LIVE)
    assert "edited by kubectl" in await page.inner_text(row)
    await page.click('#diff button[type="submit"]')  # the daemon's own dry run, in place
    diff = page.locator("#diff pre.diff")
    await diff.wait_for(timeout=LIVE)
    assert "colour: red" in await diff.inner_text()
    await shot(page, "sync-drifted")
    # An operator reconciles it (with a token): the page shows it in sync again.
    await act(fleet, "reconcile", {"cluster": spoke.name, "sync": "apps"}, token=TOKEN.split(":")[1])
    await page.wait_for_selector(f'{row}[data-drifted="false"]', timeout=LIVE)
    # drift = "correct" on another sync: the correction shows up in its history as it happens.
    await page.goto(f"{fleet.url}/clusters/{spoke.name}/syncs/web")
    await mark(page)
    await kubectl(
        spoke, "-n", fleet.ns, "patch", "configmap", "web", "--type=merge", "-p", '{"data":{"greeting":"hi"}}'
    )
    await page.wait_for_selector('#history tr[data-kind="drift.corrected"]', timeout=LIVE)
    await unreloaded(page)


async def test_a_failing_commit_shows_its_error_on_the_sync_page(fleet: Fleet, page: Page) -> None:
    cluster = fleet.cluster()
    await page.goto(f"{fleet.url}/clusters/{cluster}/syncs/apps")
    await mark(page)
    fleet.repo.write({"apps/broken.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: [unclosed\n"})
    fleet.repo.commit("a broken manifest")
    fleet.daemon.trigger_fetch()
    error = page.locator("#status pre.error")
    await error.wait_for(timeout=LIVE)
    assert "broken.yaml" in await error.inner_text()
    await page.wait_for_selector("#status .badge.st-failed", timeout=LIVE)
    await unreloaded(page)
    await shot(page, "sync-failed")
    await page.goto(fleet.url + "/")
    assert "broken.yaml" in await page.inner_text("#problems")


async def test_an_action_is_refused_without_a_token_and_works_with_one(fleet: Fleet, page: Page) -> None:
    cluster = fleet.cluster()
    here = f"{fleet.url}/clusters/{cluster}/syncs/web"
    await page.goto(here)
    await page.click('button[data-verb="reconcile"]')
    assert "actions need an access token" in await page.inner_text("main")
    assert not [e for e in fleet.daemon.state.events(kinds=("operator.action",)) if "asked" in e.message]
    await page.goto(f"{fleet.url}/login?next=/clusters/{cluster}/syncs/web")
    await page.fill('input[name="token"]', "not-the-token-at-all")
    await page.click('form.login button[type="submit"]')
    assert "That token is not valid" in await page.inner_text("main")
    await page.fill('input[name="token"]', TOKEN.split(":")[1])
    await page.click('form.login button[type="submit"]')
    await page.wait_for_url(here)
    await page.click('button[data-verb="reconcile"]')
    await page.wait_for_url(here)
    asked = page.locator('#history tr[data-kind="operator.action"]', has_text="alice asked to reconcile")
    await asked.first.wait_for(timeout=LIVE)
    events = fleet.daemon.state.events(kinds=("operator.action",))
    assert any(e.message.startswith(f"alice asked to reconcile of {cluster}/web") for e in events)


async def act(
    fleet: Fleet, verb: str, body: dict[str, str], *, token: str | None
) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{fleet.url}/api/v1/actions/{verb}", json=body, headers=headers) as response,
    ):
        return response.status, await response.json()
