"""``fleetd mcp`` driven by the MCP SDK's own client over stdio, against a daemon on the real test bed.

The daemon runs in the test's event loop and decrypts a real
sops-encrypted Secret (and a sops-encrypted ConfigMap) from git; the MCP
server is the real ``fleetd mcp`` process, talking to the daemon through
its control socket and reading its state directory. Canary values are
planted in git (encrypted) and in the live Secret on the cluster, and every
tool's every answer is searched for them, plain and base64-encoded.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

from fleetd.daemon.events import EventKind
from fleetd.daemon.root import Daemon
from testbed.bed import Spoke
from tests.gitrepo import WorkRepo
from tests.integration.fleet import configmap, eventually, get, put, running, write_fleet
from tests.integration.test_secrets import SOPS, Keys, secret

pytestmark = [pytest.mark.testbed, pytest.mark.timeout(180)]

GIT_CANARY = "git-canary-7d1e0f-db-password"
LIVE_CANARY = "live-canary-a93c4b-edited-on-the-cluster"
CM_CANARY = "configmap-canary-55e1aa-from-sops"
ONLY_SECRET_DATA = "^(data|stringData)$"
CANARIES = [GIT_CANARY, LIVE_CANARY, CM_CANARY]
READ_TOOLS = {"fleet_status", "get_cluster", "get_sync", "list_events", "diff", "rendered_manifests",
              "rollout_status", "explain_sync"}  # fmt: skip
WRITE_TOOLS = {"reconcile", "suspend", "resume", "rollout_hold", "rollout_resume", "rollout_promote"}


def leaks(text: str) -> list[str]:
    forms = {c: [c, base64.b64encode(c.encode()).decode()] for c in CANARIES}
    return [c for c, found in forms.items() if any(f in text for f in found)]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    if not SOPS.is_file():
        pytest.fail(f"sops is not built at {SOPS}: run `python -m testbed build`")
    return Keys(tmp_path_factory.mktemp("mcp-keys"))


@asynccontextmanager
async def mcp_client(config: Path, *, read_write: bool = False) -> AsyncIterator[Client]:
    args = ["-m", "fleetd", "mcp", "--config", str(config), *(["--read-write"] if read_write else [])]
    params = StdioServerParameters(command=sys.executable, args=args, env={"PATH": os.environ["PATH"]})
    async with Client(params, read_timeout_seconds=90) as client:
        yield client


async def call(
    client: Client, tool: str, arguments: dict[str, Any] | None = None
) -> tuple[dict[str, Any], str]:
    """The tool's structured answer and every text it returned."""
    result = await client.call_tool(tool, arguments or {})
    text = "\n".join(getattr(c, "text", "") for c in result.content)
    assert not result.is_error, f"{tool}{arguments}: {text}"
    return dict(result.structured_content or {}), text + json.dumps(result.structured_content)


async def ready(daemon: Daemon, cluster: str, revision: str) -> bool:
    syncs = ("apps", "secrets")
    statuses = [daemon.state.status(cluster, n) for n in syncs]
    return all(s is not None and s.result == "ready" and s.revision == revision for s in statuses)


async def drifted(daemon: Daemon, cluster: str, sync: str) -> bool:
    return daemon.state.drifted_count(cluster, sync) > 0


async def test_an_agent_reads_drift_and_masked_diffs_and_no_tool_ever_returns_a_secret(
    tmp_path: Path, spokes: list[Spoke], namespace: str, keys: Keys
) -> None:
    spoke, ns = spokes[2], namespace
    repo = WorkRepo(tmp_path / "repo")
    db: dict[str, Any] = secret("db", password=GIT_CANARY) | {"metadata": {"name": "db", "namespace": ns}}
    sealed = {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "sealed", "namespace": ns},
        "data": {"token": CM_CANARY},
    }  # fmt: skip
    encrypted = {
        "secrets/db.yaml": keys.encrypt("db.yaml", yaml.safe_dump(db), "--encrypted-regex", ONLY_SECRET_DATA),
        "secrets/sealed.yaml": keys.encrypt(
            "sealed.yaml", yaml.safe_dump(sealed), "--encrypted-regex", "^data$"
        ),
    }
    repo.write({"apps/settings.yaml": configmap("settings", ns, {"colour": "blue"}), **encrypted})
    revision = repo.commit("apps and encrypted secrets")
    config = write_fleet(
        tmp_path, repo=repo.path, clusters={spoke.name: spoke.kubeconfig},
        syncs=[{"name": "apps", "path": "apps", "drift": "report"},
               {"name": "secrets", "path": "secrets", "drift": "report"}],
    )  # fmt: skip
    config.write_text(config.read_text() + f'\n[decryption]\nage_key_files = ["{keys.key_file}"]\n')
    async with running(config) as daemon:
        await eventually(lambda: ready(daemon, spoke.name, revision), "both syncs ready", 60)
        live = await get(spoke, f"/api/v1/namespaces/{ns}/secrets/db")
        assert live is not None
        assert base64.b64decode(live["data"]["password"]).decode() == GIT_CANARY
        live["data"]["password"] = base64.b64encode(LIVE_CANARY.encode()).decode()
        await put(spoke, "PUT", f"/api/v1/namespaces/{ns}/secrets/db", live)
        settings = await get(spoke, f"/api/v1/namespaces/{ns}/configmaps/settings")
        assert settings is not None
        settings["data"]["colour"] = "red"
        await put(spoke, "PUT", f"/api/v1/namespaces/{ns}/configmaps/settings", settings)
        await eventually(lambda: drifted(daemon, spoke.name, "apps"), "the ConfigMap's drift reported")

        async with mcp_client(config) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) == READ_TOOLS, "no write tool without --read-write"
            assert all(t.annotations and t.annotations.read_only_hint for t in tools.values())
            assert all(len(t.description or "") > 150 for t in tools.values())

            sync, _ = await call(client, "get_sync", {"cluster": spoke.name, "sync": "apps"})
            assert sync["drift"]["policy"] == "report"
            assert [d["object"] for d in sync["drift"]["objects"]] == [f"ConfigMap {ns}/settings"]
            assert "/data" in sync["drift"]["objects"][0]["reason"]
            assert {o["object"]: o["health"]["status"] for o in sync["objects"]} == {
                f"ConfigMap {ns}/settings": "current"
            }
            assert (sync["status"]["result"], sync["status"]["revision"]) == ("ready", revision)

            diff, _ = await call(client, "diff", {"cluster": spoke.name, "sync": "secrets"})
            (secrets_sync,) = diff["syncs"]
            db_diff = next(o for o in secrets_sync["objects"] if o["kind"] == "Secret")
            assert db_diff["action"] == "changed", db_diff
            assert "*** (changed)" in db_diff["diff"], db_diff

            calls: list[tuple[str, dict[str, Any]]] = [
                ("fleet_status", {}),
                ("get_cluster", {"cluster": spoke.name}),
                ("get_sync", {"cluster": spoke.name, "sync": "secrets"}),
                ("list_events", {"limit": 500}),
                (
                    "list_events",
                    {"cluster": spoke.name, "kinds": ["drift.reported"], "min_severity": "warning"},
                ),
                ("diff", {"cluster": spoke.name}),
                ("rendered_manifests", {"cluster": spoke.name, "sync": "secrets"}),
                ("rendered_manifests", {"cluster": spoke.name, "sync": "apps"}),
                ("rollout_status", {}),
                ("explain_sync", {"cluster": spoke.name, "sync": "secrets"}),
                ("explain_sync", {"cluster": spoke.name, "sync": "apps"}),
            ]
            outputs = [await call(client, name, args) for name, args in calls]
            refused = await client.call_tool("get_sync", {"cluster": "nowhere", "sync": "apps"})
        assert {name for name, _ in calls} == READ_TOOLS
        for _, text in outputs:
            assert leaks(text) == [], f"a secret value leaked: {leaks(text)} in {text[:300]}"
        manifests = outputs[6][0]
        shown = {o["manifest"]["kind"]: o["manifest"] for o in manifests["objects"]}
        assert shown["Secret"]["stringData"] == {"password": "***"}
        assert shown["ConfigMap"]["data"] == "***"  # decrypted from a SOPS file: only its identity shows
        explained = outputs[10][0]  # apps: its ConfigMap drifted, policy report
        assert explained["ready"] is False
        assert "differ from git" in explained["summary"], explained
        assert refused.is_error
        assert "no cluster 'nowhere'" in "".join(getattr(c, "text", "") for c in refused.content)

        async with mcp_client(config, read_write=True) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert names == READ_TOOLS | WRITE_TOOLS
            _, text = await call(client, "suspend", {"cluster": spoke.name, "sync": "apps"})
            assert "suspended" in text
            await call(client, "resume", {"cluster": spoke.name, "sync": "apps"})
        actions = daemon.state.events(cluster=spoke.name, kinds=(str(EventKind.OPERATOR_ACTION),))
        assert [e.message for e in actions][-2:] == [
            f"{spoke.name}/apps suspended",
            f"{spoke.name}/apps resumed",
        ]
