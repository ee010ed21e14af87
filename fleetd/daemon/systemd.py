"""The systemd notify protocol: readiness, status, reloads, stops and the watchdog.

systemd starts fleetd as a ``Type=notify`` service and hands it two things in
the environment:

``NOTIFY_SOCKET``
    an ``AF_UNIX`` datagram socket — a path (``/run/systemd/notify``) or, with
    a leading ``@``, a name in the abstract namespace. Each datagram is a few
    ``KEY=value`` lines (``READY=1``, ``STATUS=...``); systemd reads the
    sender's PID from the kernel and, with ``NotifyAccess=main``, only
    listens to the main process.
``WATCHDOG_USEC`` / ``WATCHDOG_PID``
    set with ``WatchdogSec=``: the service must send ``WATCHDOG=1`` more
    often than every ``WATCHDOG_USEC`` microseconds or systemd kills it
    (SIGABRT) and ``Restart=on-failure`` starts it again. ``WATCHDOG_PID``,
    when present, names the process the deadline is meant for — a child that
    inherited the environment must not ping on the daemon's behalf.

This module is that protocol in the standard library only (no
python-systemd, no libsystemd): :class:`Notifier` sends the messages,
:func:`watchdog_loop` pings while the daemon is healthy, :func:`status_loop`
keeps ``systemctl status`` current, and :func:`announce` runs all three for
the daemon. Outside systemd (a terminal, launchd on macOS, tests)
``NOTIFY_SOCKET`` is unset and everything is a no-op, so callers never ask
"are we under systemd?".

A notification must never take the daemon down: a send that fails (socket
gone, systemd's queue full, message refused) is logged once per outage —
a warning when sending starts failing, an info line when it works again — and
otherwise ignored. Sockets are non-blocking, because a send runs on the event
loop, which must not wait for systemd; a full queue drops the message.

Reloads: ``RELOADING=1`` goes out together with ``MONOTONIC_USEC=``, the
sender's ``CLOCK_MONOTONIC`` in microseconds. systemd >= 253 needs it for
``Type=notify-reload``, where it compares that timestamp with the moment it
sent SIGHUP to tell this reload from an older one (without it, ``systemctl
reload`` gives up or returns early); older systemd ignores the field. A reload
ends with ``READY=1`` (:meth:`Notifier.ready_after_reload`). Debian 12 ships
systemd 252, which has no ``notify-reload``, so the unit uses ``Type=notify``
with ``ExecReload=/bin/kill -HUP $MAINPID``; the messages are already right
for switching to ``Type=notify-reload`` on newer systemd.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

# systemd reads notifications into a buffer of PIPE_BUF (4096) bytes and drops
# a longer datagram *whole* — READY=1 included. A status line is for humans on
# `systemctl status`; a few hundred characters is plenty.
MAX_STATUS = 1000


class Notifier:
    """Sends notifications to systemd; every method is a no-op outside systemd.

    Build it with :meth:`from_environ`. ``watchdog_interval`` is how often to
    ping, in seconds: half of ``WATCHDOG_USEC`` (systemd's recommendation, so
    one late ping is not yet fatal), or None when no watchdog applies to this
    process.
    """

    def __init__(self, address: str | bytes | None, *, watchdog_interval: float | None = None) -> None:
        self._address = address
        self.watchdog_interval = watchdog_interval if address is not None else None
        self._failing = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, *, pid: int | None = None) -> Notifier:
        """The notifier systemd's environment asks for (``os.environ`` and this PID by default).

        The environment is left as it is: with ``NotifyAccess=main`` systemd
        ignores whatever a child process sends, and ``WATCHDOG_PID`` keeps a
        child fleetd from taking over the watchdog.
        """
        env = os.environ if environ is None else environ
        address = _address(env.get("NOTIFY_SOCKET", ""))
        interval = _watchdog_interval(env, os.getpid() if pid is None else pid)
        return cls(address, watchdog_interval=interval)

    @property
    def enabled(self) -> bool:
        """True when fleetd runs under systemd (``NOTIFY_SOCKET`` usable)."""
        return self._address is not None

    # -- the messages ----------------------------------------------------------------

    def ready(self, status: str | None = None) -> bool:
        """Start-up finished: systemd moves the unit to ``active`` and starts dependents."""
        return self.notify("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        """A one-line status shown by ``systemctl status fleetd``."""
        return self.notify(*_status(text))

    def reloading(self, status: str | None = None) -> bool:
        """A reload started: ``RELOADING=1`` with ``MONOTONIC_USEC`` (see the module docstring)."""
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={now_usec}", *_status(status))

    def ready_after_reload(self, status: str | None = None) -> bool:
        """A reload finished (successfully or not): systemd's unit is ``active`` again."""
        return self.ready(status)

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown started: systemd shows ``deactivating`` while fleetd winds down, not a crash."""
        return self.notify("STOPPING=1", *_status(status))

    def watchdog(self) -> bool:
        """Reset systemd's watchdog deadline."""
        return self.notify("WATCHDOG=1")

    # -- the transport -------------------------------------------------------------

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines as one datagram; True if sent. Never raises."""
        if self._address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                # "replace": a path fleetd could not decode must not turn into an exception here
                sock.sendto("\n".join(assignments).encode(errors="replace"), self._address)
        except OSError as exc:
            self._failed(assignments[0].partition("=")[0] if assignments else "", exc)
            return False
        if self._failing:
            self._failing = False
            log.info("systemd notifications to %s work again", _show(self._address))
        return True

    def _failed(self, first: str, exc: OSError) -> None:
        if self._failing:
            log.debug("systemd notification %s not sent: %s", first, exc)
            return
        self._failing = True
        log.warning(
            "cannot notify systemd at %s (%s not sent: %s); fleetd keeps running, but systemd may "
            "think it is not ready or hung — check NOTIFY_SOCKET and NotifyAccess=main in the unit",
            _show(self._address), first, exc,
        )  # fmt: skip


def _address(value: str) -> str | bytes | None:
    """The socket address ``NOTIFY_SOCKET`` names, or None (unset or unusable)."""
    if not value:
        return None
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])  # the abstract namespace
    log.warning(
        "NOTIFY_SOCKET=%r is neither an absolute path nor an abstract socket (@name); "
        "fleetd sends no notifications to systemd (vsock sockets are not supported)",
        value,
    )
    return None


def _watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds; None if unset, invalid or meant for another PID."""
    usec_text, pid_text = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec_text:
        return None
    if pid_text and pid_text != str(pid):
        log.debug("WATCHDOG_PID=%s is not this process (%d): no watchdog pings", pid_text, pid)
        return None
    try:
        usec = int(usec_text)
    except ValueError:
        usec = 0
    if usec <= 0:
        log.warning("WATCHDOG_USEC=%r is not a positive number of microseconds: no watchdog pings", usec_text)
        return None
    return usec / 2 / 1_000_000


def _status(text: str | None) -> tuple[str, ...]:
    """``STATUS=`` for `text` on one line (a newline would start a new assignment), shortened."""
    if text is None:
        return ()
    line = " ".join(text.split("\n"))
    if len(line) > MAX_STATUS:
        line = line[: MAX_STATUS - 1] + "…"
    return (f"STATUS={line}",)


def _show(address: str | bytes | None) -> str:
    if isinstance(address, bytes):
        return "@" + os.fsdecode(address[1:])
    return str(address)


# -- loops the daemon runs ---------------------------------------------------------------


async def watchdog_loop(notifier: Notifier, healthy: Callable[[], bool]) -> None:
    """Ping systemd every ``watchdog_interval`` seconds while ``healthy()``; return at once without one.

    The contract for ``healthy``: it is called on the event loop once per
    interval, must be cheap and must not block; True means "fleetd is making
    progress" — the daemon decides what that takes (its root tasks still
    running, say). If it returns False (or raises, which counts as False and
    is logged), no ping is sent; if that lasts about ``WatchdogSec``, systemd
    kills and restarts fleetd. That is the point: a restart is the cure for a
    daemon that runs but does nothing.

    A blocked event loop needs no check of its own: this loop runs on it, so
    no pings go out while it is blocked, and systemd acts the same way.
    """
    interval = notifier.watchdog_interval
    if interval is None:
        return
    was_healthy = True
    while True:
        is_healthy = _ask(healthy, quiet=not was_healthy)
        if is_healthy:
            notifier.watchdog()
        if is_healthy != was_healthy:
            _log_health_change(is_healthy, interval)
            was_healthy = is_healthy
        await asyncio.sleep(interval)


def _ask(healthy: Callable[[], bool], *, quiet: bool) -> bool:
    """``healthy()``, with an exception counted as False (its traceback logged unless `quiet`)."""
    try:
        return bool(healthy())
    except Exception:  # a broken health check must stop the pings, not the daemon
        if not quiet:
            log.exception("watchdog: the health check failed; counting fleetd as unhealthy")
        return False


def _log_health_change(healthy: bool, interval: float) -> None:
    if healthy:
        log.info("watchdog: fleetd is healthy again; pinging systemd")
    else:
        log.warning(
            "watchdog: fleetd is not healthy; no pings to systemd, which restarts fleetd "
            "if this lasts %gs (WatchdogSec)",
            interval * 2,
        )


async def status_loop(
    notifier: Notifier, describe: Callable[[], str], every: float = 2.0, *, sent: str | None = None
) -> None:
    """Send ``STATUS=describe()`` whenever it differs from the last one sent (`sent` at first).

    Checked every `every` seconds: polling keeps notification calls out of
    every event handler of the daemon; a status that changes and changes back
    in between is not reported, which is fine for a line humans read.
    Returns at once outside systemd.
    """
    if not notifier.enabled:
        return
    last = sent
    while True:
        text = describe()
        if text != last:
            notifier.status(text)
            last = text
        await asyncio.sleep(every)


async def announce(
    notifier: Notifier,
    *,
    started: asyncio.Event,
    describe: Callable[[], str],
    healthy: Callable[[], bool],
    status_every: float = 2.0,
) -> None:
    """``READY=1`` once `started` is set, then watchdog pings and status updates until cancelled.

    The daemon runs this as one task beside its root tasks and cancels it
    when it stops; ``STOPPING=1`` and reloads are sent by the daemon itself,
    where they happen.
    """
    await started.wait()
    status = describe()
    notifier.ready(status)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(watchdog_loop(notifier, healthy), name="systemd-watchdog")
        tg.create_task(status_loop(notifier, describe, status_every, sent=status), name="systemd-status")
