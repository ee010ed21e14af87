"""Helpers for end-to-end tests: a fleet inventory on disk, a daemon in the test's loop, polling."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fleetd.daemon.root import Daemon
from testbed.bed import Spoke
from testbed.processes import free_port


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def write_fleet(
    tmp_path: Path,
    *,
    repo: Path,
    clusters: dict[str, Path],
    syncs: list[dict[str, Any]],
    name: str | None = None,
    waves: dict[str, int] | None = None,
    variables: dict[str, dict[str, str]] | None = None,
    source_interval: str = "1h",
    fleet_extra: str = "",
) -> Path:
    """A fleet file plus one cluster file per spoke, each cluster with the same syncs.

    ``fleet_extra``: TOML appended to the fleet file (e.g. a ``[fleet.sharding]`` table).
    """
    inv = tmp_path / "inventory"
    inv.mkdir(exist_ok=True)
    fleet = inv / "fleetd.toml"
    fleet.write_text(
        f'[fleet]\nname = "{name or unique("fleet")}"\nstate_dir = "{tmp_path / "state"}"\n'
        f'listen = "127.0.0.1:{free_port()}"\n\n'
        f'[source]\nurl = "{repo}"\nbranch = "main"\ninterval = "{source_interval}"\n{fleet_extra}'
    )
    for cluster, kubeconfig in clusters.items():
        wave = (waves or {}).get(cluster, 0)
        text = f'[cluster]\nkubeconfig = "{kubeconfig}"\nwave = {wave}\n\n'
        text += f'[variables]\ncluster_name = "{cluster}"\n'
        text += "".join(f"{k} = {toml_value(v)}\n" for k, v in (variables or {}).get(cluster, {}).items())
        for sync in syncs:
            text += "\n[[syncs]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in sync.items())
        (inv / f"{cluster}.toml").write_text(text)
    return fleet


def toml_value(value: Any) -> str:
    """A TOML literal for strings, numbers, booleans, lists and (inline) tables."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


@asynccontextmanager
async def running(config: Path) -> AsyncIterator[Daemon]:
    """A daemon running in the test's event loop, stopped (and awaited) on exit."""
    daemon = Daemon.from_config(config)
    task = asyncio.create_task(daemon.run(), name="daemon-under-test")
    await daemon.started.wait()
    try:
        yield daemon
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 15)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0) -> None:
    """Poll ``check`` until it holds, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


async def get(spoke: Spoke, path: str) -> dict[str, Any] | None:
    """GET through the admin credentials, off the event loop; None if 404."""
    try:
        result: dict[str, Any] = await asyncio.to_thread(spoke.request, "GET", path)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
    return result


async def put(spoke: Spoke, method: str, path: str, body: Any) -> Any:
    return await asyncio.to_thread(spoke.request, method, path, body)


def configmap(name: str, namespace: str, data: dict[str, str], **meta: Any) -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, **meta},
    }
    doc["data"] = data
    return json.dumps(doc)


def namespace_doc(name: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def deployment(name: str, namespace: str, replicas: int = 2) -> str:
    labels = {"app": name}
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
                },
            },
        }
    )
