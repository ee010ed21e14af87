"""The web UI and the history/detail API on aiohttp: routes, access checks and security headers.

The documents come from `fleetd.api.v1`, the pages from `fleetd.api.pages`,
the stream from `fleetd.api.stream`; this module only speaks HTTP. Routes::

    GET  /                                   overview (clusters by syncs, problems first)
    GET  /rollout, /events                   rollout and event timeline pages
    GET  /clusters/{c}[/syncs/{s}]           cluster and sync pages (?fragment=<region>, ?diff=1)
    GET  /login  POST /login  POST /logout   a browser session from an access token
    POST /ui/action                          an operator action from a page's button
    GET  /static/{name}                      the stylesheet, the script, the icon
    GET  /api/v1/clusters[/{c}[/syncs/{s}[/diff]]]
    GET  /api/v1/events  /api/v1/revisions  /api/v1/stream (SSE)  /api/v1/openapi.yaml
    POST /api/v1/actions/{verb}              {"cluster": ..., "sync": ...}

**Security.** Every answer carries a Content-Security-Policy without inline
script or style (``script-src 'self'``), ``frame-ancestors 'none'`` and
``X-Frame-Options: DENY``, ``nosniff`` and a same-origin referrer policy.
Reads need a token only where `fleetd.api.auth.Access` says so. Actions
need ``[web] actions``, a valid token (``Authorization: Bearer`` or the
session cookie) and, for a cookie, a request from this very origin
(``Origin``), so another site cannot make a logged-in browser act. Failed
token attempts are counted per client and answered with 429 beyond
`fleetd.api.auth.Failures.limit` a minute. Tokens never reach a log line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from fleetd.api import actions, pages, stream, v1
from fleetd.api.auth import Access, Failures, TokenFileError, Tokens
from fleetd.api.html import STATIC, layout
from fleetd.api.inspect import Inspector, Live
from fleetd.daemon.events import Subscription
from fleetd.daemon.state import FleetState

log = logging.getLogger(__name__)

SESSION_COOKIE: Final = "fleetd_session"
MAX_STREAMS: Final = 64
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_TYPES: Final = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
OPENAPI: Final = resources.files("fleetd.api").joinpath("openapi.yaml").read_bytes()
#: Paths that never need a token: probes, metrics, webhooks (signed), assets, the login page.
_OPEN: Final = ("/healthz", "/readyz", "/metrics", "/hooks/", "/static/", "/login")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class Web:
    """Everything the web routes share."""

    state: FleetState
    inspector: Inspector
    access: Access
    live: Live | None
    failures: Failures = field(default_factory=Failures)
    streams: set[Subscription] = field(default_factory=set)


WEB: Final = web.AppKey("fleetd.web", Web)


def setup(app: web.Application, state: FleetState, live: Live | None, *, loopback: bool) -> None:
    """Add the web routes, the middleware and the shutdown hook to ``app``."""
    tokens: dict[str, Tokens] = {}
    broken: set[str] = set()

    def current_tokens() -> Tokens | None:
        path = state.fleet.web.token_file
        if path is None:
            return None
        if str(path) not in tokens:  # at start, or the inventory named another file
            try:
                found = Tokens(path)
            except TokenFileError as exc:
                if not app.frozen:
                    raise  # at start: the server does not listen with a bad token file
                if str(path) not in broken:
                    broken.add(str(path))
                    log.error("web: %s; nobody can log in or act until it is fixed", exc)  # noqa: TRY400
                return None
            broken.discard(str(path))
            tokens.clear()
            tokens[str(path)] = found
        return tokens[str(path)]

    access = Access(settings=lambda: state.fleet.web, tokens=current_tokens, loopback=loopback)
    current_tokens()  # a bad token file stops the server before it listens (TokenFileError)
    app[WEB] = Web(state=state, inspector=Inspector(state, live), access=access, live=live)
    app.middlewares.append(_guard)
    app.on_shutdown.append(_end_streams)
    r = app.router
    for path, handler in (
        ("/", _overview), ("/rollout", _rollout), ("/events", _events_page),
        ("/clusters/{cluster}", _cluster_page), ("/clusters/{cluster}/syncs/{sync}", _sync_page),
        ("/login", _login_page), ("/static/{name}", _static),
        ("/api/v1/clusters", _api_clusters), ("/api/v1/clusters/{cluster}", _api_cluster),
        ("/api/v1/clusters/{cluster}/syncs/{sync}", _api_sync),
        ("/api/v1/clusters/{cluster}/syncs/{sync}/diff", _api_diff),
        ("/api/v1/events", _api_events), ("/api/v1/revisions", _api_revisions),
        ("/api/v1/stream", _api_stream), ("/api/v1/openapi.yaml", _openapi),
    ):  # fmt: skip
        r.add_get(path, handler)
    r.add_post("/login", _login)
    r.add_post("/logout", _logout)
    r.add_post("/ui/action", _ui_action)
    r.add_post("/api/v1/actions/{verb}", _api_action)


# -- middleware ------------------------------------------------------------------------------


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Security headers on every answer; a token for reads where the policy asks for one."""
    try:
        if _needs_login(request):
            response: web.StreamResponse = _unauthenticated(request)
        else:
            response = await handler(request)
    except v1.Problem as exc:
        response = _problem(request, exc.status, str(exc))
    except web.HTTPException as exc:
        exc.headers.update(HEADERS)
        raise
    if not response.prepared:
        response.headers.update(HEADERS)
    return response


def _needs_login(request: web.Request) -> bool:
    w = request.app[WEB]
    if not w.access.reads_need_token or request.path.startswith(_OPEN):
        return False
    if request.path == "/logout" or (
        request.method == "POST" and request.path.startswith(("/ui/", "/api/v1/actions"))
    ):
        return False  # these check the token themselves
    return _who(request) is None


def _unauthenticated(request: web.Request) -> web.StreamResponse:
    if request.path.startswith("/api/"):
        return _json_error(401, "this API needs an access token: Authorization: Bearer <token>", bearer=True)
    raise web.HTTPSeeOther("/login?" + urlencode({"next": request.path_qs}))


async def _end_streams(app: web.Application) -> None:
    for sub in list(app[WEB].streams):
        stream.end(sub)


def _who(request: web.Request) -> str | None:
    """The name behind the request's token or session; failures are counted per client."""
    w = request.app[WEB]
    header = request.headers.get("Authorization", "")
    bearer = header[7:].strip() if header.lower().startswith("bearer ") else None
    cookie = request.cookies.get(SESSION_COOKIE)
    if not bearer and not cookie:
        return None
    client = request.remote or "unknown"
    if w.failures.blocked(client):
        raise v1.Problem(429, "too many failed token attempts from this address; wait a minute")
    name = w.access.who(bearer=bearer, cookie=None if bearer else cookie)
    if name is None:
        w.failures.failed(client)
        log.warning("web: a request from %s gave an access token or session that is not valid", client)
    return name


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    return origin is not None and urlsplit(origin).netloc == request.host


# -- answers ---------------------------------------------------------------------------------


def _json_error(status: int, message: str, *, bearer: bool = False) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="fleetd"'} if bearer else None
    return web.json_response({"error": message}, status=status, headers=headers)


def _problem(request: web.Request, status: int, message: str) -> web.Response:
    if request.path.startswith("/api/"):
        return _json_error(status, message, bearer=status == 401)
    titles = {400: "Bad request", 401: "Log in first", 403: "Refused", 404: "Not found", 429: "Slow down"}
    link = (
        ("/login?" + urlencode({"next": request.path_qs}), "Log in with a token")
        if status == 401
        else ("/", "Overview")
    )
    return _html(
        request,
        titles.get(status, "Error"),
        pages.message(titles.get(status, "Error"), message, link),
        status,
    )


def _json(doc: Any) -> web.Response:
    response = web.json_response(doc, headers={"Cache-Control": "no-store"})
    response.enable_compression()
    return response


def _html(request: web.Request, title: str, body: str, status: int = 200) -> web.Response:
    w = request.app[WEB]
    user = _who_quietly(request)
    scope = {"cluster": request.match_info["cluster"]} if "cluster" in request.match_info else {}
    stream = "?" + urlencode(scope) if scope and request.path.startswith("/clusters/") else ""
    text = layout(
        fleet=w.state.fleet.name, title=title, body=body, user=user, login=w.access.tokens() is not None,
        stream=stream,
    )  # fmt: skip
    response = web.Response(
        text=text, status=status, content_type="text/html", headers={"Cache-Control": "no-store"}
    )
    response.enable_compression()
    return response


def _who_quietly(request: web.Request) -> str | None:
    cookie = request.cookies.get(SESSION_COOKIE)
    return request.app[WEB].access.who(bearer=None, cookie=cookie) if cookie else None


def _fragment_or_page(
    request: web.Request, title: str, regions: pages.Regions, head: str = ""
) -> web.Response:
    wanted = request.query.get("fragment")
    if wanted is not None:
        if wanted not in regions:
            raise v1.Problem(404, f"no region {wanted!r} on this page")
        response = web.Response(
            text=regions[wanted], content_type="text/html", headers={"Cache-Control": "no-store"}
        )
        response.enable_compression()
        return response
    return _html(request, title, pages.page(regions, head))


def _context(request: web.Request) -> pages.Context:
    w = request.app[WEB]
    can = w.live is not None and w.access.actions_refused() is None
    return pages.Context(actions=can, here=request.path_qs, now=time.time())


# -- pages -----------------------------------------------------------------------------------


async def _overview(request: web.Request) -> web.Response:
    doc = v1.overview(request.app[WEB].state)
    return _fragment_or_page(request, "Overview", pages.overview(doc, _context(request)))


async def _rollout(request: web.Request) -> web.Response:
    w = request.app[WEB]
    doc, revisions = v1.overview(w.state), await v1.revisions_doc(w.state, w.inspector)
    return _fragment_or_page(request, "Rollout", pages.rollout(doc, revisions, _context(request)))


async def _events_page(request: web.Request) -> web.Response:
    w = request.app[WEB]
    query = {k: v for k, v in request.query.items() if k != "fragment"}
    doc = v1.events_doc(w.state, v1.event_filters(query, request.query.getall("kind", [])))
    form, regions = pages.events_page(doc, query, [c.name for c in w.state.fleet.clusters], _context(request))
    return _fragment_or_page(request, "Events", regions, form)


async def _cluster_page(request: web.Request) -> web.Response:
    w = request.app[WEB]
    name = request.match_info["cluster"]
    doc = await v1.cluster_detail(w.state, w.inspector, name)
    return _fragment_or_page(request, name, pages.cluster(doc, _context(request)))


async def _sync_page(request: web.Request) -> web.Response:
    w = request.app[WEB]
    cluster, name = request.match_info["cluster"], request.match_info["sync"]
    title, fragment = f"{cluster}/{name}", request.query.get("fragment")
    v1.find(w.state, cluster, name)
    if fragment == "diff" or request.query.get("diff"):
        computed = await w.inspector.diff(cluster, name)
        diff = pages.diff(v1.diff_doc(cluster, w.inspector.diff_revision(cluster), computed))
    else:
        diff = pages.diff_button(request.path)
    if fragment == "diff":
        return _fragment_or_page(request, title, {"diff": diff})
    regions = pages.sync(await v1.sync_detail(w.state, w.inspector, cluster, name), _context(request))
    if fragment is not None:
        return _fragment_or_page(request, title, regions)
    return _html(request, title, pages.page({**regions, "diff": diff}, static=("diff",)))


async def _static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC:
        raise web.HTTPNotFound()
    kind = _TYPES[name[name.rindex(".") :]]
    cache = "public, max-age=31536000, immutable" if request.query.get("v") else "no-cache"
    response = web.Response(body=STATIC[name], content_type=kind, headers={"Cache-Control": cache})
    response.enable_compression()
    return response


# -- login -----------------------------------------------------------------------------------


def _safe_next(value: str | None) -> str:
    """Only a path on this server (never ``//host`` or a URL) may be returned to."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


async def _login_page(request: web.Request) -> web.Response:
    if request.app[WEB].access.tokens() is None:
        raise v1.Problem(404, "no access tokens are configured ([web] token_file)")
    return _html(request, "Log in", pages.login(_safe_next(request.query.get("next")), None))


async def _login(request: web.Request) -> web.Response:
    w = request.app[WEB]
    tokens = w.access.tokens()
    if tokens is None:
        raise v1.Problem(404, "no access tokens are configured ([web] token_file)")
    if not _same_origin(request):
        raise v1.Problem(403, "log in from fleetd's own login page")
    form = await request.post()
    target = _safe_next(str(form.get("next") or "/"))
    client = request.remote or "unknown"
    if w.failures.blocked(client):
        raise v1.Problem(429, "too many failed token attempts from this address; wait a minute")
    name = tokens.match(str(form.get("token") or ""))
    if name is None:
        w.failures.failed(client)
        log.warning("web: failed login from %s", client)
        return _html(request, "Log in", pages.login(target, "That token is not valid."), 401)
    log.info("web: %s logged in from %s", name, client)
    response = web.HTTPSeeOther(target)
    response.set_cookie(
        SESSION_COOKIE, tokens.session(name), httponly=True, samesite="Strict", path="/",
        secure=request.secure, max_age=12 * 3600,
    )  # fmt: skip
    raise response


async def _logout(request: web.Request) -> web.Response:
    if not _same_origin(request):
        raise v1.Problem(403, "log out from fleetd's own pages")
    response = web.HTTPSeeOther("/")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


# -- actions ---------------------------------------------------------------------------------


def _act(request: web.Request, verb: str, cluster: str | None, sync: str | None) -> str:
    """Check that the caller may act, then perform; raises `v1.Problem` with the reason otherwise."""
    w = request.app[WEB]
    refused = w.access.actions_refused()
    if refused is not None or w.live is None:
        raise v1.Problem(403, refused or "actions need the running daemon")
    bearer = request.headers.get("Authorization", "").lower().startswith("bearer ")
    if not bearer and request.cookies.get(SESSION_COOKIE) and not _same_origin(request):
        raise v1.Problem(403, "actions with a browser session must come from fleetd's own pages")
    who = _who(request)
    if who is None:
        log.warning("web: action %s refused for %s: no valid token", verb, request.remote)
        raise v1.Problem(401, "actions need an access token: log in, or send Authorization: Bearer <token>")
    action = actions.parse(w.state, verb, cluster, sync)
    message = actions.perform(w.state, w.live, action, who=who, origin=request.remote or "unknown")
    log.info("web: %s (from %s)", message, request.remote)
    return message


async def _ui_action(request: web.Request) -> web.Response:
    form = await request.post()
    _act(
        request,
        str(form.get("verb") or ""),
        str(form.get("cluster") or "") or None,
        str(form.get("sync") or "") or None,
    )
    raise web.HTTPSeeOther(_safe_next(str(form.get("next") or "/")))


async def _api_action(request: web.Request) -> web.Response:
    body: Any = {}
    if request.can_read_body:
        try:
            body = await request.json()
        except ValueError:
            raise v1.Problem(400, 'the body must be JSON: {"cluster": ..., "sync": ...}') from None
    if not isinstance(body, dict):
        raise v1.Problem(400, "the body must be a JSON object")
    cluster, sync = body.get("cluster"), body.get("sync")
    if not isinstance(cluster, str | None) or not isinstance(sync, str | None):
        raise v1.Problem(400, "cluster and sync must be strings")
    message = _act(request, request.match_info["verb"], cluster, sync)
    return _json({"ok": True, "message": message})


# -- the JSON API ----------------------------------------------------------------------------


async def _api_clusters(request: web.Request) -> web.Response:
    return _json(v1.overview(request.app[WEB].state))


async def _api_cluster(request: web.Request) -> web.Response:
    w = request.app[WEB]
    return _json(await v1.cluster_detail(w.state, w.inspector, request.match_info["cluster"]))


async def _api_sync(request: web.Request) -> web.Response:
    w = request.app[WEB]
    m = request.match_info
    return _json(await v1.sync_detail(w.state, w.inspector, m["cluster"], m["sync"]))


async def _api_diff(request: web.Request) -> web.Response:
    w = request.app[WEB]
    cluster, name = request.match_info["cluster"], request.match_info["sync"]
    v1.find(w.state, cluster, name)
    diff = await w.inspector.diff(cluster, name)
    return _json(v1.diff_doc(cluster, w.inspector.diff_revision(cluster), diff))


async def _api_events(request: web.Request) -> web.Response:
    w = request.app[WEB]
    return _json(v1.events_doc(w.state, v1.event_filters(request.query, request.query.getall("kind", []))))


async def _api_revisions(request: web.Request) -> web.Response:
    w = request.app[WEB]
    return _json(await v1.revisions_doc(w.state, w.inspector))


async def _openapi(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI, content_type="application/yaml")


async def _api_stream(request: web.Request) -> web.StreamResponse:
    w = request.app[WEB]
    filters = v1.event_filters(request.query, request.query.getall("kind", []))
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    last_id = None
    if raw:
        if not raw.isdigit():
            raise v1.Problem(400, f"Last-Event-ID {raw!r} is not an event id")
        last_id = int(raw)
    if len(w.streams) >= MAX_STREAMS:
        raise v1.Problem(503, f"already {MAX_STREAMS} streams open; try again later")
    sse = {"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    response = web.StreamResponse(headers={**HEADERS, **sse})
    sub = w.state.bus.subscribe()
    w.streams.add(sub)
    try:
        await response.prepare(request)
        async for chunk in stream.frames(w.state, sub, last_id=last_id, filters=filters):
            await response.write(chunk)
    except ConnectionResetError:
        pass  # the client went away
    finally:
        w.streams.discard(sub)
        sub.close()
    return response
