"""The daemon's local control API: a Unix socket the ``fleetd`` CLI talks to.

Commands that act on a running daemon (``reconcile``, ``suspend``,
``resume``, ``rollout``, ``reload``) go through this socket, never around
the daemon. It lives in the state directory as ``fleetd.sock`` with mode
``0600``: only the daemon's own user (and root) can connect, which is the
whole authentication — nothing listens on the network for these commands.

Requests and answers are small JSON documents; errors come back as
``{"error": "..."}`` with a 4xx status and a message the CLI prints as is.
A malformed request — a body that is not a JSON object, a cluster or sync
that is not a string, a body over `MAX_BODY`, an unknown path or method — is
answered 4xx with a message saying what is wrong, never 500; the
`_json_errors` middleware turns every error page into that JSON form.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, Protocol

import aiohttp
from aiohttp import web

from fleetd.errors import FleetdError

log = logging.getLogger(__name__)

SOCKET_NAME = "fleetd.sock"
MAX_BODY = 64 * 1024
"""Largest request body accepted (bytes); commands are a few dozen."""


class ControlError(FleetdError):
    """The daemon refused a command, or cannot be reached."""


class Controllable(Protocol):
    """What the control API needs from the daemon."""

    def status_document(self) -> dict[str, Any]: ...
    def trigger(self, cluster: str | None = None, sync: str | None = None) -> None: ...
    def suspend(self, cluster: str, sync: str | None) -> None: ...
    def resume_sync(self, cluster: str, sync: str | None) -> None: ...
    def hold(self) -> None: ...
    def resume(self) -> None: ...
    def promote(self) -> None: ...
    def request_reload(self) -> None: ...
    def allow_prune(self, cluster: str, sync: str) -> None: ...


DAEMON: Final = web.AppKey("fleetd.daemon", Controllable)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


class BadRequest(web.HTTPBadRequest):
    """A malformed command; the text says what is wrong (answered as ``{"error": text}``)."""

    def __init__(self, message: str) -> None:
        super().__init__(text=message)


def _target(body: dict[str, Any]) -> tuple[str | None, str | None]:
    found: list[str | None] = []
    for key in ("cluster", "sync"):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"{key} must be a string, not {type(value).__name__}")
        found.append(value or None)
    return found[0], found[1]


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"the body must be a JSON object, not {type(data).__name__}")
    return data


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal as ``{"error": message}`` with its status, so the CLI can print it as it is."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = f"{exc.reason}: {request.method} {request.path}"
        if isinstance(exc, BadRequest):
            message = exc.text or message
        elif isinstance(exc, web.HTTPRequestEntityTooLarge):
            message = f"the body is larger than {MAX_BODY} bytes"
        return web.json_response({"error": message}, status=exc.status)
    except Exception as exc:  # a bug answers 500 with its name, and the socket keeps serving
        log.exception("control socket: %s %s failed", request.method, request.path)
        return web.json_response({"error": f"internal error: {type(exc).__name__}: {exc}"}, status=500)


def _answer(action: Callable[[], None], done: str) -> web.Response:
    try:
        action()
    except ControlError as exc:
        return web.json_response({"error": str(exc)}, status=404)
    return web.json_response({"ok": True, "message": done})


async def _status(request: web.Request) -> web.Response:
    return web.json_response(request.app[DAEMON].status_document())


async def _reconcile(request: web.Request) -> web.Response:
    cluster, sync = _target(await _body(request))
    what = f"{cluster or 'every cluster'}{'/' + sync if sync else ''}"
    return _answer(lambda: request.app[DAEMON].trigger(cluster, sync), f"reconcile of {what} requested")


async def _suspend(request: web.Request) -> web.Response:
    cluster, sync = _target(await _body(request))
    if cluster is None:
        return web.json_response({"error": "name a cluster to suspend"}, status=400)
    return _answer(
        lambda: request.app[DAEMON].suspend(cluster, sync), f"{cluster}{'/' + sync if sync else ''} suspended"
    )


async def _resume(request: web.Request) -> web.Response:
    cluster, sync = _target(await _body(request))
    if cluster is None:
        return web.json_response({"error": "name a cluster to resume"}, status=400)
    what = f"{cluster}{'/' + sync if sync else ''}"
    return _answer(lambda: request.app[DAEMON].resume_sync(cluster, sync), f"{what} resumed")


async def _rollout(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    actions = {"hold": daemon.hold, "resume": daemon.resume, "promote": daemon.promote}
    verb = request.match_info["verb"]
    if verb not in actions:
        return web.json_response({"error": f"unknown rollout command {verb!r}"}, status=404)
    return _answer(actions[verb], f"rollout {verb}: done")


async def _allow_prune(request: web.Request) -> web.Response:
    cluster, sync = _target(await _body(request))
    if cluster is None or sync is None:
        return web.json_response(
            {"error": "name a cluster and a sync: fleetd prune --allow CLUSTER SYNC"}, status=400
        )
    what = f"{cluster}/{sync}"
    return _answer(
        lambda: request.app[DAEMON].allow_prune(cluster, sync),
        f"the next reconcile of {what} may prune beyond its deletion budget",
    )


async def _reload(request: web.Request) -> web.Response:
    return _answer(request.app[DAEMON].request_reload, "reload requested")


def make_app(daemon: Controllable) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[_json_errors])
    app[DAEMON] = daemon
    app.router.add_get("/v1/status", _status)
    app.router.add_post("/v1/reconcile", _reconcile)
    app.router.add_post("/v1/suspend", _suspend)
    app.router.add_post("/v1/resume", _resume)
    app.router.add_post("/v1/rollout/{verb}", _rollout)
    app.router.add_post("/v1/reload", _reload)
    app.router.add_post("/v1/prune/allow", _allow_prune)
    return app


async def serve(daemon: Controllable, state_dir: Path) -> web.AppRunner:
    """Start the socket server; the caller cleans the runner up on shutdown."""
    path = socket_path(state_dir)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a stale socket of a daemon that died
    runner = web.AppRunner(make_app(daemon), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    await web.SockSite(runner, _private_socket(path)).start()
    return runner


def _private_socket(path: Path) -> socket.socket:
    """A Unix socket listening at `path` with mode 0600, never reachable with a looser mode.

    bind() gives the socket file the process umask's mode, and changing the
    umask would change it for every thread (the git source creates
    directories at the same time). So the socket is bound inside a fresh
    0700 directory, where nobody else can reach it, made 0600, and only then
    renamed into place.
    """
    private = Path(tempfile.mkdtemp(prefix=".control-", dir=path.parent))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        private.chmod(0o700)
        sock.bind(str(private / SOCKET_NAME))
        (private / SOCKET_NAME).chmod(0o600)
        (private / SOCKET_NAME).rename(path)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    finally:
        with contextlib.suppress(OSError):
            (private / SOCKET_NAME).unlink()
        private.rmdir()
    return sock


async def call(state_dir: Path, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send one command to the daemon of ``state_dir``; raise :class:`ControlError` on refusal."""
    sock = socket_path(state_dir)
    if not sock.exists():
        raise ControlError(f"fleetd is not running for this inventory (no control socket at {sock})")
    try:
        async with (
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as http,
            http.request(
                method, f"http://fleetd{path}", json=body, timeout=aiohttp.ClientTimeout(total=30)
            ) as resp,
        ):
            data = await resp.json()
    except (aiohttp.ClientError, json.JSONDecodeError, TimeoutError) as exc:
        raise ControlError(f"cannot talk to fleetd at {sock}: {exc}") from exc
    if resp.status >= 400:
        raise ControlError(str(data.get("error", f"refused ({resp.status})")))
    return dict(data)
