"""A sync's ``depends_on`` graph as inline SVG, drawn on the server.

Layers by longest path from a sync without dependencies (a sync sits one
column right of its deepest dependency), nodes ordered by name within a
column, edges drawn from a dependency to its dependents. The sync the page
is about is outlined; each node is coloured by its state and links to its
own page. Only presentation attributes and CSS classes are used (no inline
style), so the page's Content-Security-Policy holds.

The inventory refuses dependency cycles, so the layering terminates; a
graph that somehow still had one is drawn with the cycle's nodes in
column 0 rather than looping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from fleetd.api.html import esc, url

NODE_W: Final = 150
NODE_H: Final = 30
GAP_X: Final = 50
GAP_Y: Final = 14


def layers(nodes: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Column of each node: 0 without dependencies, else one more than its deepest dependency."""
    deps = {n["name"]: [d for d in n["depends_on"] if d != n["name"]] for n in nodes}
    column: dict[str, int] = {}

    def depth(name: str, trail: frozenset[str]) -> int:
        if name in column:
            return column[name]
        if name in trail:
            return 0  # a cycle (refused by the inventory): stop here
        below = [depth(d, trail | {name}) + 1 for d in deps.get(name, []) if d in deps]
        column[name] = max(below, default=0)
        return column[name]

    for name in deps:
        depth(name, frozenset())
    return column


def svg(cluster: str, nodes: Sequence[Mapping[str, Any]], current: str) -> str:
    """The graph of ``nodes`` (``name``, ``state``, ``depends_on``) with ``current`` outlined."""
    if len(nodes) <= 1 and not any(n["depends_on"] for n in nodes):
        return '<p class="muted">This cluster has no other syncs; nothing depends on anything.</p>'
    column = layers(nodes)
    rows: dict[int, list[str]] = {}
    for name in sorted(column):
        rows.setdefault(column[name], []).append(name)
    at = {n: (c, i) for c, names in rows.items() for i, n in enumerate(names)}
    width = (max(rows) + 1) * (NODE_W + GAP_X) - GAP_X + 2
    height = max(len(v) for v in rows.values()) * (NODE_H + GAP_Y) - GAP_Y + 2

    def box(name: str) -> tuple[int, int]:
        c, i = at[name]
        return 1 + c * (NODE_W + GAP_X), 1 + i * (NODE_H + GAP_Y)

    edges = []
    for n in nodes:
        for dep in n["depends_on"]:
            if dep in at and n["name"] in at:
                (x1, y1), (x2, y2) = box(dep), box(n["name"])
                edges.append(
                    f'<line class="edge" x1="{x1 + NODE_W}" y1="{y1 + NODE_H // 2}" '
                    f'x2="{x2}" y2="{y2 + NODE_H // 2}" marker-end="url(#arrow)"/>'
                )
    boxes = []
    for n in nodes:
        x, y = box(n["name"])
        cls = f"node st-{esc(n['state'])}{' current' if n['name'] == current else ''}"
        label = n["name"] if len(n["name"]) <= 18 else n["name"][:17] + "…"
        boxes.append(
            f'<a href="{url("clusters", cluster, "syncs", n["name"])}"><g class="{cls}">'
            f"<title>{esc(n['name'])}: {esc(n['state'])}</title>"
            f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="6"/>'
            f'<text x="{x + NODE_W // 2}" y="{y + NODE_H // 2 + 5}" text-anchor="middle">{esc(label)}</text>'
            "</g></a>"
        )
    marker = (
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path class="arrow" d="M 0 0 L 10 5 L 0 10 z"/></marker></defs>'
    )
    return (
        f'<div class="scroll"><svg class="graph" role="img" aria-label="depends_on graph of {esc(cluster)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f"{marker}{''.join(edges)}{''.join(boxes)}</svg></div>"
    )
