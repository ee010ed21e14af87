"""The fleet file's ``[[notifications]]``: who is told about which events, and how often.

Each element becomes one frozen `Notification`: a *target* (``type`` plus
its address and credential files), a filter (event kinds, minimum severity,
cluster and sync selectors) and the anti-spam settings (a dedup window and
a rate limit). Only the shape is checked here; credential files are read by
`fleetd.notify` when the daemon starts, so a missing token disables one
target with a message instead of rejecting the whole inventory.

Targets (``type``):

* ``apprise`` — chat and push services through apprise URLs (Slack,
  Discord, Teams, Telegram, ntfy, Matrix, e-mail, ``json://``...): ``url``
  inline, or ``url_file`` with one URL per line when the URLs hold tokens;
* ``webhook`` — a JSON POST to ``url``, signed with HMAC-SHA256 keyed by the
  content of ``secret_file``;
* ``github``, ``gitlab``, ``gitea`` — commit statuses, one context per
  cluster and sync, with the token in ``token_file`` and the repository in
  ``repository`` (``owner/name``; a GitLab project path or numeric id).

Event kinds are the names of `fleetd.daemon.events.EventKind`, or a family
with a star (``drift.*``); `EVENT_KINDS` repeats them here because the
inventory comes before the daemon in the pipeline (a unit test keeps the two
lists equal).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from fleetd.inventory import syntax
from fleetd.inventory.fields import Table

EVENT_KINDS = frozenset(
    {
        "reconcile.started", "reconcile.succeeded", "reconcile.failed", "sync.waiting", "sync.suspended",
        "drift.detected", "drift.corrected", "drift.reported", "objects.pruned", "prune.held",
        "rollout.advanced", "rollout.halted", "rollout.held", "rollout.resumed", "rollout.promoted",
        "cluster.unreachable", "cluster.recovered", "source.revision", "source.failed",
        "inventory.rejected", "inventory.reloaded", "operator.action", "state.unrecorded", "state.recorded",
        "shard.membership", "shard.acquired", "shard.released", "shard.lost",
    }
)  # fmt: skip
SEVERITIES = ("info", "warning", "error")
DEFAULT_DEDUP_WINDOW = 3600.0
DEFAULT_RATE_LIMIT = (30, 3600.0)
DEFAULT_CONTEXT = "fleetd"
DEFAULT_API_URLS = {"github": "https://api.github.com", "gitlab": "https://gitlab.com/api/v4"}
NOTIFICATION_KEYS = frozenset(
    {
        "name", "type", "url", "url_file", "secret_file", "token_file", "api_url", "repository",
        "context", "target_url", "events", "severity", "clusters", "syncs", "dedup_window", "rate_limit",
    }
)  # fmt: skip
_RATE = re.compile(r"(\d+)\s*/\s*(\S+)")
_PATTERN = re.compile(r"[a-z*][a-z0-9*?\[\]!-]*")
_REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+|\d+")


class TargetKind(StrEnum):
    """Where a notification goes."""

    APPRISE = "apprise"
    WEBHOOK = "webhook"
    GITHUB = "github"
    GITLAB = "gitlab"
    GITEA = "gitea"

    @property
    def commit_status(self) -> bool:
        return self in (TargetKind.GITHUB, TargetKind.GITLAB, TargetKind.GITEA)


_ADDRESS_KEYS = {
    TargetKind.APPRISE: {"url", "url_file"},
    TargetKind.WEBHOOK: {"url", "secret_file"},
    TargetKind.GITHUB: {"token_file", "api_url", "repository", "context"},
    TargetKind.GITLAB: {"token_file", "api_url", "repository", "context"},
    TargetKind.GITEA: {"token_file", "api_url", "repository", "context"},
}
_ADDRESS = set().union(*_ADDRESS_KEYS.values())


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification:
    """One ``[[notifications]]`` entry, validated."""

    name: str
    """Unique among the fleet's notifications; the ``notification`` label of the metrics."""
    kind: TargetKind
    url: str | None = None
    """apprise: one inline URL; webhook: the URL POSTed to."""
    url_file: Path | None = None
    """apprise: a file of URLs, one per line (``#`` comments), for URLs that hold tokens."""
    secret_file: Path | None = None
    """webhook: the HMAC-SHA256 key."""
    token_file: Path | None = None
    """Commit statuses: the API token."""
    api_url: str | None = None
    """Commit statuses: the REST API base (``https://api.github.com``, ``https://HOST/api/v1``)."""
    repository: str | None = None
    """Commit statuses: ``owner/name`` (GitLab: the project path or numeric id)."""
    context: str = DEFAULT_CONTEXT
    """Commit statuses: prefix of the status context, ``<context>/<cluster>/<sync>``."""
    target_url: str | None = None
    """A link carried by messages and commit statuses (the web UI, a dashboard)."""
    events: tuple[str, ...] = ("*",)
    """Event kinds or families (``drift.*``); ``*`` is every kind."""
    severity: str = "warning"
    """Least severity sent: info, warning or error (recoveries always follow their failure)."""
    clusters: tuple[str, ...] = ()
    """Shell-style patterns of cluster names; empty = every cluster."""
    syncs: tuple[str, ...] = ()
    """Shell-style patterns of sync names; empty = every sync."""
    dedup_window: float = DEFAULT_DEDUP_WINDOW
    """Seconds during which a repeated failure is not sent again."""
    rate_limit: tuple[int, float] = DEFAULT_RATE_LIMIT
    """At most this many messages per this many seconds."""


def read_notifications(root: Table, base: Path) -> tuple[Notification, ...]:
    """Every ``[[notifications]]`` element of the fleet file; problems are recorded on its document."""
    tables = root.tables("notifications", NOTIFICATION_KEYS)
    found = [_read(table, base) for table in tables]
    seen: set[str] = set()
    for table, notification in zip(tables, found, strict=True):
        if notification is None:
            continue
        if notification.name in seen:
            table.report("name", f"a second notification called {notification.name!r}; names must be unique")
        seen.add(notification.name)
    return tuple(n for n in found if n is not None)


def _read(table: Table, base: Path) -> Notification | None:
    name = table.text("name", syntax.dns_label("notification name"), required='name = "team-chat"')
    kind_text = table.text("type", required='type = "apprise"')
    kind = _kind(table, kind_text)
    if name is None or kind is None:
        return None
    _check_keys(table, kind)

    def path(key: str) -> Path | None:
        text = table.text(key, syntax.nonempty)
        return syntax.resolve_path(base, text) if text else None

    url = table.text("url", _url if kind is TargetKind.WEBHOOK else syntax.nonempty)
    return Notification(
        name=name, kind=kind, url=url, url_file=path("url_file"), secret_file=path("secret_file"),
        token_file=path("token_file"), api_url=_api_url(table, kind), repository=_repository(table, kind),
        context=table.text("context", _context) or DEFAULT_CONTEXT, target_url=table.text("target_url", _url),
        events=table.strings("events", _event) or ("*",), severity=_severity(table),
        clusters=table.strings("clusters", _glob) or (), syncs=table.strings("syncs", _glob) or (),
        dedup_window=table.duration("dedup_window", DEFAULT_DEDUP_WINDOW), rate_limit=_rate(table),
    )  # fmt: skip


def _kind(table: Table, text: str | None) -> TargetKind | None:
    if text is None:
        return None
    try:
        return TargetKind(text)
    except ValueError:
        kinds = ", ".join(k.value for k in TargetKind)
        table.report("type", f"unknown notification type {text!r} (expected one of: {kinds})")
        return None


def _check_keys(table: Table, kind: TargetKind) -> None:
    allowed = _ADDRESS_KEYS[kind]
    for key in sorted(_ADDRESS & table.data.keys() - allowed):
        table.report(
            key, f"{key} does not apply to type = {kind.value!r} (it takes {', '.join(sorted(allowed))})"
        )
    if kind is TargetKind.APPRISE and ("url" in table.data) == ("url_file" in table.data):
        table.report(
            None, 'an apprise notification needs exactly one of url or url_file (e.g. url_file = "slack.url")'
        )
    if kind is TargetKind.WEBHOOK:
        for key, example in (("url", '"https://hooks.example.com/fleetd"'), ("secret_file", '"hook.key"')):
            if key not in table.data:
                table.report(None, f"missing required key '{key}' (add e.g. {key} = {example})")
    if kind.commit_status:
        for key, example in (("token_file", '"github.token"'), ("repository", '"me/fleet"')):
            if key not in table.data:
                table.report(None, f"missing required key '{key}' (add e.g. {key} = {example})")
        if kind is TargetKind.GITEA and "api_url" not in table.data:
            table.report(
                None,
                "missing required key 'api_url' (add e.g. api_url = \"https://gitea.example.com/api/v1\")",
            )
        for key in ("dedup_window", "rate_limit", "severity"):
            if key in table.data:
                table.report(key, "commit statuses are sent on every change of state; remove this key")


def _api_url(table: Table, kind: TargetKind) -> str | None:
    text = table.text("api_url", _url)
    if text is None:
        return DEFAULT_API_URLS.get(kind.value) if kind.commit_status else None
    return text.rstrip("/")


def _repository(table: Table, kind: TargetKind) -> str | None:
    def check(value: str) -> str | None:
        if _REPOSITORY.fullmatch(value):
            return None
        return f"{value!r} is not a repository; write owner/name (GitLab: group/project or the project id)"

    return table.text("repository", check) if kind.commit_status else None


def _url(value: str) -> str | None:
    if value.startswith(("https://", "http://")) and " " not in value:
        return None
    return f"{value!r} is not an http:// or https:// URL"


def _context(value: str) -> str | None:
    if value and " " not in value and not value.endswith("/"):
        return None
    return f"{value!r} is not a status context prefix (no spaces, no trailing '/'), e.g. \"fleetd\""


def _event(value: str) -> str | None:
    if value == "*" or value in EVENT_KINDS:
        return None
    family = value.removesuffix(".*")
    if value.endswith(".*") and any(kind.startswith(family + ".") for kind in EVENT_KINDS):
        return None
    families = sorted({kind.split(".")[0] + ".*" for kind in EVENT_KINDS})
    return (
        f"unknown event kind {value!r} "
        f"(an event name such as reconcile.failed, or one of {', '.join(families)})"
    )


def _glob(value: str) -> str | None:
    return (
        None
        if _PATTERN.fullmatch(value)
        else f"{value!r} is not a name pattern (letters, digits, '-', '*', '?')"
    )


def _severity(table: Table) -> str:
    value = table.text("severity")
    if value is None:
        return "warning"
    if value not in SEVERITIES:
        table.report("severity", f"unknown severity {value!r} (expected one of: {', '.join(SEVERITIES)})")
        return "warning"
    return value


def _rate(table: Table) -> tuple[int, float]:
    text = table.text("rate_limit")
    if text is None:
        return DEFAULT_RATE_LIMIT
    match = _RATE.fullmatch(text.strip())
    if match is None or int(match[1]) < 1:
        table.report("rate_limit", f'{text!r} is not a rate limit; write messages per duration, e.g. "30/1h"')
        return DEFAULT_RATE_LIMIT
    probe = Table(table.doc, {"per": match[2]}, (*table.path, "rate_limit"), {"per"})
    return int(match[1]), probe.duration("per", DEFAULT_RATE_LIMIT[1])
