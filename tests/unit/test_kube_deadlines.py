"""Every API call has a deadline: a server that accepts and then says nothing makes a cluster unreachable.

The server here is a real loopback HTTP server playing an API server that
hangs: it answers a watch with headers and then silence, or never answers
a request at all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from fleetd.kube.client import Unreachable, connect
from testbed.processes import free_port

pytestmark = pytest.mark.timeout(20)


@asynccontextmanager
async def silent_server(tmp_path: Path) -> AsyncIterator[Path]:
    """A kubeconfig for a server that starts a watch's answer and then never sends a byte more."""

    async def answer(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") == "1":
            response = web.StreamResponse()
            await response.prepare(request)  # headers sent: the watch is established
        await asyncio.Event().wait()  # and then nothing, ever
        return web.Response()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    kubeconfig = tmp_path / "silent.kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: s\n"
        f"clusters: [{{name: s, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: s, user: {token: abc}}]\ncontexts: [{name: s, context: {cluster: s, user: s}}]\n"
    )
    try:
        yield kubeconfig
    finally:
        await runner.cleanup()


async def test_a_request_to_a_server_that_never_answers_ends_at_its_deadline(tmp_path: Path) -> None:
    async with silent_server(tmp_path) as kubeconfig:
        client = await connect("silent", kubeconfig)
        try:
            started = time.monotonic()
            with pytest.raises(Unreachable, match=r"no answer from http://127\.0\.0\.1:\d+ in time"):
                await client.request("GET", "/version", timeout=1.0)
            assert time.monotonic() - started < 3
            assert client.errors["unreachable"] == 1
        finally:
            await client.close()


async def test_a_watch_that_falls_silent_ends_as_unreachable_long_before_its_total_deadline(
    tmp_path: Path,
) -> None:
    async with silent_server(tmp_path) as kubeconfig:
        client = await connect("silent", kubeconfig)
        try:
            started = time.monotonic()
            with pytest.raises(Unreachable):
                async for _ in client.watch("/api/v1/configmaps", query=[], timeout=600, idle_timeout=1.0):
                    pass
            assert time.monotonic() - started < 3
        finally:
            await client.close()
