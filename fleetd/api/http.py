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
call's body is read (at most `MAX_BODY` bytes, else 413; within
`BODY_TIMEOUT`, else 408), verified, counted in
``fleetd_webhook_requests_total``, logged in one line (never with the secret
or the signature; at most one line per kind of answer every
`fleetd.util.ratelimit.EVERY` seconds, saying how many were held back) and
answered as JSON ``{"result", "message"}``. A valid push asks for a fetch
through `fleetd.api.fetchgate`, so a burst of pushes costs at most two.

**Limits.** Nobody needs credentials to open a connection, so connections
are bounded: a request head must arrive within `HEADER_TIMEOUT` of
connecting (or of the previous answer on a kept-alive connection), and at
most `connection_limit` connections are open at once — when full, the
oldest one still idle is closed for the newcomer
(`fleetd.api.connections`), so ``/healthz`` answers under a flood of idle
connections and file descriptors stay in budget.

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
from fleetd.api.connections import ConnectionGuard
from fleetd.api.fetchgate import FetchGate
from fleetd.api.inspect import Live
from fleetd.api.metrics import CONTENT_TYPE, Registry, exposition, registry
from fleetd.api.webhooks import RECEIVERS, Result, Secret, Verdict, Verifier, for_source
from fleetd.daemon.state import FleetState
from fleetd.errors import FleetdError
from fleetd.inventory import GitRef
from fleetd.inventory.web import is_loopback
from fleetd.util.fdlimit import open_files_limit
from fleetd.util.ratelimit import LogLimiter

log = logging.getLogger(__name__)

MAX_BODY: Final = 1024 * 1024
"""Largest request body accepted (bytes); webhook payloads are far smaller."""
SHUTDOWN_TIMEOUT: Final = 3.0
"""Seconds open connections get to finish when the server stops."""
HEADER_TIMEOUT: Final = 15.0
"""Seconds a connection may stay open without sending a complete request head."""
BODY_TIMEOUT: Final = 15.0
"""Seconds a webhook's body may take to arrive."""
MAX_CONNECTIONS: Final = 1024
"""Most connections open at once (lower when the open-file limit is low: `connection_limit`)."""

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
LOG_LIMIT: Final = web.AppKey("fleetd.log_limit", LogLimiter)
FETCH_GATE: Final = web.AppKey("fleetd.fetch_gate", FetchGate)


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
    app[LOG_LIMIT], app[FETCH_GATE] = LogLimiter(), FetchGate(view.trigger_fetch)
    app.on_cleanup.append(_close_gate)
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
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT,
        keepalive_timeout=HEADER_TIMEOUT,  # aiohttp closes a connection idle this long before a request
    )  # fmt: skip
    await runner.setup()
    listener: asyncio.Server | None = None
    try:
        listener = await _listen(runner, host, port)
        if ready is not None:
            ready.set()
        await asyncio.Future()  # until cancelled
    finally:
        if listener is not None:
            listener.close()
        await runner.cleanup()


def connection_limit() -> int:
    """`MAX_CONNECTIONS`, or a quarter of the open-file limit when that is lower (at least 16)."""
    return max(16, min(MAX_CONNECTIONS, open_files_limit() // 4))


async def _listen(runner: web.AppRunner, host: str, port: int) -> asyncio.Server:
    assert runner.server is not None
    guard = ConnectionGuard(runner.server, connection_limit())
    try:
        listener = await asyncio.get_running_loop().create_server(guard, host, port, backlog=128)
    except OSError as exc:
        raise ListenError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
            "change `listen` in the fleet file or stop what uses the port"
        ) from exc
    addresses = ", ".join(f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in listener.sockets)
    log.info("http: listening on %s (at most %d connections)", addresses, guard.limit)
    return listener


async def _close_gate(app: web.Application) -> None:
    app[FETCH_GATE].close()


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
            async with asyncio.timeout(BODY_TIMEOUT):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            verdict = Verdict(result=Result.TOO_LARGE, fetch=False, message=f"body over {MAX_BODY} bytes")
        except TimeoutError:
            message = f"the body did not arrive within {BODY_TIMEOUT:g}s"
            verdict = Verdict(result=Result.BAD_REQUEST, fetch=False, message=message)
        else:
            verdict = for_source(verify(secret, request.headers, body), request.app[VIEW].followed_ref())
        return _answer(request, name, verdict)

    return receive


def _answer(request: web.Request, receiver: str, verdict: Verdict) -> web.Response:
    request.app[STATE].webhook(receiver, str(verdict.result))
    if verdict.fetch:  # a burst of pushes is at most two fetches (fleetd.api.fetchgate)
        request.app[FETCH_GATE].push()
    held = request.app[LOG_LIMIT].allow((receiver, verdict.result, verdict.message))
    if held is not None:  # a flood of calls is one line every few seconds, plus the metric
        level = logging.INFO if verdict.result in (Result.ACCEPTED, Result.IGNORED) else logging.WARNING
        more = f" ({held} more like it since the last line)" if held else ""
        log.log(level, "webhook %s from %s: %s: %s%s", receiver, request.remote, verdict.result,
                verdict.message, more)  # fmt: skip
    status = 202 if verdict.fetch else _STATUS.get(verdict.result, 200)
    return web.json_response({"result": verdict.result, "message": verdict.message}, status=status)
