"""The history/detail API, the stream, access control and security headers over real loopback HTTP.

A real `FleetState` over a real inventory and store (tests/fleetstate.py)
stands behind a real aiohttp server; the daemon's operator actions are
stood in for by `Operated`, which records the calls (the real daemon is
exercised by the browser tests). Answers are validated against the shipped
OpenAPI file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from fleetd.api.auth import TokenFileError
from fleetd.api.http import SHUTDOWN_TIMEOUT, make_app, serve
from fleetd.daemon.revisions import Revisions
from fleetd.daemon.state import FleetState
from fleetd.daemon.worker import ClusterWorker
from fleetd.inventory import WebSettings
from fleetd.reconcile.outcome import Result, SyncOutcome
from testbed.processes import free_port
from tests.fleetstate import drifted, fleet_state
from tests.integration.test_web import View

pytestmark = pytest.mark.timeout(60)
Client = TestClient[web.Request, web.Application]
TOKEN = "0123456789abcdef0123456789abcdef"
REV = "a" * 40
OPENAPI = yaml.safe_load(resources.files("fleetd.api").joinpath("openapi.yaml").read_text())


@dataclass
class Operated(View):
    """The daemon as the web sees it: no workers connected, a real source, actions recorded."""

    state: FleetState | None = None
    calls: list[tuple[str, object, object]] = field(default_factory=list)
    workers: dict[str, ClusterWorker] = field(default_factory=dict)
    revisions: Revisions | None = None

    def trigger(self, cluster: str | None = None, sync: str | None = None) -> None:
        self.calls.append(("trigger", cluster, sync))

    def suspend(self, cluster: str, sync: str | None) -> None:
        self.calls.append(("suspend", cluster, sync))

    def resume_sync(self, cluster: str, sync: str | None) -> None:
        self.calls.append(("resume_sync", cluster, sync))

    def hold(self) -> None:
        self.calls.append(("hold", None, None))

    def resume(self) -> None:
        self.calls.append(("resume", None, None))

    def promote(self) -> None:
        self.calls.append(("promote", None, None))


def populated(tmp_path: Path, **web_settings: Any) -> FleetState:
    """Two clusters by two syncs: ready, failed (with markup in its error), drifted, never run."""
    state = fleet_state(tmp_path / "fleet")
    tokens = tmp_path / "web.tokens"
    tokens.write_text(f"# who may act\nalice:{TOKEN}\n")
    settings = {"token_file": tokens, **web_settings}
    state.fleet = dataclasses.replace(state.fleet, web=WebSettings(**settings))
    state.fetched(0.2, revision=REV, ref="branch main", message="first")
    state.advance(REV)
    state.reachability("a", True)
    state.record("a", SyncOutcome(sync="s", revision=REV, result=Result.READY, objects=3))
    bad = "apps/web.yaml#2: <script>alert(1)</script> is not a Kind"
    state.record(
        "a", SyncOutcome(sync="t", revision=REV, result=Result.FAILED, error=bad, refs=("ConfigMap ns/x",))
    )
    state.record("b", SyncOutcome(sync="s", revision=REV, result=Result.READY, objects=2))
    drifted(state, "b", "s", 2)
    return state


@dataclass
class Hub:
    client: Client
    state: FleetState
    daemon: Operated

    @property
    def origin(self) -> str:
        return f"http://{self.client.host}:{self.client.port}"

    async def json(self, path: str, status: int = 200, **kw: Any) -> Any:
        response = await self.client.get(path, **kw)
        assert response.status == status, await response.text()
        return await response.json()


async def hub_for(tmp_path: Path, *, loopback: bool = True, **web_settings: Any) -> AsyncIterator[Hub]:
    state = populated(tmp_path, **web_settings)
    daemon = Operated(state=state)
    daemon.revisions = Revisions(
        state.fleet.source, state.fleet.state_dir, state=state, on_new=lambda s: None
    )
    app = make_app(daemon, state, {}, loopback=loopback)
    async with TestClient(TestServer(app)) as client:
        yield Hub(client, state, daemon)


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    async for h in hub_for(tmp_path, actions=True):
        yield h


def validate(doc: Any, schema: str) -> None:
    registry = Registry().with_resource("openapi", Resource.from_contents(OPENAPI, DRAFT202012))
    validator = Draft202012Validator({"$ref": f"openapi#/components/schemas/{schema}"}, registry=registry)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


# -- the documented shapes ---------------------------------------------------------------------


async def test_every_api_answer_matches_the_openapi_file(hub: Hub) -> None:
    validate(await hub.json("/api/v1/clusters"), "Overview")
    validate(await hub.json("/api/v1/clusters/a"), "ClusterDetail")
    validate(await hub.json("/api/v1/clusters/a/syncs/t"), "SyncDetail")
    validate(await hub.json("/api/v1/clusters/b/syncs/s"), "SyncDetail")
    validate(await hub.json("/api/v1/clusters/b/syncs/t"), "SyncDetail")
    validate(await hub.json("/api/v1/clusters/a/syncs/s/diff"), "Diff")
    validate(await hub.json("/api/v1/events?limit=1000"), "Events")
    validate(await hub.json("/api/v1/revisions"), "Revisions")
    validate(await hub.json("/api/v1/clusters/nope", 404), "Error")
    validate(await hub.json("/api/v1/events?since=soon", 400), "Error")


async def test_the_openapi_file_documents_exactly_the_routes_served(hub: Hub) -> None:
    served = {
        r.resource.canonical for r in hub.client.app.router.routes()
        if r.resource is not None and r.resource.canonical.startswith("/api/v1/")
    }  # fmt: skip
    assert served - {"/api/v1/status", "/api/v1/openapi.yaml"} == set(OPENAPI["paths"])
    response = await hub.client.get("/api/v1/openapi.yaml")
    assert yaml.safe_load(await response.text()) == OPENAPI


async def test_the_overview_counts_states_and_lists_problems_worst_first(hub: Hub) -> None:
    doc = await hub.json("/api/v1/clusters")
    s = doc["summary"]
    assert (s["clusters"], s["syncs"], s["ready"], s["failed"], s["pending"], s["drifted_objects"]) == (
        2,
        4,
        2,
        1,
        1,
        2,
    )
    assert [(p["what"], p["cluster"], p["sync"]) for p in doc["problems"]] == [
        ("rollout", None, None),  # wave 0 failed at the target: later waves would wait
        ("failed", "a", "t"),
        ("drifted", "b", "s"),
    ]


async def test_a_sync_names_its_error_objects_and_files(hub: Hub) -> None:
    doc = await hub.json("/api/v1/clusters/a/syncs/t")
    assert doc["state"] == "failed"
    assert doc["last_error"]["objects"] == ["ConfigMap ns/x"]
    assert doc["last_error"]["files"] == [{"path": "apps/web.yaml", "line": 2}]
    assert [e["kind"] for e in doc["history"]] == ["reconcile.failed"]


async def test_a_suspension_shows_at_once_as_the_syncs_state(hub: Hub) -> None:
    hub.state.set_suspended("a", "s", True)
    assert (await hub.json("/api/v1/clusters/a/syncs/s"))["state"] == "suspended"


# -- events ------------------------------------------------------------------------------------


async def test_events_are_filtered_by_cluster_sync_kind_group_since_and_limit(hub: Hub) -> None:
    every = (await hub.json("/api/v1/events?limit=1000"))["events"]
    assert [e["id"] for e in every] == sorted((e["id"] for e in every), reverse=True)
    drift = (await hub.json("/api/v1/events?kind=drift"))["events"]
    assert drift
    assert {e["kind"] for e in drift} == {"drift.reported"}
    both = (await hub.json("/api/v1/events?kind=drift.reported,reconcile.failed&cluster=a"))["events"]
    assert [e["kind"] for e in both] == ["reconcile.failed"]
    assert len((await hub.json("/api/v1/events?cluster=b&sync=s&limit=1"))["events"]) == 1
    assert (await hub.json(f"/api/v1/events?since={time.time() + 60:.0f}"))["events"] == []
    assert (await hub.json("/api/v1/events?since=1h"))["count"] == len(every)
    newest = every[0]["id"]
    assert (await hub.json(f"/api/v1/events?after={newest - 1}"))["events"] == [every[0]]


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("kind=drfit", "unknown event kind 'drfit'"),
        ("limit=0", "limit=0 is out of range (1..1000)"),
        ("limit=many", "is not an integer"),
        ("since=yesterday", "give Unix seconds, an ISO 8601 time or a duration"),
    ],
)
async def test_bad_event_filters_are_refused_with_the_fix(hub: Hub, query: str, words: str) -> None:
    assert words in (await hub.json(f"/api/v1/events?{query}", 400))["error"]


# -- the stream --------------------------------------------------------------------------------


async def read_events(response: Any, count: int) -> list[dict[str, Any]]:
    """The next ``count`` SSE messages (id from ``id:``, the event from ``data:``)."""
    found: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while len(found) < count:
            line = (await response.content.readline()).decode()
            if line.startswith("data: "):
                found.append(json.loads(line[6:]))
    return found


async def test_the_stream_replays_after_last_event_id_then_goes_live_without_gaps(hub: Hub) -> None:
    journal = hub.state.events(limit=1000)
    resume_from = journal[1].id
    response = await hub.client.get("/api/v1/stream", headers={"Last-Event-ID": str(resume_from)})
    assert response.headers["Content-Type"] == "text/event-stream"
    replayed = await read_events(response, len(journal) - 2)
    assert [e["id"] for e in replayed] == [e.id for e in journal[2:]]
    hub.state.operator("live one", cluster="a")
    hub.state.operator("live two", cluster="b")
    live = await read_events(response, 2)
    assert [e["message"] for e in live] == ["live one", "live two"]
    assert live[0]["id"] == journal[-1].id + 1
    response.close()


async def test_the_stream_applies_the_filters_to_live_events(hub: Hub) -> None:
    response = await hub.client.get("/api/v1/stream?cluster=b&kind=operator")
    hub.state.operator("for a", cluster="a")
    drifted(hub.state, "b", "t", 1)
    hub.state.operator("for b", cluster="b")
    assert [e["message"] for e in await read_events(response, 1)] == ["for b"]
    response.close()


async def test_a_stream_without_a_numeric_last_event_id_is_a_400(hub: Hub) -> None:
    assert (await hub.client.get("/api/v1/stream", headers={"Last-Event-ID": "x1"})).status == 400


async def test_open_streams_do_not_hold_up_the_server_stop(tmp_path: Path) -> None:
    state, port = populated(tmp_path), free_port()
    task = asyncio.create_task(
        serve(View(), state, host="127.0.0.1", port=port, github_secret=None, generic_secret=None)
    )
    async with TestClient(TestServer(web.Application())) as helper:
        for _ in range(50):
            try:
                stream = await helper.session.get(f"http://127.0.0.1:{port}/api/v1/stream")
                break
            except OSError:
                await asyncio.sleep(0.05)
        await stream.content.readline()
        started = time.monotonic()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert time.monotonic() - started < SHUTDOWN_TIMEOUT
        stream.close()


# -- security ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/", "/clusters/a/syncs/t", "/api/v1/clusters", "/static/app.js", "/nope", "/clusters/zz"]
)
async def test_every_answer_forbids_framing_and_inline_script(hub: Hub, path: str) -> None:
    response = await hub.client.get(path)
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_pages_have_no_inline_script_or_style_and_escape_what_the_fleet_says(hub: Hub) -> None:
    for path in ("/", "/rollout", "/events", "/clusters/a", "/clusters/a/syncs/t", "/login"):
        text = await (await hub.client.get(path)).text()
        for inline in ("<script>", " style=", "<style"):
            assert inline not in text, path
        assert "javascript:" not in text
    sync_page = await (await hub.client.get("/clusters/a/syncs/t")).text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in sync_page


async def test_a_fragment_is_one_region_of_its_page(hub: Hub) -> None:
    text = await (await hub.client.get("/?fragment=matrix")).text()
    assert text.startswith("<h2>")
    assert 'data-cluster="a" data-sync="t"' in text
    assert "<html" not in text
    assert (await hub.client.get("/?fragment=nope")).status == 404


# -- actions -------------------------------------------------------------------------------------


async def test_actions_are_refused_when_the_inventory_does_not_enable_them(tmp_path: Path) -> None:
    async for hub in hub_for(tmp_path, actions=False):
        response = await hub.client.post(
            "/api/v1/actions/reconcile", json={}, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert response.status == 403
        assert "set [web] actions = true" in (await response.json())["error"]
        assert 'data-verb="reconcile"' not in await (await hub.client.get("/clusters/a/syncs/s")).text()
        assert hub.daemon.calls == []


@pytest.mark.parametrize("header", [None, "Bearer wrong-token-wrong-token", "Basic YWxpY2U6eA=="])
async def test_actions_without_a_valid_token_are_refused_with_401(hub: Hub, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = await hub.client.post("/api/v1/actions/reconcile", json={"cluster": "a"}, headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert hub.daemon.calls == []


async def test_an_action_with_a_token_is_done_and_recorded_with_who_asked(hub: Hub) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    response = await hub.client.post(
        "/api/v1/actions/suspend", json={"cluster": "a", "sync": "s"}, headers=headers
    )
    assert response.status == 200, await response.text()
    assert hub.daemon.calls == [("suspend", "a", "s")]
    (event,) = hub.state.events(kinds=("operator.action",), limit=1)
    assert event.message.startswith("alice asked to suspend of a/s (web, from 127.0.0.1")
    assert (event.cluster, event.sync) == ("a", "s")
    for verb in ("rollout-hold", "rollout-promote", "reconcile"):
        assert (await hub.client.post(f"/api/v1/actions/{verb}", json={}, headers=headers)).status == 200
    assert [c[0] for c in hub.daemon.calls[1:]] == ["hold", "promote", "trigger"]


@pytest.mark.parametrize(
    ("verb", "body", "status"),
    [
        ("reconcile", {"cluster": "zz"}, 404),
        ("reconcile", {"cluster": "a", "sync": "zz"}, 404),
        ("suspend", {}, 400),
        ("rollout-hold", {"cluster": "a"}, 400),
        ("explode", {}, 404),
    ],
)
async def test_actions_on_what_the_inventory_lacks_are_refused_before_anything_is_done(
    hub: Hub, verb: str, body: dict[str, str], status: int
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    response = await hub.client.post(f"/api/v1/actions/{verb}", json=body, headers=headers)
    assert response.status == status
    assert hub.daemon.calls == []
    assert not hub.state.events(kinds=("operator.action",))


async def test_guessing_tokens_is_slowed_down_to_a_few_tries_a_minute(hub: Hub) -> None:
    statuses = []
    for i in range(25):
        headers = {"Authorization": f"Bearer guess-{i:020d}"}
        statuses.append((await hub.client.post("/api/v1/actions/reconcile", json={}, headers=headers)).status)
    assert statuses[:20] == [401] * 20
    assert set(statuses[20:]) == {429}


async def test_a_browser_session_acts_only_from_the_same_origin(hub: Hub) -> None:
    login = await hub.client.post(
        "/login", data={"token": TOKEN, "next": "/"}, allow_redirects=False,
        headers={"Origin": hub.origin},
    )  # fmt: skip
    assert login.status == 303
    cookie = login.cookies["fleetd_session"]
    assert TOKEN not in cookie.value
    assert cookie["httponly"]
    assert cookie["samesite"] == "Strict"
    form = {"verb": "reconcile", "cluster": "a", "next": "/clusters/a"}
    foreign = await hub.client.post(
        "/ui/action", data=form, headers={"Origin": "https://evil.example"}, allow_redirects=False
    )
    assert foreign.status == 403
    assert hub.daemon.calls == []
    own = await hub.client.post(
        "/ui/action", data=form, headers={"Origin": hub.origin}, allow_redirects=False
    )
    assert (own.status, own.headers["Location"]) == (303, "/clusters/a")
    assert hub.daemon.calls == [("trigger", "a", None)]


async def test_after_login_only_paths_on_this_server_are_returned_to(hub: Hub) -> None:
    origin = {"Origin": hub.origin}
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        login = await hub.client.post(
            "/login", data={"token": TOKEN, "next": target}, headers=origin, allow_redirects=False
        )
        assert login.headers["Location"] == "/"


async def test_tokens_never_appear_in_logs_or_answers(hub: Hub, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    origin = {"Origin": hub.origin}
    texts = [
        await (await hub.client.post("/login", data={"token": TOKEN + "x"}, headers=origin)).text(),
        await (await hub.client.post("/login", data={"token": TOKEN}, headers=origin)).text(),
        await (
            await hub.client.post(
                "/api/v1/actions/reconcile", json={}, headers={"Authorization": f"Bearer {TOKEN}"}
            )
        ).text(),
        await (await hub.client.get("/api/v1/clusters")).text(),
    ]
    for text in (caplog.text, *texts):
        assert TOKEN not in text


# -- reads beyond loopback -----------------------------------------------------------------------


async def test_beyond_loopback_the_ui_and_api_ask_for_the_token_but_probes_do_not(tmp_path: Path) -> None:
    async for hub in hub_for(tmp_path, loopback=False):
        assert (await hub.client.get("/api/v1/clusters")).status == 401
        assert (await hub.client.get("/api/v1/status")).status == 401
        page = await hub.client.get("/clusters/a", allow_redirects=False)
        assert page.status == 303
        location = urlsplit(page.headers["Location"])
        assert (location.path, parse_qs(location.query)) == ("/login", {"next": ["/clusters/a"]})
        for open_path in ("/healthz", "/metrics", "/login", "/static/app.css"):
            assert (await hub.client.get(open_path)).status == 200, open_path
        authorised = await hub.client.get("/api/v1/clusters", headers={"Authorization": f"Bearer {TOKEN}"})
        assert authorised.status == 200


async def test_beyond_loopback_reads_are_open_when_the_inventory_says_so_explicitly(tmp_path: Path) -> None:
    async for hub in hub_for(tmp_path, loopback=False, allow_unauthenticated=True):
        assert (await hub.client.get("/api/v1/clusters")).status == 200


async def test_a_bad_token_file_stops_the_server_before_it_listens(tmp_path: Path) -> None:
    state = populated(tmp_path)
    assert state.fleet.web.token_file is not None
    state.fleet.web.token_file.write_text("alice:short\n")
    ready = asyncio.Event()
    with pytest.raises(TokenFileError, match=r"web.tokens:1: the token of 'alice' is shorter than 16"):
        await serve(
            View(),
            state,
            host="127.0.0.1",
            port=free_port(),
            ready=ready,
            github_secret=None,
            generic_secret=None,
        )
    assert not ready.is_set()


async def test_a_token_file_broken_by_a_reload_keeps_reads_closed_and_refuses_actions(tmp_path: Path) -> None:
    async for hub in hub_for(tmp_path, loopback=False, actions=True):
        broken = tmp_path / "other.tokens"
        broken.write_text("alice:short\n")
        hub.state.fleet = dataclasses.replace(
            hub.state.fleet, web=WebSettings(actions=True, token_file=broken)
        )  # what a reload to a bad file does
        assert (await hub.client.get("/api/v1/clusters")).status == 401
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert (await hub.client.post("/api/v1/actions/reconcile", json={}, headers=headers)).status == 403
        assert hub.daemon.calls == []
