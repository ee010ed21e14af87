"""``fleetd diff``: print what the daemon would change on a cluster (`fleetd.reconcile.diff`).

Exit codes: 0 nothing would change, 1 something would, 2 the diff could not
be made (invalid inventory, unknown cluster or sync, cluster unreachable, a
sync that fails to render, decrypt or validate).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fleetd.errors import FleetdError, InventoryError
from fleetd.inventory import load_fleet
from fleetd.kube.objects import BUILTIN_GROUPS, ObjRef
from fleetd.reconcile.diff import DiffReport, SyncDiff, diff_cluster

EXIT_SAME, EXIT_CHANGES, EXIT_ERROR = 0, 1, 2

_SIGN = {"created": "+", "changed": "~", "pruned": "-"}
_WORDS = {"created": "created", "changed": "changed", "pruned": "would prune"}
_COLOURS = {"+": "32", "~": "33", "-": "31", "@": "36", "!": "31;1"}


def label(ref: ObjRef) -> str:
    """``Deployment demo/web``; custom kinds keep their group (``Widget.example.com demo/w``)."""
    kind = ref.kind if ref.group in BUILTIN_GROUPS else f"{ref.kind}.{ref.group}"
    return f"{kind} {ref.namespace}/{ref.name}" if ref.namespace else f"{kind} {ref.name}"


def render_report(report: DiffReport, *, color: bool) -> str:
    """The human report: per sync its +/~/- lines with indented diffs, then the totals."""
    paint = _painter(color)
    lines = [f"cluster {report.cluster} at {report.revision[:12]} ({report.ref})"]
    for sync in report.syncs:
        lines += _sync_lines(sync, paint)
    lines.append(summary(report))
    return "\n".join(lines)


def summary(report: DiffReport) -> str:
    created, changed, pruned = (report.count(a) for a in ("created", "changed", "pruned"))
    return f"{created} to create, {changed} to change, {pruned} to prune"


def _painter(color: bool) -> Callable[[str, str], str]:
    def paint(text: str, key: str) -> str:
        code = _COLOURS.get(key)
        return f"\x1b[{code}m{text}\x1b[0m" if color and code else text

    return paint


def _sync_lines(sync: SyncDiff, paint: Callable[[str, str], str]) -> list[str]:
    shown = [o for o in sync.objects if o.action != "unchanged"]
    note = f" ({sync.note})" if sync.note else ""
    if sync.errors:
        return [paint(f"! sync {sync.name}: could not be diffed ({len(sync.errors)} error(s))", "!")]
    if not shown:
        return [f"sync {sync.name}: no changes{note}"]
    lines = [f"sync {sync.name}:{note}"]
    for obj in shown:
        sign = _SIGN[obj.action]
        lines.append(paint(f"{sign} {label(obj.ref)} ({_WORDS[obj.action]})", sign))
        lines += [f"    note: {n}" for n in obj.notes]
        lines += ["    " + paint(line, line[:1]) for line in obj.diff.splitlines()]
    return lines


def report_json(report: DiffReport) -> dict[str, Any]:
    """The machine document: the same content as `render_report`, unchanged objects included."""
    return {
        "ok": not report.errors,
        "changes": report.has_changes,
        "cluster": report.cluster,
        "revision": report.revision,
        "ref": report.ref,
        "summary": {a: report.count(a) for a in ("created", "changed", "pruned")},
        "syncs": [_sync_json(s) for s in report.syncs],
    }


def _sync_json(sync: SyncDiff) -> dict[str, Any]:
    objects = [
        {
            "action": o.action, "kind": o.ref.kind, "group": o.ref.group, "namespace": o.ref.namespace,
            "name": o.ref.name, "origin": o.origin, "diff": o.diff, "notes": list(o.notes),
        }
        for o in sync.objects
    ]  # fmt: skip
    return {"name": sync.name, "note": sync.note, "errors": list(sync.errors), "objects": objects}


# --- the command ----------------------------------------------------------------------------------


async def run(config: Path, cluster: str, sync: str | None, as_json: bool) -> int:
    """``fleetd diff``: print the report; 0 no change, 1 changes, 2 the diff could not be made."""
    try:
        fleet = await asyncio.to_thread(load_fleet, config)
        report = await diff_cluster(fleet, cluster, sync)
    except InventoryError as exc:
        return _fail(f"the inventory is invalid ({len(exc.problems)} problem(s)):", as_json, exc.problems)
    except FleetdError as exc:
        return _fail(str(exc), as_json)
    print(json.dumps(report_json(report), indent=2) if as_json else render_report(report, color=_colour()))
    for error in report.errors:
        print(f"fleetd diff: cluster {report.cluster}, {error}", file=sys.stderr)
    if report.errors:
        return EXIT_ERROR
    return EXIT_CHANGES if report.has_changes else EXIT_SAME


def _fail(message: str, as_json: bool, details: Iterable[object] = ()) -> int:
    lines = [str(d) for d in details]
    print(f"fleetd diff: {message}", *(f"  {line}" for line in lines), sep="\n", file=sys.stderr)
    if as_json:
        print(json.dumps({"ok": False, "error": message, "details": lines}, indent=2))
    return EXIT_ERROR


def _colour() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ
