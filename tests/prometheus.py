"""A real Prometheus server for tests, scraping given targets every second.

Started from the Debian ``prometheus`` binary on a free loopback port, with
a generated configuration and its own storage directory; it dies with the
test process (see `testbed.processes`). Queries are async because
the server under test usually runs on the test's own event loop, which a
blocking HTTP call would stall.

Use::

    async with running_prometheus(tmp_path, ["127.0.0.1:9480"]) as prom:
        result = await prom.wait_for("fleetd_drifted_objects")
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from testbed.processes import Process, free_port

INSTALL_HINT = "run `apt-get install prometheus` (the Debian package gives prometheus and promtool)"


def binary(name: str = "prometheus") -> str:
    """Path of `name` (prometheus or promtool); fails the test with the install hint when absent."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: {INSTALL_HINT}", pytrace=False)
    return path


class Prometheus:
    """One Prometheus process; `start`, `wait_ready`, `query`, `stop`."""

    def __init__(self, workdir: Path, targets: Sequence[str], *, job: str = "fleetd") -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "prometheus.yml"
        self.config.write_text(json.dumps(_config(job, targets), indent=2))  # JSON is YAML
        self.process = Process(name="prometheus", argv=self._argv(), log_path=workdir / "prometheus.log")

    def _argv(self) -> list[str]:
        return [
            binary(),
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]

    def start(self) -> None:
        self.process.start()

    def stop(self) -> int | None:
        """SIGTERM (SIGKILL after 10 s); the exit code, 0 when Prometheus stopped cleanly."""
        self.process.stop(grace=10.0)
        return self.process.popen.returncode if self.process.popen else None

    def log_tail(self, lines: int = 20) -> str:
        text = self.process.log_path.read_text(errors="replace") if self.process.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Return once ``/-/ready`` answers 200; fail with the log's tail if it does not in time."""
        await self._poll(self._is_ready, timeout, "to become ready")

    async def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector of `promql` now (``data.result`` of ``/api/v1/query``)."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.url}/api/v1/query", params={"query": promql}) as response,
        ):
            response.raise_for_status()
            body = await response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def wait_for(self, promql: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The first non-empty result of `promql`, polled until `timeout`."""
        found: list[dict[str, Any]] = []

        async def has_result() -> bool:
            found[:] = await self.query(promql)
            return bool(found)

        await self._poll(has_result, timeout, f"to return a result for {promql!r}")
        return found

    async def _is_ready(self) -> bool:
        try:
            async with aiohttp.ClientSession() as session, session.get(f"{self.url}/-/ready") as response:
                return response.status == 200
        except aiohttp.ClientConnectionError:
            return False

    async def _poll(self, check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.running:
                pytest.fail(f"prometheus exited while waiting {what}:\n{self.log_tail()}")
            if await check():
                return
            await asyncio.sleep(0.2)
        pytest.fail(f"prometheus did not manage {what} within {timeout:.0f}s:\n{self.log_tail()}")


@asynccontextmanager
async def running_prometheus(workdir: Path, targets: Sequence[str]) -> AsyncIterator[Prometheus]:
    """A ready Prometheus scraping `targets` every second; stopped (and checked to stop cleanly) on exit."""
    prom = Prometheus(workdir, targets)
    prom.start()
    try:
        await prom.wait_ready()
        yield prom
    finally:
        code = await asyncio.to_thread(prom.stop)
    assert code == 0, f"prometheus exited with {code}:\n{prom.log_tail()}"


def _config(job: str, targets: Sequence[str]) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(targets)}]}],
    }
