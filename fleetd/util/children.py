"""Child processes that die with fleetd.

fleetd runs kustomize and sops (which may run gpg). When the daemon is
killed (``kill -9``, the OOM killer), those children must not live on
holding decrypted data. On Linux, `die_with_parent` gives a ``preexec_fn``
that asks the kernel (``prctl(PR_SET_PDEATHSIG, SIGKILL)``) to kill the child
when the thread that started it ends, and kills the child at once if that
happened before the request was made. The starting thread waits for the
child, so it outlives it in normal operation.

Elsewhere (macOS) it returns None, which ``subprocess`` takes as "no
preexec function"; there the callers' own timeouts and process-group kills
on cancellation remain the only defence.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    function.restype = ctypes.c_int
    prctl: Callable[..., int] = function
    return prctl


_PRCTL = _prctl()  # looked up once, in the parent: the child only calls it


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` making the child die with the calling thread (Linux), else None."""
    prctl = _PRCTL
    if prctl is None:
        return None
    parent = os.getpid()

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request: nobody will kill us
            os.kill(os.getpid(), signal.SIGKILL)

    return setup
