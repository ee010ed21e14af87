"""What a notification says: fleet, cluster, sync, revision, what happened, and what to do.

Pure. A `Notice` is built from one event and the gate's verdict
(`fleetd.notify.dedup`). Its title fits a chat line or an e-mail subject;
its body has one fact per line; its JSON form is the signed webhook's
payload. The text comes from the event (which never holds a secret value;
see `fleetd.daemon.events`) and from fixed hints per kind.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fleetd.daemon.events import Event, EventKind, Severity
from fleetd.notify.dedup import Reason, Verdict

#: What the reader should do, per event kind.
HINTS: dict[EventKind, str] = {
    EventKind.RECONCILE_FAILED: "Fix the manifests in git (or what the error names on the cluster) and push; "
    "fleetd retries with back-off. Details: `fleetd status`, `fleetd diff {cluster} {sync}`.",
    EventKind.PRUNE_HELD: "The revision would delete more than the deletion budget allows. Check "
    "`fleetd diff {cluster} {sync}`; restore the objects in git, or let an operator allow the prune.",
    EventKind.CLUSTER_UNREACHABLE: "Check the cluster's API server, network and kubeconfig "
    "(`fleetd check`); fleetd reconnects on its own.",
    EventKind.SOURCE_FAILED: "Check the repository URL, credentials and host keys (`fleetd check`); "
    "clusters keep the last good revision.",
    EventKind.ROLLOUT_HALTED: "A wave failed at the new revision, so later waves wait. Fix it with a new "
    "commit, or `fleetd rollout promote` to let the next wave go anyway.",
    EventKind.INVENTORY_REJECTED: "Fix the inventory file named in the message; the last good inventory "
    "stays in force.",
    EventKind.STATE_UNRECORDED: "Free space or fix permissions of the state directory; reconciling goes on.",
    EventKind.DRIFT_DETECTED: 'An object was changed outside git; fleetd corrects it (drift = "correct").',
    EventKind.DRIFT_REPORTED: 'An object differs from git and is left as it is (drift = "report"): revert '
    "it, or commit the change to git.",
    EventKind.SYNC_WAITING: "The sync waits for its dependencies (depends_on) to be ready.",
}
_WORDS: dict[EventKind, str] = {
    EventKind.RECONCILE_FAILED: "failed",
    EventKind.RECONCILE_SUCCEEDED: "reconciled",
    EventKind.PRUNE_HELD: "prune held",
    EventKind.CLUSTER_UNREACHABLE: "unreachable",
    EventKind.CLUSTER_RECOVERED: "reachable again",
    EventKind.SOURCE_FAILED: "source fetch failing",
    EventKind.ROLLOUT_HALTED: "rollout halted",
    EventKind.INVENTORY_REJECTED: "inventory rejected",
    EventKind.STATE_UNRECORDED: "state not recorded",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Notice:
    """One message for people (apprise) or programs (the signed webhook)."""

    fleet: str
    event: Event
    reason: Reason
    title: str
    body: str
    severity: Severity
    hint: str | None = None
    since: float | None = None
    repeats: int = 0
    held_by_rate_limit: int = 0
    link: str | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    """The same on every retry of this message (the webhook's X-Fleetd-Delivery)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "fleet": self.fleet, "reason": str(self.reason), "title": self.title, "message": self.body,
            "severity": str(self.severity), "hint": self.hint, "since": self.since, "repeats": self.repeats,
            "held_by_rate_limit": self.held_by_rate_limit, "link": self.link, "event": self.event.to_json(),
        }  # fmt: skip


def subject(event: Event) -> str:
    """``pi5/apps``, ``pi5``, or ``fleet`` for events about the whole fleet."""
    if event.cluster and event.sync:
        return f"{event.cluster}/{event.sync}"
    return event.cluster or "fleet"


def notice(fleet: str, event: Event, verdict: Verdict, *, held: int = 0, link: str | None = None) -> Notice:
    """The message for `event` sent for `verdict.reason`."""
    reason = verdict.reason or Reason.EVENT
    rev = f" at {event.revision[:12]}" if event.revision else ""
    what = _WORDS.get(event.kind, str(event.kind))
    if reason is Reason.RECOVERY:
        title, severity = f"[{fleet}] {subject(event)} recovered{rev}", Severity.INFO
    elif reason is Reason.STILL_FAILING:
        title, severity = f"[{fleet}] {subject(event)} still {what}{rev}", event.severity
    else:
        title, severity = f"[{fleet}] {subject(event)} {what}{rev}", event.severity
    hint = None if reason is Reason.RECOVERY else HINTS.get(event.kind)
    if hint:
        hint = hint.format(cluster=event.cluster or "CLUSTER", sync=event.sync or "")
    lines = [
        f"Fleet: {fleet}",
        *([f"Cluster: {event.cluster}"] if event.cluster else []),
        *([f"Sync: {event.sync}"] if event.sync else []),
        *([f"Revision: {event.revision}"] if event.revision else []),
        f"What happened: {event.message}",
        *([f"Objects: {', '.join(event.objects[:10])}"] if event.objects else []),
        *(_history(reason, verdict)),
        *([f"What to do: {hint}"] if hint else []),
        *([f"({held} earlier message(s) were held back by the rate limit)"] if held else []),
        *([f"More: {link}"] if link else []),
    ]
    return Notice(
        fleet=fleet, event=event, reason=reason, title=title, body="\n".join(lines), severity=severity,
        hint=hint, since=verdict.since, repeats=verdict.repeats, held_by_rate_limit=held, link=link,
    )  # fmt: skip


def _history(reason: Reason, verdict: Verdict) -> list[str]:
    if verdict.since is None or reason not in (Reason.RECOVERY, Reason.STILL_FAILING):
        return []
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(verdict.since))
    word = "Failing since" if reason is Reason.STILL_FAILING else "Had failed since"
    return [f"{word}: {started} ({verdict.repeats} repeat(s) not sent)"]
