"""Checks that span several syncs or files.

Single values are checked as they are read; what remains needs the whole
picture: cluster names unique across files, sync names unique within a
cluster's *effective* set (the fleet-wide syncs its labels select plus its
own), every ``depends_on`` naming a sync of that set, and no dependency
cycles. Problems go to the file that can fix them, and a clash names the
other file and line too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fleetd.inventory.fields import Table
from fleetd.inventory.syncs import Declared


def where(table: Table, key: str | None = None) -> str:
    """``file:line`` of `key` in `table` (or of the table), for messages that point elsewhere."""
    path = table.path if key is None else (*table.path, key)
    line = table.doc.lines.line_of(path)
    return f"{table.doc.file}:{line}" if line is not None else str(table.doc.file)


def check_cluster_names(clusters: Sequence[tuple[str, Table]]) -> None:
    """Report every cluster file whose name another file already uses; `Table` = its [cluster].

    The problem goes to the file that *introduced* the clash — the one
    modified last (ties: the later name) — and names the file and line that
    had the name first, so a new or edited file is what gets blamed.
    """
    first: dict[str, Table] = {}
    for name, table in sorted(clusters, key=lambda c: (_modified(c[1]), str(c[1].doc.file))):
        if name in first:
            table.report(
                "name",
                f"cluster name {name!r} is already used by {_named_at(first[name])}; "
                "cluster names must be unique (rename the file or set [cluster].name)",
            )
        first.setdefault(name, table)


def _modified(table: Table) -> int:
    try:
        return table.doc.file.stat().st_mtime_ns
    except OSError:
        return 0


def _named_at(table: Table) -> str:
    """Where a cluster got its name: the ``name`` key's line, else the file itself (named after it)."""
    if "name" in table.data:
        return where(table, "name")
    return f"{table.doc.file} (named after the file)"


def check_unique_syncs(syncs: Sequence[Declared]) -> None:
    """Report syncs of one file that repeat an earlier sync's name."""
    first: dict[str, Declared] = {}
    for declared in syncs:
        name = declared.sync.name
        if name and name in first:
            declared.table.report(
                "name",
                f"duplicate sync name {name!r} (first declared at "
                f"{where(first[name].table, 'name')}); sync names must be unique",
            )
        first.setdefault(name, declared)


def effective_syncs(
    labels: Mapping[str, str], fleet: Sequence[Declared], own: Sequence[Declared]
) -> list[Declared]:
    """The fleet-wide syncs `labels` select, then the cluster's own; a name clash is reported."""
    chosen = [d for d in fleet if d.sync.selects(labels)]
    fleet_names = {d.sync.name: d for d in chosen}
    for declared in own:
        clash = fleet_names.get(declared.sync.name)
        if clash is None:
            chosen.append(declared)
            continue
        declared.table.report(
            "name",
            f"sync name {declared.sync.name!r} is also used by the fleet-wide sync at "
            f"{where(clash.table, 'name')}, whose selector matches this cluster; "
            "rename one of them or narrow the selector",
        )
    return chosen


def check_dependencies(cluster: str, syncs: Sequence[Declared], *, check_targets: bool) -> None:
    """Report unknown depends_on targets (if `check_targets`) and dependency cycles."""
    by_name = {d.sync.name: d for d in syncs if d.sync.name}
    if check_targets:
        for declared in syncs:
            _check_targets(cluster, declared, by_name)
    for cycle in _cycles({name: d.sync.depends_on for name, d in by_name.items()}):
        _report_cycle(cycle, by_name)


def _check_targets(cluster: str, declared: Declared, by_name: Mapping[str, Declared]) -> None:
    known = ", ".join(sorted(by_name)) or "none"
    for target in declared.sync.depends_on:
        if target not in by_name:
            declared.table.report(
                "depends_on",
                f"depends on {target!r}, but cluster {cluster!r} has no sync "
                f"of that name (its syncs: {known})",
            )


def _cycles(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Cycles found by a depth-first walk (one per back edge), each as a list of names."""
    state: dict[str, str] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for target in graph[node]:
            if state.get(target) == "open":
                found.append(stack[stack.index(target) :])
            elif target in graph and target not in state:
                visit(target)
        state[node] = "done"
        stack.pop()

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def _report_cycle(cycle: list[str], by_name: Mapping[str, Declared]) -> None:
    # Start the cycle at a sync a cluster file declares when there is one: that file can be fixed
    # for this cluster alone. Among equals, start at the smallest name so repeats dedupe.
    start = min(range(len(cycle)), key=lambda i: (by_name[cycle[i]].sync.fleet_wide, cycle[i]))
    ordered = cycle[start:] + cycle[:start]
    text = " -> ".join([*ordered, ordered[0]])
    by_name[ordered[0]].table.report(
        "depends_on", f"dependency cycle: {text}; remove one of these depends_on entries"
    )
