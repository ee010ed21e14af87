"""The observability kit without a daemon: promtool checks the rules and runs their unit tests; the dashboard
parses and uses only documented metrics."""

from __future__ import annotations

import re
import subprocess

import pytest

import fleetd.api.metrics
from tests.observability import (
    RULE_TESTS,
    RULES,
    alert_rules,
    dashboard,
    dashboard_queries,
    metric_names,
)
from tests.prometheus import binary

pytestmark = pytest.mark.timeout(60)
DOCUMENTED = {
    re.sub(r"_total$", "", name)
    for name in re.findall(r"^\| `(fleetd_\w+)`", fleetd.api.metrics.__doc__ or "", re.MULTILINE)
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args], capture_output=True, text=True, timeout=30, check=False
    )


def test_promtool_accepts_the_alert_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_passes_its_promtool_unit_tests() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_a_for_clause_and_a_description() -> None:
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    for rule in alert_rules():
        assert rule["alert"] in tested, f"{rule['alert']} has no promtool unit test"
        assert "for" in rule, f"{rule['alert']} has no for: clause"
        assert rule["annotations"]["description"], rule["alert"]


def test_counters_in_alerts_are_read_through_increase() -> None:
    for rule in alert_rules():
        for name in re.findall(r"fleetd_\w+(?:_total|_count)\b", rule["expr"]):
            assert f"increase({name}" in rule["expr"].replace(" ", ""), f"{rule['alert']} reads {name} raw"


def test_the_dashboard_has_the_promised_sections_and_only_documented_metrics() -> None:
    titles = {p["title"] for p in dashboard()["panels"]}
    for section in (
        "Fleet overview",
        "Drift",
        "Reconciles",
        "Kubernetes API",
        "Rollout, source, notifications",
    ):
        assert section in titles
    used = set().union(*(metric_names(q) for q in dashboard_queries()))
    used |= set().union(*(metric_names(r["expr"]) for r in alert_rules()))
    assert {re.sub(r"_total$", "", n) for n in used} <= DOCUMENTED
