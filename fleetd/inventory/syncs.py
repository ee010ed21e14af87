"""Reading ``[[syncs]]``, their ``[[syncs.ignore]]`` rules and ``[defaults]``.

A sync's optional settings and the fleet's ``[defaults]`` are the same keys
with the same checks, so one reader serves both: `read_options` starts from
a base (the built-in values, or the fleet's defaults) and overrides what the
table sets. Checks that need more than one sync (unique names, dependencies)
live in `consistency`; a `Declared` keeps each sync's table so those checks
can still point at the right file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fleetd.inventory import syntax
from fleetd.inventory.fields import Table
from fleetd.inventory.model import DriftPolicy, IgnoreRule, PruneBudget, Sync, SyncDefaults, frozen_map

OPTION_KEYS = frozenset(
    {
        "prune",
        "interval",
        "wait",
        "timeout",
        "drift",
        "namespace",
        "suspend",
        "force",
        "max_prune",
        "allow_empty",
    }
)
SYNC_KEYS = OPTION_KEYS | {"name", "path", "depends_on", "ignore", "health_checks"}
FLEET_SYNC_KEYS = SYNC_KEYS | {"selector"}
IGNORE_KEYS = frozenset({"paths", "group", "kind", "name", "namespace"})
_SELECTOR_MISPLACED = "only fleet-wide syncs (in the fleet file) have a selector; remove it here"
_DRIFT_VALUES = tuple(policy.value for policy in DriftPolicy)


@dataclass(frozen=True, slots=True, kw_only=True)
class Declared:
    """A sync together with the table it was read from, to place later problems."""

    sync: Sync
    table: Table


def read_options(table: Table | None, base: SyncDefaults) -> SyncDefaults:
    """The optional sync settings of `table`, falling back to `base`."""
    if table is None:
        return base
    return SyncDefaults(
        prune=table.boolean("prune", base.prune),
        interval=table.duration("interval", base.interval),
        wait=table.boolean("wait", base.wait),
        timeout=table.duration("timeout", base.timeout),
        drift=_drift(table, base.drift),
        namespace=table.text("namespace", syntax.dns_label("namespace name")) or base.namespace,
        suspend=table.boolean("suspend", base.suspend),
        force=table.boolean("force", base.force),
        budget=_budget(table, base.budget),
    )


def _budget(table: Table, base: PruneBudget) -> PruneBudget:
    allow_empty = table.boolean("allow_empty", base.allow_empty)
    if "max_prune" not in table.data:
        return PruneBudget(percent=base.percent, count=base.count, allow_empty=allow_empty)
    value = table.data["max_prune"]
    hint = 'use a share such as "50%" or a count such as 10'
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return PruneBudget(percent=None, count=value, allow_empty=allow_empty)
    if isinstance(value, str) and (match := re.fullmatch(r"(\d{1,3})%", value)) and int(match[1]) <= 100:
        return PruneBudget(percent=int(match[1]), count=None, allow_empty=allow_empty)
    table.report("max_prune", f"expected a share or a count, got {value!r}; {hint}")
    return base


def _drift(table: Table, default: DriftPolicy) -> DriftPolicy:
    value = table.text("drift")
    if value is None:
        return default
    if value not in _DRIFT_VALUES:
        table.report("drift", f"unknown drift policy {value!r} (expected one of: {', '.join(_DRIFT_VALUES)})")
        return default
    return DriftPolicy(value)


def read_syncs(parent: Table, defaults: SyncDefaults, *, fleet_wide: bool) -> list[Declared]:
    """Every ``[[syncs]]`` element of `parent`, defaults applied."""
    if fleet_wide:
        tables = parent.tables("syncs", FLEET_SYNC_KEYS)
    else:
        tables = parent.tables("syncs", SYNC_KEYS, {"selector": _SELECTOR_MISPLACED})
    return [_read_sync(table, defaults, fleet_wide) for table in tables]


def _read_sync(table: Table, defaults: SyncDefaults, fleet_wide: bool) -> Declared:
    name = table.text("name", syntax.dns_label("sync name"), required='name = "apps"') or ""
    path = table.text("path", syntax.sync_path, required='path = "apps/base"')
    options = read_options(table, defaults)
    sync = Sync(
        name=name,
        path=syntax.normalize_path(path or "."),
        source_file=syntax.absolute(table.doc.file),
        fleet_wide=fleet_wide,
        selector=frozen_map(_selector(table, fleet_wide)),
        depends_on=_depends_on(table, name),
        health_checks=table.strings("health_checks", _health_check) or (),
        ignore=tuple(_read_ignore(rule) for rule in table.tables("ignore", IGNORE_KEYS)),
        prune=options.prune,
        interval=options.interval,
        wait=options.wait,
        timeout=options.timeout,
        drift=options.drift,
        namespace=options.namespace,
        suspend=options.suspend,
        force=options.force,
        budget=options.budget,
    )
    return Declared(sync=sync, table=table)


def _selector(table: Table, fleet_wide: bool) -> dict[str, str]:
    return table.string_map("selector", syntax.label_key, syntax.label_value) if fleet_wide else {}


def _depends_on(table: Table, own_name: str) -> tuple[str, ...]:
    names = table.strings("depends_on") or ()
    if own_name and own_name in names:
        message = f"sync {own_name!r} depends on itself; remove {own_name!r} from depends_on"
        table.report("depends_on", message)
    return tuple(dict.fromkeys(n for n in names if n != own_name))


_HEALTH_CHECK = re.compile(
    r"[A-Za-z][A-Za-z0-9]*(\.[a-z0-9.-]+)?/([a-z0-9]([-a-z0-9]*[a-z0-9])?/)?[a-z0-9]([-.a-z0-9]*[a-z0-9])?"
)


def _health_check(text: str) -> str | None:
    """``Kind/name`` or ``Kind/namespace/name``; ``Kind.group/...`` for custom kinds."""
    if _HEALTH_CHECK.fullmatch(text):
        return None
    return f"{text!r} is not Kind/name or Kind/namespace/name (e.g. Deployment/apps/web)"


def _read_ignore(table: Table) -> IgnoreRule:
    paths = table.strings("paths", syntax.json_pointer)
    if paths is None and "paths" not in table.data:
        table.report(None, "missing required key 'paths' (add e.g. paths = [\"/spec/replicas\"])")
    elif paths == () and table.data.get("paths") == []:
        table.report("paths", 'is empty; list at least one JSON pointer, e.g. ["/spec/replicas"]')
    return IgnoreRule(
        paths=paths or (),
        group=table.text("group"),
        kind=table.text("kind"),
        name=table.text("name"),
        namespace=table.text("namespace"),
    )
