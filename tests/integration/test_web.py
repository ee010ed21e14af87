"""The HTTP server over real loopback HTTP: endpoints, webhooks, lifecycle, and a real Prometheus scraping it.

No test bed is needed: the daemon is stood in for by `View`, a tiny real
implementation of `FleetView`, not a mock of fleetd's engine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from fleetd.api.http import MAX_BODY, SHUTDOWN_TIMEOUT, ListenError, load_secrets, make_app, serve
from fleetd.api.metrics import CONTENT_TYPE
from fleetd.api.webhooks import (
    GENERIC_SIGNATURE,
    GITHUB_EVENT,
    GITHUB_SIGNATURE,
    Secret,
    WebhookSecretError,
    sign,
)
from fleetd.daemon.state import FleetState
from fleetd.inventory import GitRef, RefKind
from testbed.processes import free_port
from tests.fleetstate import drifted, fleet_state
from tests.prometheus import running_prometheus

pytestmark = pytest.mark.timeout(60)

GITHUB_SECRET = "gh-secret-0123456789abcdef"
GENERIC_SECRET = "generic-secret-fedcba9876543210"
PUSH = b'{"ref": "refs/heads/main", "after": "0123abcd"}'

Client = TestClient[web.Request, web.Application]


@dataclass
class View:
    """A daemon as the server sees it: a document, readiness, and a fetch counter."""

    document: dict[str, Any] = field(default_factory=lambda: {"fleet": "home", "clusters": []})
    reason: str = "the source has not been fetched yet"
    fetches: int = 0

    def status_document(self) -> dict[str, Any]:
        return self.document

    def ready(self) -> tuple[bool, str]:
        return (not self.reason, self.reason)

    def trigger_fetch(self) -> None:
        self.fetches += 1

    def followed_ref(self) -> GitRef:
        return GitRef(kind=RefKind.BRANCH, value="main")


@dataclass
class Hub:
    client: Client
    view: View
    state: FleetState

    async def hook(self, receiver: str, body: bytes, headers: dict[str, str]) -> aiohttp.ClientResponse:
        return await self.client.post(f"/hooks/{receiver}", data=body, headers=headers)

    async def webhook_count(self, receiver: str, result: str) -> float:
        """``fleetd_webhook_requests_total`` as served on /metrics (0 when absent)."""
        text = await (await self.client.get("/metrics")).text()
        wanted = {"receiver": receiver, "result": result}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "fleetd_webhook_requests_total" and s.labels == wanted:
                    return s.value
        return 0.0


def github(event: str, body: bytes = PUSH, secret: str = GITHUB_SECRET) -> dict[str, str]:
    return {GITHUB_SIGNATURE: sign(Secret(secret.encode()), body), GITHUB_EVENT: event}


def secret_files(tmp_path: Path) -> tuple[Path, Path]:
    (github_file := tmp_path / "github.secret").write_text(GITHUB_SECRET + "\n")
    (generic_file := tmp_path / "generic.secret").write_text(GENERIC_SECRET + "\n")
    return github_file, generic_file


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    github_file, generic_file = secret_files(tmp_path)
    view, state = View(), fleet_state(tmp_path / "fleet")
    app = make_app(view, state, load_secrets(github=github_file, generic=generic_file))
    async with TestClient(TestServer(app)) as client:
        yield Hub(client, view, state)


@asynccontextmanager
async def serving(view: View, state: FleetState, port: int, **secrets: Path | None) -> AsyncIterator[str]:
    """`serve` as the daemon runs it, in a task; yields its base URL; cancels it on exit."""
    ready = asyncio.Event()
    task = asyncio.create_task(
        serve(view, state, host="127.0.0.1", port=port, ready=ready,
              github_secret=secrets.get("github"), generic_secret=secrets.get("generic"))
    )  # fmt: skip
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()  # raises what serve raised
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# -- GitHub webhook --------------------------------------------------------------


async def test_a_signed_github_push_is_accepted_with_202_and_triggers_a_fetch(hub: Hub) -> None:
    response = await hub.hook("github", PUSH, github("push"))
    assert response.status == 202
    answer = {"result": "accepted", "message": "push event to refs/heads/main; fetching now"}
    assert await response.json() == answer
    assert hub.view.fetches == 1
    assert await hub.webhook_count("github", "accepted") == 1


async def test_a_github_ping_is_accepted_without_a_fetch(hub: Hub) -> None:
    response = await hub.hook("github", PUSH, github("ping"))
    assert response.status == 200
    assert (await response.json())["result"] == "accepted"
    assert hub.view.fetches == 0


async def test_other_github_events_are_ignored_with_200_and_a_message(hub: Hub) -> None:
    response = await hub.hook("github", PUSH, github("issues"))
    assert response.status == 200
    assert await response.json() == {"result": "ignored", "message": "issues event ignored"}
    assert hub.view.fetches == 0
    assert await hub.webhook_count("github", "ignored") == 1


@pytest.mark.parametrize(
    "headers",
    [
        {GITHUB_EVENT: "push"},
        {GITHUB_EVENT: "push", GITHUB_SIGNATURE: "sha256=" + "0" * 64},
        github("push", secret="not-the-secret"),
        github("push", body=b"a different body"),
    ],
    ids=["missing", "bad", "wrong-secret", "other-body"],
)
async def test_github_calls_without_a_valid_signature_get_401_and_are_counted(
    hub: Hub, headers: dict[str, str]
) -> None:
    response = await hub.hook("github", PUSH, headers)
    assert response.status == 401
    assert (await response.json())["result"] == "unauthorized"
    assert hub.view.fetches == 0
    assert await hub.webhook_count("github", "unauthorized") == 1


async def test_a_signed_github_call_without_an_event_is_a_400(hub: Hub) -> None:
    headers = {GITHUB_SIGNATURE: sign(Secret(GITHUB_SECRET.encode()), PUSH)}
    response = await hub.hook("github", PUSH, headers)
    assert response.status == 400
    assert await hub.webhook_count("github", "bad_request") == 1


async def test_a_body_over_the_limit_gets_413_and_is_counted(hub: Hub) -> None:
    body = b"x" * (MAX_BODY + 1)
    response = await hub.hook("github", body, github("push", body=body))
    assert response.status == 413
    assert hub.view.fetches == 0
    assert await hub.webhook_count("github", "too_large") == 1


async def test_a_body_at_the_limit_is_still_verified(hub: Hub) -> None:
    body = b"x" * MAX_BODY
    response = await hub.hook("github", body, github("push", body=body))
    assert response.status == 202


# -- generic webhook -------------------------------------------------------------


async def test_a_signed_generic_call_is_accepted_with_202_and_triggers_a_fetch(hub: Hub) -> None:
    headers = {GENERIC_SIGNATURE: sign(Secret(GENERIC_SECRET.encode()), b"deploy")}
    response = await hub.hook("generic", b"deploy", headers)
    assert response.status == 202
    assert hub.view.fetches == 1
    assert await hub.webhook_count("generic", "accepted") == 1


async def test_a_generic_call_signed_with_the_github_secret_gets_401(hub: Hub) -> None:
    headers = {GENERIC_SIGNATURE: sign(Secret(GITHUB_SECRET.encode()), b"deploy")}
    response = await hub.hook("generic", b"deploy", headers)
    assert response.status == 401
    assert await hub.webhook_count("generic", "unauthorized") == 1


async def test_webhook_routes_exist_only_for_configured_secrets(tmp_path: Path) -> None:
    _, generic_file = secret_files(tmp_path)
    app = make_app(View(), fleet_state(tmp_path / "fleet"), load_secrets(github=None, generic=generic_file))
    async with TestClient(TestServer(app)) as client:
        assert (await client.post("/hooks/github", data=PUSH, headers=github("push"))).status == 404
        assert (await client.post("/hooks/generic", data=b"")).status == 401


async def test_neither_secrets_nor_signatures_appear_in_logs(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = github("push", secret="not-the-secret")
    calls = [
        ("github", PUSH, github("push")),
        ("github", PUSH, github("ping")),
        ("github", PUSH, wrong),
        ("github", b"x" * (MAX_BODY + 1), github("push")),
        ("generic", b"go", {GENERIC_SIGNATURE: sign(Secret(GENERIC_SECRET.encode()), b"go")}),
    ]
    for receiver, body, headers in calls:
        await hub.hook(receiver, body, headers)
    outcomes = [r for r in caplog.records if r.name == "fleetd.api.http" and "webhook" in r.getMessage()]
    assert len(outcomes) == len(calls)  # one line per outcome
    signatures = [h[GITHUB_SIGNATURE] for _, _, h in calls if GITHUB_SIGNATURE in h]
    for forbidden in (GITHUB_SECRET, GENERIC_SECRET, "not-the-secret", *(s[7:] for s in signatures)):
        assert forbidden not in caplog.text


# -- health, readiness, status, metrics -----------------------------------------


async def test_healthz_answers_ok(hub: Hub) -> None:
    response = await hub.client.get("/healthz")
    assert (response.status, await response.text()) == (200, "ok\n")


async def test_readyz_is_503_with_the_reason_until_the_daemon_is_ready_then_200(hub: Hub) -> None:
    response = await hub.client.get("/readyz")
    assert (response.status, await response.text()) == (503, "the source has not been fetched yet\n")
    hub.view.reason = ""
    response = await hub.client.get("/readyz")
    assert (response.status, await response.text()) == (200, "ready\n")


async def test_the_status_api_serves_the_daemons_document_as_json(hub: Hub) -> None:
    hub.view.document = {
        "fleet": "home",
        "source": {"url": "https://git.example/fleet.git", "ref": "branch main", "revision": "abc"},
        "clusters": [{"name": "pi5", "reachable": True, "syncs": [{"name": "apps", "result": "ready"}]}],
    }
    response = await hub.client.get("/api/v1/status")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == hub.view.document


async def test_metrics_are_served_in_the_prometheus_text_format(hub: Hub) -> None:
    drifted(hub.state, "a", "s", 2)
    response = await hub.client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE
    families = {f.name: f for f in text_string_to_metric_families(await response.text())}
    assert families["fleetd_drifted_objects"].samples[0].value == 2


# -- lifecycle -------------------------------------------------------------------


async def test_serve_listens_sets_ready_and_stops_in_time_when_cancelled(tmp_path: Path) -> None:
    port = free_port()
    async with aiohttp.ClientSession() as session:
        async with serving(View(), fleet_state(tmp_path / "fleet"), port) as url:
            async with session.get(f"{url}/healthz") as response:
                assert response.status == 200
            started = time.monotonic()
        assert time.monotonic() - started < SHUTDOWN_TIMEOUT + 1
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"{url}/healthz")


async def test_serve_refuses_an_empty_secret_file_before_listening(tmp_path: Path) -> None:
    (empty := tmp_path / "github.secret").write_text("\n")
    ready = asyncio.Event()
    with pytest.raises(WebhookSecretError, match="is empty"):
        await serve(View(), fleet_state(tmp_path / "fleet"), host="127.0.0.1", port=free_port(), ready=ready,
                    github_secret=empty, generic_secret=None)  # fmt: skip
    assert not ready.is_set()


async def test_serve_names_the_address_when_the_port_is_taken(tmp_path: Path) -> None:
    port = free_port()
    async with serving(View(), fleet_state(tmp_path / "fleet"), port):
        with pytest.raises(ListenError, match=f"127.0.0.1:{port}.*change `listen`"):
            await serve(View(), fleet_state(tmp_path / "fleet"), host="127.0.0.1", port=port,
                        github_secret=None, generic_secret=None)  # fmt: skip


# -- a real Prometheus -----------------------------------------------------------


async def test_a_real_prometheus_scrapes_the_drift_metric(tmp_path: Path) -> None:
    state = fleet_state(tmp_path / "fleet", clusters=("a",), syncs=("s",))
    drifted(state, "a", "s", 2)
    port = free_port()
    async with (
        serving(View(), state, port),
        running_prometheus(tmp_path / "prometheus", [f"127.0.0.1:{port}"]) as prom,
    ):
        result = await prom.wait_for("fleetd_drifted_objects")
        assert [(r["metric"]["cluster"], r["metric"]["sync"], r["value"][1]) for r in result] == [
            ("a", "s", "2")
        ]
        (up,) = await prom.query('up{job="fleetd"}')
        assert up["value"][1] == "1"
