"""The observability kit (observability/): its dashboard queries and alert expressions, for tests."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

KIT = Path(__file__).resolve().parents[1] / "observability"
DASHBOARD = KIT / "grafana" / "fleetd.json"
RULES = KIT / "prometheus" / "fleetd-alerts.yml"
RULE_TESTS = KIT / "prometheus" / "fleetd-alerts.test.yml"
_METRIC = re.compile(r"\bfleetd_[a-z_]+\b")
#: Grafana's variables, as a query at "now" over a short range sees them.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m", "$cluster": ".*"}


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard's panels and variables."""
    found = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    for variable in dashboard()["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict) and "label_values(" in query.get("query", ""):
            found.append(query["query"].split("(", 1)[1].split(",")[0])
    return found


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def concrete(expr: str) -> str:
    """`expr` with Grafana's variables replaced, so Prometheus can run it."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """Base names (no _bucket/_count/_sum) of the fleetd metrics `expr` uses."""
    return {re.sub(r"_(bucket|count|sum)$", "", name) for name in _METRIC.findall(expr)}
