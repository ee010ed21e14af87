"""``fleetd run`` under a real NOTIFY_SOCKET: what systemd hears from the daemon.

The test plays systemd: it binds an AF_UNIX datagram socket, starts the real
daemon with ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC=2000000`` (a ping about
every second; ``WATCHDOG_PID`` unset, so the watchdog is the daemon's), and
reads every datagram with the sender's PID from the kernel, as systemd does
for ``NotifyAccess=main``.

The contract (fleetd.daemon.systemd plus the daemon's wiring):

* ``READY=1`` with a ``STATUS=`` once the inventory is loaded and the root
  tasks run; ``STATUS=`` lines after it, one naming the current revision
  (its first 12 characters) once the source is fetched;
* ``WATCHDOG=1`` about every ``WATCHDOG_USEC / 2``, never two further apart
  than ``WATCHDOG_USEC`` (systemd would kill the daemon);
* SIGHUP: ``RELOADING=1`` with ``MONOTONIC_USEC`` no older than the signal,
  then ``READY=1``; the daemon keeps running;
* SIGTERM: ``STOPPING=1``, exit 0 within ``SHUTDOWN_TIMEOUT``;
* every datagram comes from the main process.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest

from fleetd.daemon.root import SHUTDOWN_TIMEOUT
from testbed.bed import Spoke
from tests.gitrepo import WorkRepo
from tests.integration.fleet import configmap, namespace_doc, unique, write_fleet

pytestmark = [pytest.mark.testbed, pytest.mark.timeout(240)]

WATCHDOG_USEC = 2_000_000
_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    fields: dict[str, str]
    sender_pid: int | None
    received_at: float  # time.monotonic()


class FakeSystemd:
    """A notify socket read on a thread; every datagram is kept, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._sock.bind(str(path))
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._read, name="fake-systemd", daemon=True)

    def __enter__(self) -> FakeSystemd:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._closing.set()
        self._thread.join(5)
        self._sock.close()

    def _read(self) -> None:
        while not self._closing.is_set():
            try:
                data, ancillary, _, _ = self._sock.recvmsg(8192, socket.CMSG_SPACE(_UCRED.size))
            except TimeoutError:
                continue
            pid = next(
                (_UCRED.unpack(d[: _UCRED.size])[0] for lvl, kind, d in ancillary
                 if (lvl, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)),
                None,
            )  # fmt: skip
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            with self._lock:
                self.messages.append(Message(fields=fields, sender_pid=pid, received_at=time.monotonic()))

    def snapshot(self) -> list[Message]:
        with self._lock:
            return list(self.messages)

    def wait_for(
        self, matches: Callable[[Message], bool], what: str, *, after: int = 0, timeout: float = 60.0
    ) -> int:
        """Index of the first message from `after` on that matches; poll until `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index, message in enumerate(self.snapshot()[after:], start=after):
                if matches(message):
                    return index
            time.sleep(0.05)
        raise AssertionError(
            f"no {what} within {timeout:g}s; received: {[m.fields for m in self.snapshot()]}"
        )


def has(key: str, value: str = "1") -> Callable[[Message], bool]:
    return lambda m: m.fields.get(key) == value


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_the_daemon_tells_systemd_it_is_ready_alive_reloading_and_stopping(
    spokes: list[Spoke], tmp_path: Path
) -> None:
    ns = unique("notify")
    repo = WorkRepo(tmp_path / "repo").write(
        {"k/ns.yaml": namespace_doc(ns), "k/cm.yaml": configmap("cm", ns, {"a": "b"})}
    )
    revision = repo.commit("notify")
    config = write_fleet(
        tmp_path,
        repo=repo.path,
        clusters={spokes[0].name: spokes[0].kubeconfig},
        syncs=[{"name": "k", "path": "k"}],
    )
    env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_PID", "JOURNAL_STREAM")}
    env |= {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115 - closed below
    with FakeSystemd(tmp_path / "notify") as systemd:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "fleetd", "run", "--config", str(config)], env=env, stderr=log
        )
        try:
            _ready_status_and_watchdog(systemd, revision)
            _reload_on_sighup(systemd, daemon)
            _stop_on_sigterm(systemd, daemon)
        finally:
            if daemon.poll() is None:
                daemon.kill()
            log.close()
        messages = systemd.snapshot()
    assert {m.sender_pid for m in messages} == {daemon.pid}, (tmp_path / "daemon.log").read_text()


def _ready_status_and_watchdog(systemd: FakeSystemd, revision: str) -> None:
    ready = systemd.wait_for(has("READY"), "READY=1", timeout=30)
    before = systemd.snapshot()[: ready + 1]
    assert before[-1].fields.get("STATUS"), "READY=1 comes with a STATUS= line"
    assert not [m for m in before if {"RELOADING", "STOPPING"} & m.fields.keys()]
    systemd.wait_for(lambda m: revision[:12] in m.fields.get("STATUS", ""), "a STATUS naming the revision")
    first_ping = systemd.wait_for(has("WATCHDOG"), "WATCHDOG=1", after=ready)
    systemd.wait_for(lambda m: len(_pings(systemd, first_ping)) >= 5, "five watchdog pings", timeout=15)
    gaps = _gaps(_pings(systemd, first_ping))
    assert max(gaps) < WATCHDOG_USEC / 1e6, f"systemd would have killed the daemon: gaps {gaps}"
    assert 0.7 <= statistics.median(gaps) <= 1.3, f"pings every WATCHDOG_USEC/2 = 1s, got gaps {gaps}"


def _reload_on_sighup(systemd: FakeSystemd, daemon: subprocess.Popen[bytes]) -> None:
    mark, signalled = len(systemd.snapshot()), monotonic_usec()
    daemon.send_signal(signal.SIGHUP)
    reloading = systemd.wait_for(has("RELOADING"), "RELOADING=1 after SIGHUP", after=mark, timeout=30)
    stamp = int(systemd.snapshot()[reloading].fields["MONOTONIC_USEC"])
    assert signalled <= stamp <= monotonic_usec(), "MONOTONIC_USEC is CLOCK_MONOTONIC at the reload, in µs"
    systemd.wait_for(has("READY"), "READY=1 after the reload", after=reloading + 1, timeout=30)
    assert daemon.poll() is None, "SIGHUP must not end the daemon"


def _stop_on_sigterm(systemd: FakeSystemd, daemon: subprocess.Popen[bytes]) -> None:
    mark, stopped_at = len(systemd.snapshot()), time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(SHUTDOWN_TIMEOUT + 5) == 0
    assert time.monotonic() - stopped_at < SHUTDOWN_TIMEOUT
    systemd.wait_for(has("STOPPING"), "STOPPING=1 after SIGTERM", after=mark, timeout=5)


def _pings(systemd: FakeSystemd, first: int) -> list[float]:
    return [m.received_at for m in systemd.snapshot()[first:] if m.fields.get("WATCHDOG") == "1"]


def _gaps(times: list[float]) -> list[float]:
    return [round(b - a, 3) for a, b in itertools.pairwise(times)]
