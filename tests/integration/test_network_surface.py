"""The HTTP port under abuse: floods of webhooks and of idle connections cost a bounded amount, nothing more.

Anyone who can reach the port can replay a signed webhook, send wrongly
signed ones, or open thousands of connections and never speak. The daemon
keeps answering ``/healthz``, keeps reconciling, fetches the repository at
most twice for a burst of pushes, counts every refused call in a metric and
writes only a few log lines about them.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path

import aiohttp
import pytest

from fleetd.api.fetchgate import SPACING
from fleetd.api.http import HEADER_TIMEOUT
from fleetd.api.webhooks import GENERIC_SIGNATURE, Secret, sign
from fleetd.daemon.root import Daemon
from testbed.bed import Spoke
from tests.gitrepo import WorkRepo
from tests.integration.fleet import configmap, eventually, get, running, write_fleet

pytestmark = [pytest.mark.testbed, pytest.mark.timeout(180)]

SECRET = "generic-flood-secret-0123456789"


def hub(tmp_path: Path, spoke: Spoke, namespace: str) -> tuple[Path, WorkRepo]:
    """One spoke, one sync, a generic webhook receiver."""
    repo = WorkRepo(tmp_path / "repo").write({"apps/cm.yaml": configmap("cm", namespace, {"v": "1"})})
    repo.commit("v1")
    config = write_fleet(tmp_path, repo=repo.path, clusters={spoke.name: spoke.kubeconfig},
                         syncs=[{"name": "apps", "path": "apps"}])  # fmt: skip
    (tmp_path / "generic.secret").write_text(SECRET)
    with config.open("a") as out:
        out.write(f'\n[webhooks]\ngeneric_secret_file = "{tmp_path / "generic.secret"}"\n')
    return config, repo


def fetches(daemon: Daemon) -> int:
    return sum(h.count for h in daemon.state.fetches.values())


def url(daemon: Daemon, path: str) -> str:
    return f"http://{daemon.fleet.listen_host}:{daemon.fleet.listen_port}{path}"


async def fetches_settled(daemon: Daemon, quiet: float = 1.0) -> int:
    """The fetch count once it has not moved for ``quiet`` seconds (the queued fetch included)."""
    last, since = fetches(daemon), time.monotonic()

    async def still() -> bool:
        nonlocal last, since
        now = fetches(daemon)
        if now != last:
            last, since = now, time.monotonic()
        return time.monotonic() - since >= quiet

    await eventually(still, "the fetches to settle", timeout=60)
    return last


async def test_a_thousand_replayed_webhooks_fetch_at_most_twice_and_failed_ones_are_counted_not_logged(
    spokes: list[Spoke], tmp_path: Path, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fleetd.api.http")
    config, repo = hub(tmp_path, spokes[0], namespace)
    body = b'{"ref": "refs/heads/main"}'
    signed = {GENERIC_SIGNATURE: sign(Secret(SECRET.encode()), body)}
    forged = {GENERIC_SIGNATURE: sign(Secret(b"not the secret"), body)}
    async with running(config) as daemon, aiohttp.ClientSession() as http:
        await daemon.http_ready.wait()
        await eventually(lambda: _ready(daemon, spokes[0], repo.head()), "first reconcile")
        before = await fetches_settled(daemon)
        repo.write({"apps/cm.yaml": configmap("cm", namespace, {"v": "2"})})
        second = repo.commit("v2")

        async def post(headers: dict[str, str]) -> int:
            async with http.post(url(daemon, "/hooks/generic"), data=body, headers=headers) as resp:
                return resp.status

        started = time.monotonic()
        statuses = await asyncio.gather(
            *(post(signed) for _ in range(1000)), *(post(forged) for _ in range(1000))
        )
        burst = time.monotonic() - started
        assert sorted(set(statuses)) == [202, 401]
        after = await fetches_settled(daemon, quiet=SPACING + 1)  # the one queued fetch included
        assert after - before <= 2, f"{after - before} fetches for a {burst:.1f}s burst"
        await eventually(lambda: _ready(daemon, spokes[0], second), "the pushed revision applied")
        assert daemon.state.webhooks[("generic", "unauthorized")] == 1000
        assert daemon.state.webhooks[("generic", "accepted")] == 1000
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("webhook generic")]
    assert len(lines) <= 2 * (1 + burst / 10 + 1), lines  # one per kind per 10 s, not one per call


async def _ready(daemon: Daemon, spoke: Spoke, revision: str) -> bool:
    status = daemon.state.status(spoke.name, "apps")
    return status is not None and status.result == "ready" and status.revision == revision


IDLE = 2000


@contextmanager
def open_files(at_least: int) -> Iterator[None]:
    """Let this test process hold ``at_least`` descriptors (its own soft limit, restored after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = at_least if hard == resource.RLIM_INFINITY else min(at_least, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@asynccontextmanager
async def daemon_process(config: Path, log: Path, *, nofile: tuple[int, int]) -> AsyncIterator[int]:
    """``fleetd run`` as a process started with the given open-file limits (soft, hard); yields its PID."""

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fleetd", "run", "--config", str(config), stderr=out, preexec_fn=limits
        )
        try:
            yield proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(20):
                    await proc.wait()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()


def open_descriptors(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


def soft_nofile(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-files line in /proc/PID/limits")


async def test_two_thousand_idle_connections_leave_healthz_answering_and_descriptors_in_budget(
    spokes: list[Spoke], tmp_path: Path, namespace: str
) -> None:
    config, repo = hub(tmp_path, spokes[0], namespace)
    text = config.read_text()
    listen = text.split('listen = "', 1)[1].split('"', 1)[0]
    host, port = listen.rsplit(":", 1)
    base = f"http://{listen}"
    held: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    daemon = daemon_process(config, tmp_path / "daemon.log", nofile=(1024, 4096))
    async with daemon as pid, aiohttp.ClientSession() as http:

        async def healthz() -> bool:
            with suppress(aiohttp.ClientError):
                async with http.get(base + "/healthz", timeout=aiohttp.ClientTimeout(total=5)) as r:
                    return r.status == 200
            return False

        await eventually(healthz, "the daemon's HTTP server", timeout=60)
        assert soft_nofile(pid) == 4096  # raised from 1024 at start
        with open_files(IDLE + 1024):
            try:
                opened_at = time.monotonic()
                for _ in range(IDLE):  # connect, then say nothing
                    reader, writer = await asyncio.open_connection(host, int(port))
                    readers.append(reader)
                    held.append(writer)
                started = time.monotonic()
                assert await healthz(), "/healthz did not answer under 2000 idle connections"
                assert time.monotonic() - started < 5
                descriptors = await asyncio.to_thread(open_descriptors, pid)
                assert descriptors < 1024 + 200, descriptors  # the cap, not one per connection
                repo.write({"apps/cm.yaml": configmap("cm", namespace, {"v": "2"})})
                repo.commit("v2 while flooded")
                body = b"{}"
                headers = {GENERIC_SIGNATURE: sign(Secret(SECRET.encode()), body)}
                async with http.post(base + "/hooks/generic", data=body, headers=headers) as resp:
                    assert resp.status == 202

                async def applied() -> bool:
                    cm = await get(spokes[0], f"/api/v1/namespaces/{namespace}/configmaps/cm")
                    return cm is not None and cm["data"] == {"v": "2"}

                await eventually(applied, "the push applied while flooded", timeout=60)

                async def all_closed() -> bool:  # evicted, or ended by the header timeout
                    return all(r.at_eof() or r.exception() is not None for r in readers)

                await eventually(all_closed, "idle connections closed", timeout=HEADER_TIMEOUT + 15)
                assert time.monotonic() - opened_at < HEADER_TIMEOUT + 15
            finally:
                for writer in held:
                    writer.close()
