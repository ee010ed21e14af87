"""The web UI's pages, rendered from the same documents the JSON API serves (`fleetd.api.v1`).

Each page is a set of named regions; the full page joins them, and
``?fragment=<region>`` returns one region alone, which is how the script
refreshes a page live. Pages:

* **overview** (``/``): the summary, the problems (worst first) and the
  matrix of clusters by syncs, clusters with problems first;
* **rollout** (``/rollout``): waves, the revision each applies, whether the
  rollout is halted or held and why, and the revisions seen;
* **cluster** (``/clusters/<c>``): reachability, server version, syncs,
  recent events;
* **sync** (``/clusters/<c>/syncs/<s>``): state and the error in full,
  objects with health and drift, the ``depends_on`` graph, the diff (on
  demand: it asks the spoke) and the sync's history;
* **events** (``/events``): the journal, filtered by the query string.

Action buttons appear only when ``[web] actions`` is on; the server still
checks the token on every action.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleetd.api.graph import svg
from fleetd.api.html import STATES, action, badge, esc, live, short, table, url, when
from fleetd.daemon.events import EventKind

Regions = dict[str, str]
_REACH = {"down": "unreachable", "up": "reachable", "unknown": "not contacted yet"}
_RANK = {s: i for i, s in enumerate(STATES)}


@dataclass(frozen=True, slots=True)
class Context:
    """What a page needs besides its document."""

    actions: bool
    """Whether to offer action buttons."""
    here: str
    """This page's path and query, where an action returns to."""
    now: float


def page(regions: Regions, head: str = "", *, static: tuple[str, ...] = ()) -> str:
    """Join the regions of a page; those named in ``static`` are not refreshed live."""
    parts = [head]
    for name, body in regions.items():
        parts.append(f'<section id="{name}">{body}</section>' if name in static else live(name, body))
    return "".join(parts)


# -- overview ----------------------------------------------------------------------------------


def overview(doc: Mapping[str, Any], ctx: Context) -> Regions:
    return {"summary": _summary(doc, ctx), "problems": _problems(doc), "matrix": _matrix(doc, ctx)}


def _summary(doc: Mapping[str, Any], ctx: Context) -> str:
    s, source, rollout = doc["summary"], doc["source"], doc["rollout"]
    counts = " ".join(badge(word, f"{s[word]} {word}") for word in STATES if s.get(word))
    drift = badge("drifted", f"{s['drifted_objects']} drifted") if s["drifted_objects"] else ""
    unreachable = badge("failed", f"{s['unreachable']} unreachable") if s["unreachable"] else ""
    fetched = when(source["last_fetch"], ctx.now)
    message = f" — {esc(source['message'])}" if source.get("message") else ""
    return (
        f'<h1>{esc(doc["fleet"])}</h1><p class="counts">{s["clusters"]} clusters, {s["syncs"]} syncs: '
        f"{counts} {drift} {unreachable}</p>"
        f'<p class="source">Source <code>{esc(source["url"])}</code> ({esc(source["ref"])}) at '
        f'<code class="rev">{esc(short(source["revision"]))}</code>{message}; fetched {fetched}. '
        f'Rollout: <a href="/rollout">{esc(_rollout_word(rollout))}</a>.</p>'
    )


def _rollout_word(rollout: Mapping[str, Any]) -> str:
    if rollout["halted_at_wave"] is not None:
        return f"halted at wave {rollout['halted_at_wave']}"
    if rollout["held"]:
        return "held"
    if rollout["target"] is None:
        return "no revision yet"
    waves = rollout["waves"]
    done = all(r == rollout["target"] for r in waves.values()) and waves
    return "complete" if done else f"rolling out (reached wave {rollout['reached_wave']})"


def _problems(doc: Mapping[str, Any]) -> str:
    items = doc["problems"]
    if not items:
        return '<h2>Problems</h2><p class="ok">None: every sync is ready and matches git.</p>'
    lis = []
    for p in items:
        where = ""
        if p["cluster"] and p["sync"]:
            href = url("clusters", p["cluster"], "syncs", p["sync"])
            where = f'<a href="{href}">{esc(p["cluster"])}/{esc(p["sync"])}</a>'
        elif p["cluster"]:
            where = f'<a href="{url("clusters", p["cluster"])}">{esc(p["cluster"])}</a>'
        lis.append(
            f'<li class="problem sev-{esc(p["severity"])}">'
            f"{badge(p['what'] if p['what'] in STATES else p['severity'], p['what'])} "
            f'{where} <span class="msg">{esc(p["message"])}</span></li>'
        )
    return (
        f'<h2>Problems <span class="muted">({len(items)})</span></h2><ul class="problems">{"".join(lis)}</ul>'
    )


def _cluster_rank(c: Mapping[str, Any]) -> tuple[int, int, int, str]:
    worst = min((_RANK.get(s["state"], len(STATES)) for s in c["syncs"]), default=len(STATES))
    drifted = sum(s["drifted"] for s in c["syncs"])
    return (0 if c["reachable"] is False else 1, worst, -drifted, c["name"])


def _matrix(doc: Mapping[str, Any], ctx: Context) -> str:
    clusters = sorted(doc["clusters"], key=_cluster_rank)
    columns = list(dict.fromkeys(s["name"] for c in doc["clusters"] for s in c["syncs"]))
    rows = []
    for c in clusters:
        by_name = {s["name"]: s for s in c["syncs"]}
        dot = "down" if c["reachable"] is False else ("up" if c["reachable"] else "unknown")
        head = (
            f'<th scope="row"><a href="{url("clusters", c["name"])}">{esc(c["name"])}</a>'
            f'<span class="reach {dot}" title="{_REACH[dot]}"></span>'
            f"<small>wave {c['wave']}{' · suspended' if c['suspended'] else ''}"
            f"{' · served by ' + esc(c['owner'] or 'no replica') if 'owner' in c else ''}</small></th>"
        )
        cells = [_cell(c["name"], by_name.get(name), ctx) for name in columns]
        rows.append(f'<tr data-cluster="{esc(c["name"])}">{head}{"".join(cells)}</tr>')
    heads = ["Cluster", *(esc(n) for n in columns)]
    return "<h2>Clusters by syncs</h2>" + table(heads, rows, "matrix")


def _cell(cluster: str, s: Mapping[str, Any] | None, ctx: Context) -> str:
    if s is None:
        return '<td class="cell none"><span class="muted">·</span></td>'
    drift = f'<span class="drift">{s["drifted"]} drifted</span>' if s["drifted"] else ""
    return (
        f'<td class="cell st-{esc(s["state"])}" data-cluster="{esc(cluster)}" data-sync="{esc(s["name"])}" '
        f'data-state="{esc(s["state"])}" data-drifted="{s["drifted"]}">'
        f'<a href="{url("clusters", cluster, "syncs", s["name"])}">{badge(s["state"])}{drift}'
        f'<span class="rev">{esc(short(s["revision"]))[:7]}</span>{when(s["attempted_at"], ctx.now)}</a></td>'
    )


# -- rollout -----------------------------------------------------------------------------------


def rollout(doc: Mapping[str, Any], revisions: Mapping[str, Any], ctx: Context) -> Regions:
    return {"waves": _waves(doc, revisions, ctx), "revisions": _revisions(revisions, ctx)}


def _waves(doc: Mapping[str, Any], revisions: Mapping[str, Any], ctx: Context) -> str:
    r = doc["rollout"]
    target = r["target"]
    message = next((v["message"] for v in revisions["revisions"] if v["revision"] == target), None)
    why = ""
    if r["halted_at_wave"] is not None:
        why = (
            f'<p class="alert">Halted: wave {r["halted_at_wave"]} failed at the target; later waves keep '
            "the revision they have until a fix is committed or an operator promotes.</p>"
        )
    if r["held"]:
        why += (
            '<p class="alert warn">Held by an operator: no wave takes a newer revision '
            "until the rollout is resumed.</p>"
        )
    buttons = ""
    if ctx.actions:
        buttons = '<div class="actions">' + "".join(
            action(v, label, ctx.here) for v, label in
            (("rollout-hold", "Hold"), ("rollout-resume", "Resume"), ("rollout-promote", "Promote next wave"))
        ) + "</div>"  # fmt: skip
    rows = []
    waves = sorted({c["wave"] for c in doc["clusters"]})
    for wave in waves:
        members = [c for c in doc["clusters"] if c["wave"] == wave]
        revision = r["waves"].get(str(wave))
        states = [s["state"] for c in members for s in c["syncs"]]
        at_target = revision is not None and revision == target
        word = (
            "waiting"
            if not at_target
            else (
                "failed"
                if "failed" in states
                else "ready"
                if all(s in ("ready", "suspended") for s in states)
                else "pending"
            )
        )
        text = {
            "waiting": "waits for the wave before",
            "failed": "failing",
            "ready": "healthy",
            "pending": "applying",
        }[word]
        names = ", ".join(f'<a href="{url("clusters", c["name"])}">{esc(c["name"])}</a>' for c in members)
        rows.append(
            f'<tr data-wave="{wave}"><td>{wave}</td><td>{names}</td>'
            f'<td><code class="rev">{esc(short(revision))}</code>'
            f"{' (target)' if at_target else ''}</td><td>{badge(word, text)}</td></tr>"
        )
    return (
        f'<h1>Rollout</h1><p>Target <code class="rev">{esc(short(target))}</code>'
        f"{' — ' + esc(message) if message else ''}: "
        f"<strong>{esc(_rollout_word(r))}</strong>.</p>{why}{buttons}"
        + table(["Wave", "Clusters", "Revision", "State"], rows)
    )


def _revisions(doc: Mapping[str, Any], ctx: Context) -> str:
    rows = [
        f'<tr><td><code class="rev">{esc(short(v["revision"]))}</code></td><td>{esc(v["message"] or "")}</td>'
        f"<td>{esc(v['author'] or '')}</td>"
        f"<td>{when(v['committed_at'], ctx.now) if v['committed_at'] else ''}</td>"
        f"<td>{badge(v['rollout'].replace(' ', '-'), v['rollout'])}</td>"
        f"<td>{', '.join(str(w) for w in v['waves']) or '—'}</td></tr>"
        for v in doc["revisions"]
    ]
    return "<h2>Revisions seen</h2>" + table(
        ["Revision", "Message", "Author", "Committed", "Where", "Waves"], rows
    )


# -- cluster -----------------------------------------------------------------------------------


def cluster(doc: Mapping[str, Any], ctx: Context) -> Regions:
    name = doc["name"]
    reach = {
        True: badge("ready", "reachable"),
        False: badge("failed", "unreachable"),
        None: badge("pending", "not contacted yet"),
    }[doc["reachable"]]
    requests = ", ".join(f"{esc(k)} {v}" for k, v in sorted(doc["requests"].items())) or "none"
    errors = ", ".join(f"{esc(k)} {v}" for k, v in sorted(doc["errors"].items())) or "none"
    labels = " ".join(f"<code>{esc(k)}={esc(v)}</code>" for k, v in doc["labels"].items()) or "none"
    buttons = ""
    if ctx.actions:
        suspend = ("resume", "Resume cluster") if doc["suspended"] else ("suspend", "Suspend cluster")
        buttons = (
            '<div class="actions">'
            + action("reconcile", "Reconcile all syncs", ctx.here, cluster=name)
            + action(*suspend, ctx.here, cluster=name)
            + "</div>"
        )
    facts = (
        f'<h1>{esc(name)} {reach}</h1>{buttons}<dl class="facts">'
        f"<dt>Error</dt><dd>{esc(doc['last_error']) if doc['last_error'] else 'none'}</dd>"
        f"<dt>Server</dt><dd><code>{esc(doc['server'] or 'not connected')}</code></dd>"
        f"<dt>Version</dt><dd>{esc(doc['version'] or 'unknown')}</dd>"
        f"<dt>Wave</dt><dd>{doc['wave']}</dd>"
        f'<dt>Revision</dt><dd><code class="rev">{esc(short(doc["revision"]))}</code></dd>'
        f"<dt>Labels</dt><dd>{labels}</dd>"
        f"<dt>API requests</dt><dd>{requests}; errors: {errors}</dd></dl>"
    )
    rows = [
        f'<tr data-sync="{esc(s["name"])}">'
        f'<td><a href="{url("clusters", name, "syncs", s["name"])}">{esc(s["name"])}</a></td>'
        f"<td>{badge(s['state'])}</td><td>{s['drifted'] or ''}</td>"
        f'<td><code class="rev">{esc(short(s["revision"]))}</code></td>'
        f"<td>{s['objects']}</td><td>{when(s['attempted_at'], ctx.now)}</td>"
        f'<td class="msg">{esc((s["error"] or "").splitlines()[0] if s["error"] else "")}</td></tr>'
        for s in doc["syncs"]
    ]
    syncs = "<h2>Syncs</h2>" + table(
        ["Sync", "State", "Drifted", "Revision", "Objects", "Attempted", "Error"], rows
    )
    return {
        "facts": facts,
        "syncs": syncs,
        "events": "<h2>Recent events</h2>" + events_table(doc["events"], ctx),
    }


# -- sync -----------------------------------------------------------------------------------------


def sync(doc: Mapping[str, Any], ctx: Context) -> Regions:
    return {
        "status": _sync_status(doc, ctx),
        "objects": _objects(doc),
        "graph": "<h2>Depends on</h2>" + _depends(doc) + svg(doc["cluster"], doc["graph"], doc["name"]),
        "history": "<h2>History</h2>" + events_table(doc["history"], ctx, columns=False),
    }


def _sync_status(doc: Mapping[str, Any], ctx: Context) -> str:
    c, name, cfg = doc["cluster"], doc["name"], doc["config"]
    buttons = ""
    if ctx.actions:
        suspend = ("resume", "Resume") if doc["state"] == "suspended" else ("suspend", "Suspend")
        buttons = (
            '<div class="actions">'
            + action("reconcile", "Reconcile now", ctx.here, cluster=c, sync=name)
            + action(*suspend, ctx.here, cluster=c, sync=name)
            + "</div>"
        )
    error = ""
    if doc["last_error"]:
        e = doc["last_error"]
        refs = "".join(f"<li><code>{esc(o)}</code></li>" for o in e["objects"])
        refs += "".join(
            f"<li><code>{esc(f['path'])}{':' + str(f['line']) if f['line'] else ''}</code></li>"
            for f in e["files"]
        )
        error = f'<h2>Error</h2><pre class="error">{esc(e["message"])}</pre>' + (
            f'<ul class="refs">{refs}</ul>' if refs else ""
        )
    drift = f" {badge('drifted', str(doc['drifted']) + ' drifted')}" if doc["drifted"] else ""
    took = f" in {doc['duration']:.2f}s" if doc["duration"] else ""
    return (
        f'<p class="crumbs"><a href="{url("clusters", c)}">{esc(c)}</a> /</p>'
        f'<h1>{esc(name)} {badge(doc["state"])}{drift}</h1>{buttons}<dl class="facts">'
        f'<dt>Revision</dt><dd><code class="rev">{esc(short(doc["revision"]))}</code> '
        f'(applied: <code class="rev">{esc(short(doc["applied_revision"]))}</code>)</dd>'
        f"<dt>Attempted</dt><dd>{when(doc['attempted_at'], ctx.now)}{took}</dd>"
        f"<dt>Succeeded</dt><dd>{when(doc['succeeded_at'], ctx.now)}</dd>"
        f"<dt>Objects</dt><dd>{doc['object_count']} "
        f"({doc['changed']} changed, {doc['pruned']} pruned last time)</dd>"
        f"<dt>Path</dt><dd><code>{esc(cfg['path'])}</code>"
        f"{' in namespace ' + esc(cfg['namespace']) if cfg['namespace'] else ''}</dd>"
        f"<dt>Policy</dt><dd>drift {esc(cfg['drift'])}, prune {'on' if cfg['prune'] else 'off'}, "
        f"wait {'on' if cfg['wait'] else 'off'}, every {cfg['interval']:g}s</dd></dl>{error}"
    )


def _objects(doc: Mapping[str, Any]) -> str:
    rows = [
        f'<tr data-object="{esc(o["kind"])}/{esc(o["namespace"] or "")}/{esc(o["name"])}" '
        f'data-drifted="{str(o["drifted"]).lower()}" data-health="{esc(o["health"])}">'
        f"<td>{esc(o['kind'])}</td><td>{esc(o['namespace'] or '')}</td><td>{esc(o['name'])}</td>"
        f"<td>{badge(_health_state(o['health']), o['health'].replace('_', ' '))} "
        f'<span class="msg">{esc(o["health_message"])}</span></td>'
        f"<td>{_drift_cell(o)}</td></tr>"
        for o in doc["objects"]
    ]
    note = f'<p class="muted">{esc(doc["objects_note"])}</p>' if doc["objects_note"] else ""
    where = {"watch": "as applied and watched", "ledger": "from the hub's copy of the ledger", "none": ""}[
        doc["objects_source"]
    ]
    return f'<h2>Objects <span class="muted">{esc(where)}</span></h2>{note}' + table(
        ["Kind", "Namespace", "Name", "Health", "Drift"], rows
    )


def _drift_cell(o: Mapping[str, Any]) -> str:
    return f"{badge('drifted')} {esc(o['drift_reason'])}" if o["drifted"] else badge("ready", "in sync")


def _health_state(health: str) -> str:
    return {"current": "ready", "in_progress": "pending", "failed": "failed"}.get(health, "suspended")


def _depends(doc: Mapping[str, Any]) -> str:
    deps = ", ".join(esc(d) for d in doc["depends_on"]) or "nothing"
    dependents = ", ".join(esc(d) for d in doc["dependents"]) or "nothing"
    return f"<p>{esc(doc['name'])} depends on {deps}; depended on by {dependents}.</p>"


def diff(doc: Mapping[str, Any]) -> str:
    """The diff region, once computed (Secret values are already masked)."""
    parts = [
        "<h2>What a reconcile would change now</h2>"
        f'<p class="muted">At revision <code class="rev">{esc(short(doc["revision"]))}</code>.</p>'
    ]
    for e in doc["errors"]:
        parts.append(f'<pre class="error">{esc(e)}</pre>')
    if doc["note"]:
        parts.append(f'<p class="muted">{esc(doc["note"])}</p>')
    changed = [o for o in doc["objects"] if o["action"] != "unchanged"]
    if not changed and not doc["errors"]:
        parts.append('<p class="ok">Nothing: the cluster matches git.</p>')
    for o in changed:
        where = f"{esc(o['namespace'])}/" if o["namespace"] else ""
        notes = "".join(f"<li>{esc(n)}</li>" for n in o["notes"])
        body = f'<pre class="diff">{esc(o["diff"])}</pre>' if o["diff"] else ""
        parts.append(
            f'<div class="obj">{badge(o["action"])} {esc(o["kind"])} {where}{esc(o["name"])}'
            f"<ul>{notes}</ul>{body}</div>"
        )
    return "".join(parts)


def diff_button(here: str) -> str:
    return (
        "<h2>What a reconcile would change now</h2>"
        f'<form method="get" action="{esc(here)}" data-fragment="diff">'
        '<input type="hidden" name="diff" value="1"><button type="submit">Compute diff</button> '
        '<span class="muted">(dry run against the cluster; Secret values masked)</span></form>'
    )


# -- events -----------------------------------------------------------------------------------


def events_table(events: list[Mapping[str, Any]], ctx: Context, *, columns: bool = True) -> str:
    if not events:
        return '<p class="muted">No events yet.</p>'
    rows = []
    for e in events:
        where = ""
        if columns and e["cluster"]:
            where = f'<a href="{url("clusters", e["cluster"])}">{esc(e["cluster"])}</a>'
            if e["sync"]:
                where += (
                    f'/<a href="{url("clusters", e["cluster"], "syncs", e["sync"])}">{esc(e["sync"])}</a>'
                )
        cells = f"<td>{when(e['time'], ctx.now)}</td><td>{badge(_event_state(e), e['kind'])}</td>"
        cells += f"<td>{where}</td>" if columns else ""
        rows.append(
            f'<tr data-kind="{esc(e["kind"])}" data-id="{e["id"]}">{cells}'
            f'<td class="msg">{esc(e["message"])}</td></tr>'
        )
    return table(["When", "Kind", *(["Where"] if columns else []), "Message"], rows, "events")


def _event_state(e: Mapping[str, Any]) -> str:
    return {"error": "failed", "warning": "held"}.get(
        e["severity"], "ready" if e["kind"].endswith(("succeeded", "corrected")) else "info"
    )


def events_page(
    doc: Mapping[str, Any], query: Mapping[str, str], clusters: list[str], ctx: Context
) -> tuple[str, Regions]:
    """The filter form (not live) and the live list."""

    def option(value: str, label: str, current: str) -> str:
        return f'<option value="{esc(value)}"{" selected" if value == current else ""}>{esc(label)}</option>'

    groups = sorted({str(k).split(".")[0] for k in EventKind})
    kinds = [option("", "any kind", query.get("kind", ""))] + [
        option(g, g + ".*", query.get("kind", "")) for g in groups
    ]
    kinds += [option(str(k), str(k), query.get("kind", "")) for k in EventKind]
    cl = [option("", "any cluster", query.get("cluster", ""))] + [
        option(c, c, query.get("cluster", "")) for c in clusters
    ]
    since = [
        option(v, label, query.get("since", ""))
        for v, label in (
            ("", "any time"),
            ("15m", "last 15 minutes"),
            ("1h", "last hour"),
            ("24h", "last day"),
            ("168h", "last week"),
        )
    ]
    form = (
        '<h1>Events</h1><form class="filters" method="get" action="/events">'
        f'<label>Cluster <select name="cluster">{"".join(cl)}</select></label>'
        f'<label>Sync <input name="sync" value="{esc(query.get("sync", ""))}" size="12"></label>'
        f'<label>Kind <select name="kind">{"".join(kinds)}</select></label>'
        f'<label>Since <select name="since">{"".join(since)}</select></label>'
        '<button type="submit">Filter</button></form>'
    )
    return form, {"timeline": events_table(doc["events"], ctx)}


def message(title: str, text: str, link: tuple[str, str] | None = None) -> str:
    more = f'<p><a href="{esc(link[0])}">{esc(link[1])}</a></p>' if link else ""
    return f'<h1>{esc(title)}</h1><p class="msg">{esc(text)}</p>{more}'


def login(next_url: str, error: str | None) -> str:
    problem = f'<p class="alert">{esc(error)}</p>' if error else ""
    return (
        f"<h1>Log in</h1>{problem}"
        "<p>Give one of the access tokens from the fleet's <code>[web] token_file</code>.</p>"
        '<form class="login" method="post" action="/login">'
        f'<input type="hidden" name="next" value="{esc(next_url)}">'
        '<label>Token <input type="password" name="token" autocomplete="current-password" required></label>'
        '<button type="submit">Log in</button></form>'
    )
