"""The HTTP server: metrics, health, the status API and webhooks, as one task of the daemon.

aiohttp's server enters fleetd only here. `serve` runs an `AppRunner` and a
`TCPSite` inside the daemon's task group (not ``run_app``, which would own
the event loop and the signals): it listens until the task is cancelled,
then closes connections within `SHUTDOWN_TIMEOUT`, well inside the
daemon's own stop bound.

Endpoints::

    GET  /metrics        Prometheus text format, read from the fleet state at scrape time
    GET  /healthz        200 "ok" while the event loop answers (liveness)
    GET  /readyz         200 once the inventory is loaded and the source fetched, else 503 + reason
    GET  /api/v1/status  JSON from FleetView.status_document()
    POST /hooks/github   GitHub webhook (only with a GitHub secret file configured)
    POST /hooks/generic  HMAC-signed webhook (only with a generic secret file configured)
    GET  /, /api/v1/...  the web UI and the history/detail API (`fleetd.api.routes`)

The server knows the daemon only through the small `FleetView` protocol, so
this module does not import the daemon and tests serve a plain dataclass.
Webhook verification is pure and lives in :mod:`fleetd.api.webhooks`; here a
call's body is read (at most `MAX_BODY` bytes, else 413), verified, counted
in ``fleetd_webhook_requests_total``, logged in one line (never with the
secret or the signature) and answered as JSON ``{"result", "message"}``.

The server binds to the inventory's ``listen`` address, loopback by default.
Beyond loopback the inventory demands ``[web] token_file`` (or an explicit
``allow_unauthenticated``), and the UI and API then ask for the token
(`fleetd.api.auth`); a bad token file stops the server before it listens.
There is no access log; a scrape every few seconds would drown the journal.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final, Protocol

from aiohttp import web

from fleetd.api import routes
from fleetd.api.inspect import Live
from fleetd.api.metrics import CONTENT_TYPE, Registry, exposition, registry
from fleetd.api.webhooks import RECEIVERS, Result, Secret, Verdict, Verifier, for_source
from fleetd.daemon.state import FleetState
from fleetd.errors import FleetdError
from fleetd.inventory import GitRef
from fleetd.inventory.web import is_loopback

log = logging.getLogger(__name__)

MAX_BODY: Final = 1024 * 1024
"""Largest request body accepted (bytes); webhook payloads are far smaller."""
SHUTDOWN_TIMEOUT: Final = 3.0
"""Seconds open connections get to finish when the server stops."""

_STATUS: Final = {
    Result.IGNORED: 200,
    Result.UNAUTHORIZED: 401,
    Result.TOO_LARGE: 413,
    Result.BAD_REQUEST: 400,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FleetView(Protocol):
    """What the server needs from the daemon."""

    def status_document(self) -> dict[str, Any]:
        """JSON-able status with nothing secret in it.

        Shape: ``{fleet, source: {url (redacted), ref, revision, last_error,
        last_fetch}, clusters: [{name, reachable, last_error, syncs: [{name,
        revision, result, objects, drifted, error, attempted_at,
        succeeded_at}]}]}``.
        """
        ...

    def ready(self) -> tuple[bool, str]:
        """Whether the inventory is loaded and the source fetched at least once, and why not."""
        ...

    def trigger_fetch(self) -> None:
        """Fetch the repository now and reconcile what changed."""
        ...

    def followed_ref(self) -> GitRef:
        """The ref the source follows now (pushes to other refs are acknowledged and ignored)."""
        ...


class ListenError(FleetdError):
    """The HTTP server cannot listen on the configured address."""


VIEW: Final = web.AppKey[FleetView]("fleetd.view")
STATE: Final = web.AppKey("fleetd.state", FleetState)
METRICS: Final = web.AppKey("fleetd.metrics", Registry)


def load_secrets(
    *, github: Path | None, generic: Path | None, gitlab: Path | None = None
) -> dict[str, Secret]:
    """Secrets of the configured receivers, read once; raises `WebhookSecretError`."""
    paths = {"github": github, "generic": generic, "gitlab": gitlab}
    return {name: Secret.read(path) for name, path in paths.items() if path is not None}


def make_app(
    view: FleetView, state: FleetState, secrets: Mapping[str, Secret], *, loopback: bool = True
) -> web.Application:
    """The application: fixed endpoints, the web UI and API, and one webhook route per configured secret.

    The UI's actions, diffs and live object health need the running daemon:
    they are offered when ``view`` is one (`fleetd.api.inspect.Live`).
    ``loopback``: the server listens on loopback only (reads need no token).
    Raises `TokenFileError` for a bad ``[web] token_file``.
    """
    app = web.Application(client_max_size=MAX_BODY)
    app[VIEW], app[STATE], app[METRICS] = view, state, registry(state)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/api/v1/status", _status)
    for name, secret in secrets.items():
        app.router.add_post(f"/hooks/{name}", _webhook(name, RECEIVERS[name], secret))
    routes.setup(app, state, view if isinstance(view, Live) else None, loopback=loopback)
    return app


async def serve(
    view: FleetView,
    state: FleetState,
    *,
    host: str,
    port: int,
    github_secret: Path | None,
    generic_secret: Path | None,
    gitlab_secret: Path | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Serve until cancelled; `ready` is set once the socket listens.

    Raises `WebhookSecretError` (bad secret file), `TokenFileError` (bad
    access token file) or `ListenError` (address in use, not local) before
    listening.
    """
    secrets = load_secrets(github=github_secret, generic=generic_secret, gitlab=gitlab_secret)
    app = make_app(view, state, secrets, loopback=is_loopback(host))
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        await _listen(runner, host, port)
        if ready is not None:
            ready.set()
        await asyncio.Future()  # until cancelled
    finally:
        await runner.cleanup()


async def _listen(runner: web.AppRunner, host: str, port: int) -> None:
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        raise ListenError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
            "change `listen` in the fleet file or stop what uses the port"
        ) from exc
    log.info("http: listening on %s", ", ".join(f"{a[0]}:{a[1]}" for a in runner.addresses))


# -- handlers ------------------------------------------------------------------


async def _metrics(request: web.Request) -> web.Response:
    body = exposition(request.app[METRICS])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    ok, reason = request.app[VIEW].ready()
    return web.Response(text=f"{reason or 'ready'}\n", status=200 if ok else 503)


async def _status(request: web.Request) -> web.Response:
    return web.json_response(request.app[VIEW].status_document())


def _webhook(name: str, verify: Verifier, secret: Secret) -> Handler:
    async def receive(request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            verdict = Verdict(result=Result.TOO_LARGE, fetch=False, message=f"body over {MAX_BODY} bytes")
        else:
            verdict = for_source(verify(secret, request.headers, body), request.app[VIEW].followed_ref())
        return _answer(request, name, verdict)

    return receive


def _answer(request: web.Request, receiver: str, verdict: Verdict) -> web.Response:
    request.app[STATE].webhook(receiver, str(verdict.result))
    if verdict.fetch:
        request.app[VIEW].trigger_fetch()
    level = logging.INFO if verdict.result in (Result.ACCEPTED, Result.IGNORED) else logging.WARNING
    log.log(level, "webhook %s from %s: %s: %s", receiver, request.remote, verdict.result, verdict.message)
    status = 202 if verdict.fetch else _STATUS.get(verdict.result, 200)
    return web.json_response({"result": verdict.result, "message": verdict.message}, status=status)
