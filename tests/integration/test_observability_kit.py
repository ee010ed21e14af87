"""The dashboard and the alert rules against a real daemon on the test bed, scraped by a real Prometheus.

Every metric a dashboard query or an alert uses must be in the daemon's
own scrape, and every query (Grafana's variables filled in) must run in
Prometheus; the overview panels must return data.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from testbed.bed import Spoke
from tests.gitrepo import WorkRepo
from tests.integration.fleet import configmap, eventually, running, write_fleet
from tests.observability import alert_rules, concrete, dashboard, dashboard_queries, metric_names
from tests.prometheus import running_prometheus

pytestmark = [pytest.mark.testbed, pytest.mark.timeout(120)]


async def test_every_dashboard_query_and_alert_runs_against_a_real_scrape_of_the_daemon(
    tmp_path: Path, spokes: list[Spoke], namespace: str
) -> None:
    spoke = spokes[0]
    repo = WorkRepo(tmp_path / "repo").write({"apps/cm.yaml": configmap("cm", namespace, {"a": "1"})})
    revision = repo.commit("one ConfigMap")
    config = write_fleet(tmp_path, repo=repo.path, clusters={spoke.name: spoke.kubeconfig},
                         syncs=[{"name": "apps", "path": "apps"}])  # fmt: skip
    (tmp_path / "hook.key").write_text("k")
    config.write_text(
        config.read_text() + f'\n[[notifications]]\nname = "hook"\ntype = "webhook"\n'
        f'url = "http://127.0.0.1:9/hook"\nsecret_file = "{tmp_path / "hook.key"}"\n'
    )
    async with running(config) as daemon:

        async def ready() -> bool:
            status = daemon.state.status(spoke.name, "apps")
            return status is not None and status.result == "ready" and status.revision == revision

        await eventually(ready, "the sync ready")
        target = f"{daemon.fleet.listen_host}:{daemon.fleet.listen_port}"
        async with aiohttp.ClientSession() as http, http.get(f"http://{target}/metrics") as resp:
            scraped = {f.name for f in text_string_to_metric_families(await resp.text())}
        async with running_prometheus(tmp_path / "prometheus", [target]) as prom:
            await prom.wait_for("fleetd_sync_status_info")
            await prom.wait_for("fleetd_reconcile_duration_seconds_bucket")
            results = {q: await prom.query(concrete(q)) for q in dashboard_queries()}
            for rule in alert_rules():
                await prom.query(rule["expr"])  # runs: Prometheus refuses a bad expression
    used = set().union(
        *(metric_names(q) for q in [*dashboard_queries(), *(r["expr"] for r in alert_rules())])
    )
    missing = {name for name in used if name.removesuffix("_total") not in scraped}
    assert not missing, f"queries use metrics the daemon does not export: {missing}"
    overview = next(p for p in dashboard()["panels"] if p["title"] == "Syncs ready")
    assert float(results[overview["targets"][0]["expr"]][0]["value"][1]) == 1.0
    table = next(p for p in dashboard()["panels"] if p["title"] == "Syncs")
    (row,) = results[table["targets"][0]["expr"]]
    assert row["metric"]["reason"] == "ready"
