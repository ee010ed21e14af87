"""The control socket is private from the moment it exists, without touching the process umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

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
