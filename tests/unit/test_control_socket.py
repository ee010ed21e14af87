"""The control socket: private from the moment it exists (umask untouched), and malformed commands get 4xx."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fleetd.api import control

pytestmark = pytest.mark.timeout(10)


class Daemon:
    def status_document(self) -> dict[str, Any]:
        return {"fleet": "test"}

    def trigger(self, cluster: str | None = None, sync: str | None = None) -> None: ...
    def suspend(self, cluster: str, sync: str | None) -> None: ...
    def resume_sync(self, cluster: str, sync: str | None) -> None: ...
    def hold(self) -> None: ...
    def resume(self) -> None: ...
    def promote(self) -> None: ...
    def request_reload(self) -> None: ...
    def allow_prune(self, cluster: str, sync: str) -> None: ...


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
async def test_the_socket_is_0600_and_the_umask_is_left_alone(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        runner = await control.serve(Daemon(), tmp_path)
        try:
            assert os.umask(umask) == umask  # serve did not change it
            sock = control.socket_path(tmp_path)
            assert stat.S_ISSOCK(sock.lstat().st_mode)
            assert stat.S_IMODE(sock.lstat().st_mode) == 0o600
            assert names(tmp_path) == [control.SOCKET_NAME]
            assert (await control.call(tmp_path, "GET", "/v1/status")) == {"fleet": "test"}
        finally:
            await runner.cleanup()
    finally:
        os.umask(old)


async def test_a_stale_socket_of_a_dead_daemon_is_replaced(tmp_path: Path) -> None:
    control.socket_path(tmp_path).write_text("left by a crash")
    runner = await control.serve(Daemon(), tmp_path)
    try:
        assert (await control.call(tmp_path, "GET", "/v1/status"))["fleet"] == "test"
    finally:
        await runner.cleanup()


class Refusing(Daemon):
    """Knows one cluster, as the daemon does, and refuses others."""

    def trigger(self, cluster: str | None = None, sync: str | None = None) -> None:
        if cluster not in (None, "a"):
            raise control.ControlError(f"no cluster {cluster!r} in the inventory (known: a)")


async def raw(state_dir: Path, method: str, path: str, body: bytes | None = None) -> tuple[int, object]:
    """One request as any local program could send it, without the CLI's care."""
    connector = aiohttp.UnixConnector(path=str(control.socket_path(state_dir)))
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.request(method, f"http://fleetd{path}", data=body) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


MALFORMED = {
    "not json": ("POST", "/v1/reconcile", b"{cluster: a", 400, "not JSON"),
    "not utf-8": ("POST", "/v1/reconcile", b'{"cluster": "\xff\xfe"}', 400, "not JSON"),
    "a json list": ("POST", "/v1/reconcile", b'["a"]', 400, "JSON object, not list"),
    "a json string": ("POST", "/v1/suspend", b'"a"', 400, "JSON object, not str"),
    "cluster is a number": ("POST", "/v1/reconcile", b'{"cluster": 7}', 400, "cluster must be a string"),
    "sync is a list": ("POST", "/v1/resume", b'{"cluster": "a", "sync": ["s"]}', 400, "sync must be a"),
    "cluster is an object": ("POST", "/v1/suspend", b'{"cluster": {"a": 1}}', 400, "must be a string"),
    "no cluster to suspend": ("POST", "/v1/suspend", b"{}", 400, "name a cluster"),
    "too large": ("POST", "/v1/reconcile", b'{"x": "%s"}' % (b"y" * control.MAX_BODY), 413, "larger"),
    "unknown path": ("GET", "/v1/nothing", None, 404, "/v1/nothing"),
    "wrong method": ("GET", "/v1/reconcile", None, 405, "GET /v1/reconcile"),
    "unknown rollout verb": ("POST", "/v1/rollout/explode", None, 404, "unknown rollout command"),
    "unknown cluster": ("POST", "/v1/reconcile", b'{"cluster": "zz"}', 404, "known: a"),
}  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "status", "words"), MALFORMED.values(), ids=MALFORMED)
async def test_a_malformed_command_is_refused_with_a_4xx_and_a_message_and_the_socket_keeps_serving(
    tmp_path: Path, method: str, path: str, body: bytes | None, status: int, words: str
) -> None:
    runner = await control.serve(Refusing(), tmp_path)
    try:
        code, answer = await raw(tmp_path, method, path, body)
        assert code == status, answer
        assert isinstance(answer, dict)
        assert words in answer["error"]
        assert (await control.call(tmp_path, "POST", "/v1/reconcile", {"cluster": "a"}))["ok"] is True
    finally:
        await runner.cleanup()


async def test_a_bug_behind_a_command_answers_500_naming_it_and_the_socket_keeps_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Daemon):
        def request_reload(self) -> None:
            raise RuntimeError("boom")

    runner = await control.serve(Broken(), tmp_path)
    try:
        code, answer = await raw(tmp_path, "POST", "/v1/reload")
        assert (code, answer) == (500, {"error": "internal error: RuntimeError: boom"})
        assert "control socket: POST /v1/reload failed" in caplog.text
        assert (await control.call(tmp_path, "GET", "/v1/status")) == {"fleet": "test"}
    finally:
        await runner.cleanup()
