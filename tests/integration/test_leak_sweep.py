"""Canary secrets appear nowhere fleetd writes or answers.

Canary values — one containing ``${...}``, which must reach the spoke
verbatim and never go through variable substitution — are SOPS-encrypted
in git, in a whole Secret and in a kustomize ``secretGenerator`` input. The
daemon applies them, then a commit rotates one (so the diff has something
to show) and another breaks kustomize on a decrypted value. Then every
output is searched, as is and base64-encoded: logs at DEBUG, the state
directory, the status API, the events API, the web UI's pages and sync
detail, ``/metrics``, ``fleetd status``, ``fleetd diff`` (text and JSON), the
spokes' ledgers, and the temporary directories.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml

from fleetd.reconcile.ledger import SYSTEM_NAMESPACE
from testbed.bed import Spoke
from tests.gitrepo import WorkRepo
from tests.integration.fleet import configmap, eventually, get, running, write_fleet
from tests.integration.test_secrets import ONLY_DATA, Keys, keys, private_tmp

pytestmark = [pytest.mark.testbed, pytest.mark.timeout(240)]
__all__ = ["keys", "private_tmp"]  # fixtures used by name below

VERBATIM = "canary-${NOT_A_VARIABLE}-7d1e"
ROTATED = "canary-rotated-b3c9a1"
GENERATED = "canary-dotenv-52f0aa"
CANARIES = [VERBATIM, ROTATED, GENERATED, "NOT_A_VARIABLE"]


def forms(text: str) -> list[bytes]:
    return [text.encode(), base64.b64encode(text.encode())]


def found(data: bytes | str) -> list[str]:
    raw = data.encode() if isinstance(data, str) else data
    return [c for c in CANARIES if any(f in raw for f in forms(c))]


def secret_yaml(keys: Keys, ns: str, password: str) -> str:
    doc = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": ns},
           "stringData": {"password": password}}  # fmt: skip
    return keys.encrypt("db.yaml", yaml.safe_dump(doc), *ONLY_DATA)


def files(root: Path, label: str) -> dict[str, bytes | str]:
    """Every file under ``root``, by a name for the report."""
    return {f"{label} {p.relative_to(root)}": p.read_bytes() for p in root.rglob("*") if p.is_file()}


def run_cli(*argv: str) -> str:
    done = subprocess.run([sys.executable, "-m", "fleetd", *argv], capture_output=True, text=True, timeout=90,
                          check=False)  # fmt: skip
    return done.stdout + done.stderr


async def test_canary_secrets_appear_in_no_output_and_a_dollar_brace_value_is_applied_verbatim(
    spokes: list[Spoke], namespace: str, keys: Keys, tmp_path: Path, private_tmp: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    spoke = spokes[0]
    repo = WorkRepo(tmp_path / "repo")
    kustomization = {"resources": ["cm.yaml"], "namespace": namespace,
                     "generatorOptions": {"disableNameSuffixHash": True},
                     "secretGenerator": [{"name": "gen", "envs": ["gen.env"]}]}  # fmt: skip
    repo.write({
        "plain/db.yaml": secret_yaml(keys, namespace, VERBATIM),
        "plain/cm.yaml": configmap("plain-cm", namespace, {"who": "${cluster_name}"}),
        "kust/kustomization.yaml": yaml.safe_dump(kustomization),
        "kust/gen.env": keys.encrypt("gen.env", f"PASSWORD={GENERATED}\n"),
        "kust/cm.yaml": configmap("kust-cm", namespace, {"v": "1"}),
    })  # fmt: skip
    first = repo.commit("canaries")
    syncs = [{"name": "plain", "path": "plain"}, {"name": "kust", "path": "kust"}]
    config = write_fleet(tmp_path, repo=repo.path, clusters={spoke.name: spoke.kubeconfig}, syncs=syncs)
    config.write_text(config.read_text() + f'\n[decryption]\nage_key_files = ["{keys.key_file}"]\n')
    outputs: dict[str, bytes | str] = {}
    async with running(config) as daemon:

        async def ready(revision: str) -> bool:
            statuses = [daemon.state.status(spoke.name, s) for s in ("plain", "kust")]
            return all(s is not None and s.result == "ready" and s.revision == revision for s in statuses)

        await eventually(lambda: ready(first), "canaries applied")
        live = await get(spoke, f"/api/v1/namespaces/{namespace}/secrets/db")
        assert live is not None
        assert base64.b64decode(live["data"]["password"]).decode() == VERBATIM, "applied verbatim"
        plain_cm = await get(spoke, f"/api/v1/namespaces/{namespace}/configmaps/plain-cm")
        assert plain_cm is not None
        assert plain_cm["data"] == {"who": spoke.name}, "variables still work where no secret is"

        repo.write({"plain/db.yaml": secret_yaml(keys, namespace, ROTATED)})
        repo.commit("rotate the password (not fetched yet: the diff shows it)")
        outputs["diff text"] = run_cli("diff", spoke.name, "--config", str(config))
        outputs["diff json"] = run_cli("diff", spoke.name, "--config", str(config), "--json")
        assert "*** (changed)" in str(outputs["diff text"])

        base = f"http://{daemon.fleet.listen_host}:{daemon.fleet.listen_port}"
        await daemon.http_ready.wait()
        async with aiohttp.ClientSession() as http:
            for path in ("/api/v1/status", "/api/v1/events?limit=1000", "/metrics", "/",
                         f"/api/v1/clusters/{spoke.name}", f"/api/v1/clusters/{spoke.name}/syncs/plain",
                         f"/api/v1/clusters/{spoke.name}/syncs/kust", f"/clusters/{spoke.name}/syncs/plain",
                         "/events", "/api/v1/revisions"):  # fmt: skip
                async with http.get(base + path) as resp:
                    outputs[f"GET {path} ({resp.status})"] = await resp.read()
        for sync in ("plain", "kust"):
            ledger = await get(
                spoke, f"/api/v1/namespaces/{SYSTEM_NAMESPACE}/configmaps/{daemon.fleet.name}.{sync}"
            )
            outputs[f"ledger {sync}"] = json.dumps(ledger)
        await asyncio.sleep(0)
    outputs["fleetd status"] = run_cli("status", "--config", str(config), "--json")
    outputs["logs"] = "\n".join(f"{r.name} {r.levelname} {r.getMessage()} {r.args!r}" for r in caplog.records)
    outputs |= files(tmp_path / "state", "state") | files(private_tmp, "runtime")
    assert any("plain" in str(v) for v in outputs.values())
    assert {name: found(data) for name, data in outputs.items() if found(data)} == {}
