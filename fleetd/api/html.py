"""HTML building blocks for the web UI: escaping, the page layout, badges, times and action buttons.

Pages are rendered on the server as plain strings; every value from the
fleet (names, messages, errors, diffs) goes through `esc`, so nothing the
repository or a spoke says can become markup. There is no inline script
and no inline style anywhere: the Content-Security-Policy forbids both, and
the page works (without live updates) with scripts off.

Live regions are ``<section data-live>`` elements: the script
(``static/app.js``) re-fetches a region (``?fragment=<id>``) when an event
for it arrives on the stream. ``data-cluster``/``data-sync`` narrow which
events matter to a region.
"""

from __future__ import annotations

import hashlib
import html
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import resources
from typing import Final
from urllib.parse import quote

STATIC: Final = {
    name: resources.files("fleetd.api").joinpath("static", name).read_bytes()
    for name in ("app.css", "app.js", "icon.svg")
}
"""The static assets, read once at import; served from memory."""
VERSION: Final = hashlib.sha256(b"".join(STATIC.values())).hexdigest()[:12]
"""Cache-busting suffix of asset URLs: assets are cached for a year and renamed when they change."""
STATES: Final = ("failed", "held", "waiting", "pending", "suspended", "ready")
"""Sync states, worst first (the order problems are shown in)."""


def esc(value: object) -> str:
    """``value`` as text safe anywhere in HTML, attributes included."""
    return html.escape("" if value is None else str(value), quote=True)


def url(*parts: str) -> str:
    """A path from segments, each percent-encoded."""
    return "/" + "/".join(quote(p, safe="") for p in parts)


def short(revision: str | None) -> str:
    return revision[:12] if revision else "—"


def when(ts: float | None, now: float | None = None) -> str:
    """A ``<time>`` saying how long ago, with the exact time as its title (updated by the script)."""
    if ts is None:
        return '<span class="muted">never</span>'
    now = time.time() if now is None else now
    exact = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f'<time datetime="{exact}" data-t="{ts:.0f}" title="{exact}">{ago(now - ts)}</time>'


def ago(seconds: float) -> str:
    """``just now``, ``42s ago``, ``3m ago``, ``5h ago``, ``2d ago`` (the script speaks the same)."""
    if seconds < 5:
        return "just now"
    for unit, name in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= unit:
            return f"{int(seconds // unit)}{name} ago"
    return f"{int(seconds)}s ago"


def badge(state: str, text: str | None = None) -> str:
    return f'<span class="badge st-{esc(state)}">{esc(text or state)}</span>'


def table(head: Iterable[str], rows: Iterable[str], cls: str = "") -> str:
    heads = "".join(f"<th>{h}</th>" for h in head)
    body = "".join(rows)
    table = f'<table class="{cls}"><thead><tr>{heads}</tr></thead><tbody>{body}</tbody></table>'
    return f'<div class="scroll">{table}</div>'


def action(verb: str, label: str, back: str, *, cluster: str | None = None, sync: str | None = None) -> str:
    """A button that asks the daemon for one operator action (POST, same origin, token required)."""
    fields = "".join(
        f'<input type="hidden" name="{k}" value="{esc(v)}">'
        for k, v in (("verb", verb), ("cluster", cluster), ("sync", sync), ("next", back))
        if v
    )
    return (
        f'<form class="act" method="post" action="/ui/action">{fields}'
        f'<button type="submit" data-verb="{esc(verb)}">{esc(label)}</button></form>'
    )


def live(
    region: str, body: str, *, cluster: str | None = None, sync: str | None = None, tag: str = "section"
) -> str:
    """A region the script refreshes when a matching event arrives."""
    attrs = f' data-cluster="{esc(cluster)}"' if cluster else ""
    attrs += f' data-sync="{esc(sync)}"' if sync else ""
    return f'<{tag} id="{region}" data-live{attrs}>{body}</{tag}>'


def layout(*, fleet: str, title: str, body: str, user: str | None, login: bool, stream: str = "") -> str:
    """A whole page: header, navigation and ``body``; ``stream`` narrows the events that refresh it."""
    who = ""
    if user:
        who = (
            f'<form class="who" method="post" action="/logout"><span>{esc(user)}</span>'
            '<button type="submit">Log out</button></form>'
        )
    elif login:
        who = '<a class="who" href="/login">Log in</a>'
    v = VERSION
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>{esc(title)} · fleetd {esc(fleet)}</title>
<link rel="stylesheet" href="/static/app.css?v={v}">
<link rel="icon" type="image/svg+xml" href="/static/icon.svg?v={v}">
<script src="/static/app.js?v={v}" defer></script>
</head><body data-stream="/api/v1/stream{esc(stream)}">
<header class="top"><a class="brand" href="/">fleetd</a><span class="fleet">{esc(fleet)}</span>
<nav><a href="/">Overview</a><a href="/rollout">Rollout</a><a href="/events">Events</a></nav>
<span id="live" class="live" title="live updates">●</span>{who}</header>
<main>{body}</main>
</body></html>
"""
