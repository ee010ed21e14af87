"""The systemd notify protocol against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleetd.daemon.systemd import MAX_STATUS, Notifier, announce, status_loop, watchdog_loop

pytestmark = pytest.mark.timeout(20)

_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid


@dataclass(frozen=True, slots=True, kw_only=True)
class Datagram:
    fields: dict[str, str]
    lines: list[str]
    sender_pid: int | None


class Listener:
    """What systemd does with NOTIFY_SOCKET: bind, ask the kernel for the sender, read datagrams."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)

    def receive(self, timeout: float = 2.0) -> Datagram:
        self.sock.settimeout(timeout)
        data, ancillary, _, _ = self.sock.recvmsg(8192, socket.CMSG_SPACE(_UCRED.size))
        pid = None
        for level, kind, payload in ancillary:
            if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS):
                pid = _UCRED.unpack(payload[: _UCRED.size])[0]
        lines = data.decode().split("\n")
        return Datagram(fields=dict(line.split("=", 1) for line in lines), lines=lines, sender_pid=pid)

    def silent_for(self, seconds: float) -> bool:
        """True if nothing arrives within `seconds` (the only way to observe an absence)."""
        try:
            self.receive(timeout=seconds)
        except TimeoutError:
            return True
        return False

    async def areceive(self, timeout: float = 2.0) -> Datagram:
        return await asyncio.to_thread(self.receive, timeout)


@pytest.fixture(autouse=True)
def _no_outer_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests may themselves run under systemd; its variables must not leak in."""
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    bound = Listener(str(tmp_path / "notify"))
    yield bound
    bound.sock.close()


@pytest.fixture
def abstract_listener() -> Iterator[tuple[Listener, str]]:
    name = f"fleetd-test-{uuid.uuid4().hex}"
    bound = Listener(b"\0" + name.encode())
    yield bound, f"@{name}"
    bound.sock.close()


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def notifier_for(listener: Listener, **env: str) -> Notifier:
    address = listener.sock.getsockname()
    return Notifier.from_environ({"NOTIFY_SOCKET": address, **env})


# -- messages ----------------------------------------------------------------------------------


def test_ready_sends_ready_and_status_in_one_datagram(listener: Listener) -> None:
    assert notifier_for(listener).ready("fleet home-lab: 2 cluster(s)")
    got = listener.receive()
    assert got.lines == ["READY=1", "STATUS=fleet home-lab: 2 cluster(s)"]


def test_status_sends_only_the_status_line(listener: Listener) -> None:
    notifier_for(listener).status("revision 0123456789ab: 4/4 sync(s) ready")
    assert listener.receive().lines == ["STATUS=revision 0123456789ab: 4/4 sync(s) ready"]


def test_a_newline_in_a_status_cannot_inject_another_assignment(listener: Listener) -> None:
    notifier_for(listener).status("git said:\nWATCHDOG=trigger")
    got = listener.receive()
    assert got.lines == ["STATUS=git said: WATCHDOG=trigger"]
    assert "WATCHDOG" not in got.fields


def test_text_that_is_not_valid_unicode_is_sent_with_replacement_characters(listener: Listener) -> None:
    assert notifier_for(listener).status("cannot read /etc/fleetd/caf\udce9.toml")
    assert listener.receive().lines == ["STATUS=cannot read /etc/fleetd/caf?.toml"]


def test_a_status_longer_than_systemd_reads_is_shortened_not_dropped(listener: Listener) -> None:
    notifier_for(listener).ready("x" * 10_000)
    got = listener.receive()
    assert got.fields["READY"] == "1"
    assert len(got.fields["STATUS"]) == MAX_STATUS
    assert got.fields["STATUS"].endswith("…")


def test_reloading_carries_the_monotonic_clock_in_microseconds(listener: Listener) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier_for(listener).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    got = listener.receive()
    assert got.lines[0] == "RELOADING=1"
    assert before <= int(got.fields["MONOTONIC_USEC"]) <= after


def test_ready_after_reload_sends_ready(listener: Listener) -> None:
    notifier_for(listener).ready_after_reload("reloaded")
    assert listener.receive().lines == ["READY=1", "STATUS=reloaded"]


def test_stopping_and_watchdog_send_their_single_assignments(listener: Listener) -> None:
    notifier = notifier_for(listener)
    notifier.stopping()
    notifier.watchdog()
    assert listener.receive().lines == ["STOPPING=1"]
    assert listener.receive().lines == ["WATCHDOG=1"]


def test_the_kernel_names_this_process_as_the_sender_as_notify_access_main_requires(
    listener: Listener,
) -> None:
    notifier_for(listener).ready()
    assert listener.receive().sender_pid == os.getpid()


def test_an_abstract_namespace_socket_receives_notifications(
    abstract_listener: tuple[Listener, str],
) -> None:
    listener, notify_socket = abstract_listener
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": notify_socket})
    assert notifier.enabled
    notifier.ready("abstract")
    assert listener.receive().lines == ["READY=1", "STATUS=abstract"]


def test_the_process_environment_is_read_by_default(
    listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", listener.sock.getsockname())
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier.from_environ()
    assert notifier.watchdog_interval == 15.0
    notifier.watchdog()
    assert listener.receive().lines == ["WATCHDOG=1"]


# -- outside systemd ---------------------------------------------------------------------------


def test_without_notify_socket_every_message_is_a_silent_no_op(caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier.from_environ({"WATCHDOG_USEC": "2000000"})
    sent = [
        notifier.ready("r"), notifier.status("s"), notifier.reloading(),
        notifier.ready_after_reload(), notifier.stopping(), notifier.watchdog(),
    ]  # fmt: skip
    assert not notifier.enabled
    assert sent == [False] * 6
    assert notifier.watchdog_interval is None
    assert caplog.records == []


@pytest.mark.parametrize("value", ["relative/notify", "vsock:2:1234", "@"])
def test_an_unusable_notify_socket_disables_notifications_and_says_why(
    value: str, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": value})
    assert not notifier.enabled
    assert not notifier.ready()
    assert "neither an absolute path nor an abstract socket" in caplog.text


# -- the watchdog interval ---------------------------------------------------------------------


def test_the_watchdog_interval_is_half_of_watchdog_usec_in_seconds(listener: Listener) -> None:
    assert notifier_for(listener, WATCHDOG_USEC="30000000").watchdog_interval == 15.0


def test_the_watchdog_applies_when_watchdog_pid_names_this_process(listener: Listener) -> None:
    notifier = notifier_for(listener, WATCHDOG_USEC="2000000", WATCHDOG_PID=str(os.getpid()))
    assert notifier.watchdog_interval == 1.0


def test_no_watchdog_when_watchdog_pid_names_another_process(listener: Listener) -> None:
    notifier = notifier_for(listener, WATCHDOG_USEC="2000000", WATCHDOG_PID=str(os.getpid() + 1))
    assert notifier.watchdog_interval is None
    assert notifier.enabled  # only the watchdog is someone else's; READY and STATUS still go out


def test_no_watchdog_without_watchdog_usec(listener: Listener) -> None:
    assert notifier_for(listener).watchdog_interval is None


@pytest.mark.parametrize("usec", ["0", "-5", "soon", "1.5"])
def test_no_watchdog_for_a_watchdog_usec_that_is_not_positive_microseconds(
    listener: Listener, usec: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert notifier_for(listener, WATCHDOG_USEC=usec).watchdog_interval is None
    assert f"WATCHDOG_USEC={usec!r}" in caplog.text


# -- send failures -----------------------------------------------------------------------------


def test_send_failures_never_raise_and_are_logged_once_until_sending_works_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gone"
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(path)})
    caplog.set_level(logging.INFO, logger="fleetd.daemon.systemd")
    assert [notifier.watchdog() for _ in range(3)] == [False] * 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(path) in warnings[0].getMessage()
    assert "WATCHDOG not sent" in warnings[0].getMessage()
    listener = Listener(str(path))
    try:
        assert notifier.watchdog()
        assert listener.receive().lines == ["WATCHDOG=1"]
    finally:
        listener.sock.close()
    assert "work again" in caplog.records[-1].getMessage()


# -- the loops ---------------------------------------------------------------------------------


async def test_the_watchdog_loop_pings_at_the_interval_while_healthy(listener: Listener) -> None:
    notifier = notifier_for(listener, WATCHDOG_USEC="100000")  # a ping every 50 ms
    task = asyncio.create_task(watchdog_loop(notifier, lambda: True))
    try:
        started = time.monotonic()
        for _ in range(5):
            assert (await listener.areceive()).lines == ["WATCHDOG=1"]
        elapsed = time.monotonic() - started
    finally:
        await stop(task)
    assert 0.15 <= elapsed < 1.0  # first ping at once, then four intervals of 50 ms


async def test_the_watchdog_loop_withholds_pings_while_unhealthy_and_resumes(
    listener: Listener, caplog: pytest.LogCaptureFixture
) -> None:
    health = {"ok": False}
    notifier = notifier_for(listener, WATCHDOG_USEC="100000")
    task = asyncio.create_task(watchdog_loop(notifier, lambda: health["ok"]))
    try:
        assert await asyncio.to_thread(listener.silent_for, 0.3)
        assert "not healthy" in caplog.text
        health["ok"] = True
        assert (await listener.areceive()).lines == ["WATCHDOG=1"]
    finally:
        await stop(task)


async def test_a_health_check_that_raises_counts_as_unhealthy_and_is_logged_once(
    listener: Listener, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> bool:
        raise RuntimeError("bug in the health check")

    task = asyncio.create_task(watchdog_loop(notifier_for(listener, WATCHDOG_USEC="100000"), broken))
    try:
        assert await asyncio.to_thread(listener.silent_for, 0.3)
    finally:
        await stop(task)
    assert caplog.text.count("RuntimeError: bug in the health check") == 1


async def test_the_watchdog_loop_returns_at_once_without_a_watchdog(listener: Listener) -> None:
    async with asyncio.timeout(1):
        await watchdog_loop(notifier_for(listener), lambda: True)
    assert listener.silent_for(0.1)


async def test_the_status_loop_sends_a_status_only_when_it_changes(listener: Listener) -> None:
    texts = iter(["a", "a", "b", "b", "b"])
    task = asyncio.create_task(status_loop(notifier_for(listener), lambda: next(texts, "b"), every=0.01))
    try:
        assert (await listener.areceive()).lines == ["STATUS=a"]
        assert (await listener.areceive()).lines == ["STATUS=b"]
        assert await asyncio.to_thread(listener.silent_for, 0.1)
    finally:
        await stop(task)


async def test_announce_sends_ready_once_started_then_pings_and_status_changes(listener: Listener) -> None:
    started = asyncio.Event()
    status = {"text": "starting"}
    notifier = notifier_for(listener, WATCHDOG_USEC="200000")
    task = asyncio.create_task(
        announce(
            notifier,
            started=started,
            describe=lambda: status["text"],
            healthy=lambda: True,
            status_every=0.02,
        )
    )
    try:
        assert await asyncio.to_thread(listener.silent_for, 0.1)  # nothing before start-up finished
        started.set()
        assert (await listener.areceive()).lines == ["READY=1", "STATUS=starting"]
        assert (await listener.areceive()).lines == ["WATCHDOG=1"]
        status["text"] = "revision 0123456789ab: 1/1 sync(s) ready"
        seen = [(await listener.areceive()).lines for _ in range(3)]
        assert ["STATUS=revision 0123456789ab: 1/1 sync(s) ready"] in seen
        assert ["STATUS=starting"] not in seen  # the status READY carried is not repeated
    finally:
        await stop(task)


async def test_announce_outside_systemd_finishes_once_started() -> None:
    started = asyncio.Event()
    started.set()
    async with asyncio.timeout(1):
        await announce(Notifier.from_environ({}), started=started, describe=lambda: "x", healthy=lambda: True)
