"""Real loopback receivers for notification tests: apprise's JSON target, the signed webhook, forge APIs.

One aiohttp server on a free loopback port plays every receiver fleetd
talks to, and checks what a real one would:

* ``POST /apprise/{name}`` — apprise's ``json://`` target: the body must be
  apprise's JSON document (``version``, ``title``, ``message``, ``type``,
  ``attachments``);
* ``POST /hook`` — the signed webhook: ``X-Fleetd-Signature-256`` is
  recomputed over the raw body with the shared key and compared in constant
  time; a wrong or missing signature is answered 401 and recorded as bad;
* ``POST /github/repos/{owner}/{repo}/statuses/{sha}`` — GitHub's statuses
  endpoint: ``Authorization: Bearer <token>``, state in
  pending/success/failure/error, a ``context``, a description of at most
  140 characters;
* ``POST /gitea/api/v1/repos/{owner}/{repo}/statuses/{sha}`` — Gitea's:
  ``Authorization: token <token>``, the same body;
* ``POST /gitlab/api/v4/projects/{id}/statuses/{sha}`` — GitLab's:
  ``PRIVATE-TOKEN``, ``name`` and states pending/success/failed.

These are stand-ins implementing the statuses endpoints, not a real Gitea:
no Gitea or Forgejo binary can be built or installed here within the test
budget. ``fail_next`` makes the next N calls of a route answer 503.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from testbed.processes import free_port

TOKEN = "forge-token-canary-0c7e1d"
HOOK_KEY = "hook-key-canary-9a41f2"
STATES = {"pending", "success", "failure", "error"}


@dataclass
class Sinks:
    port: int
    apprise: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    hooks: list[dict[str, Any]] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    fail_next: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def latest(self, forge: str, sha: str) -> dict[str, dict[str, Any]]:
        """The last status per context on `sha` at `forge`."""
        return {s["context"]: s for s in self.statuses[forge] if s["sha"] == sha}


def _failing(sinks: Sinks, route: str) -> bool:
    sinks.calls[route] += 1
    if sinks.fail_next[route] > 0:
        sinks.fail_next[route] -= 1
        return True
    return False


def _app(sinks: Sinks) -> web.Application:
    async def apprise(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if _failing(sinks, f"apprise/{name}"):
            return web.Response(status=503)
        doc = await request.json()
        if set(doc) != {"version", "title", "message", "type", "attachments"} or doc["version"] != "1.0":
            sinks.bad.append(f"apprise payload {doc!r}")
            return web.Response(status=400)
        sinks.apprise[name].append(doc)
        return web.Response(status=200)

    async def hook(request: web.Request) -> web.Response:
        if _failing(sinks, "hook"):
            return web.Response(status=503)
        body = await request.read()
        expected = "sha256=" + hmac.new(HOOK_KEY.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Fleetd-Signature-256", "")):
            sinks.bad.append("webhook signature")
            return web.Response(status=401)
        doc = json.loads(body)
        doc["_headers"] = {k: v for k, v in request.headers.items() if k.lower().startswith("x-fleetd")}
        sinks.hooks.append(doc)
        return web.Response(status=204)

    def forge(name: str, header: str, prefix: str, states: set[str], context_key: str) -> Any:
        async def status(request: web.Request) -> web.Response:
            if request.headers.get(header) != f"{prefix}{TOKEN}":
                sinks.bad.append(f"{name} auth")
                return web.json_response({"message": "Bad credentials"}, status=401)
            if _failing(sinks, name):
                return web.Response(status=503)
            doc = await request.json()
            if (
                doc.get("state") not in states
                or not doc.get(context_key)
                or len(doc.get("description", "")) > 140
            ):
                sinks.bad.append(f"{name} payload {doc!r}")
                return web.json_response({"message": "Validation Failed"}, status=422)
            sinks.statuses[name].append(
                {"sha": request.match_info["sha"], "context": doc[context_key], "state": doc["state"],
                 "description": doc.get("description", ""), "repo": request.match_info["repo"]}
            )  # fmt: skip
            return web.json_response({"id": len(sinks.statuses[name])}, status=201)

        return status

    app = web.Application()
    app.router.add_post("/apprise/{name}", apprise)
    app.router.add_post("/hook", hook)
    app.router.add_post(
        "/github/repos/{repo:.+}/statuses/{sha}",
        forge("github", "Authorization", "Bearer ", STATES, "context"),
    )
    app.router.add_post(
        "/gitea/api/v1/repos/{repo:.+}/statuses/{sha}",
        forge("gitea", "Authorization", "token ", STATES | {"warning"}, "context"),
    )
    app.router.add_post(
        "/gitlab/api/v4/projects/{repo}/statuses/{sha}",
        forge("gitlab", "PRIVATE-TOKEN", "", {"pending", "running", "success", "failed", "canceled"}, "name"),
    )
    return app


@asynccontextmanager
async def running_sinks() -> AsyncIterator[Sinks]:
    sinks = Sinks(port=free_port())
    runner = web.AppRunner(_app(sinks), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", sinks.port).start()
    try:
        yield sinks
    finally:
        await runner.cleanup()


def notifications_toml(sinks: Sinks, secrets_dir: Any, *, prefix: str = "") -> str:
    """``[[notifications]]`` for every sink: apprise, webhook, github, gitea, gitlab (secrets in files)."""
    (secrets_dir / "hook.key").write_text(HOOK_KEY + "\n")
    (secrets_dir / "forge.token").write_text(TOKEN + "\n")
    (secrets_dir / "chat.url").write_text(f"# the team chat\njson://127.0.0.1:{sinks.port}/apprise/chat\n")
    statuses = "".join(
        f'\n[[notifications]]\nname = "{forge}"\ntype = "{forge}"\nrepository = "me/fleet"\n'
        f'token_file = "{secrets_dir / "forge.token"}"\napi_url = "{sinks.url(path)}"\n'
        for forge, path in (("github", "/github"), ("gitea", "/gitea/api/v1"), ("gitlab", "/gitlab/api/v4"))
    )
    return (
        f'\n[[notifications]]\nname = "chat"\ntype = "apprise"\nurl_file = "{secrets_dir / "chat.url"}"\n'
        f'events = ["reconcile.*", "rollout.*", "cluster.*"]\nseverity = "warning"\n'
        f'\n[[notifications]]\nname = "hook"\ntype = "webhook"\nurl = "{sinks.url("/hook")}"\n'
        f'secret_file = "{secrets_dir / "hook.key"}"\nevents = ["reconcile.failed"]\n' + statuses
    )
