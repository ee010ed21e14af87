"""The open-file budget: raise the soft ``RLIMIT_NOFILE`` towards the hard limit at start.

Every spoke costs descriptors (its connection pool, one per watch), and so
does every HTTP client. Many systems start processes with a soft limit of
1024 (launchd: 256) under a much higher hard limit, which any process may
raise its soft limit to. ``fleetd run`` does that, up to `TARGET` — the
value the systemd unit sets as both limits (``LimitNOFILE=65536``).

Where raising is not allowed — under the unit's ``~@resources`` system-call
filter ``setrlimit`` fails with EPERM (the unit sets the limit itself
instead); macOS refuses values above ``kern.maxfilesperproc`` — the limit
stays as it is and the reason is logged once. Nothing here can fail the
start. The HTTP server sizes its connection cap from `open_files_limit`.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

#: The soft limit fleetd asks for (the systemd unit's LimitNOFILE=).
TARGET = 65536


def open_files_limit() -> int:
    """The soft limit on open descriptors now."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return TARGET if soft == resource.RLIM_INFINITY else int(soft)


def raise_open_files_limit(target: int = TARGET) -> int:
    """Raise the soft limit to ``min(target, hard)`` if it is lower; return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return open_files_limit()
    wanted = target if hard == resource.RLIM_INFINITY else min(target, hard)
    if wanted <= soft:
        log.info("open files: soft limit %d is already the hard limit; raise LimitNOFILE to allow more", soft)
        return int(soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (OSError, ValueError) as exc:
        log.info("open files: keeping the soft limit %d (raising it to %d failed: %s)", soft, wanted, exc)
        return int(soft)
    log.info("open files: soft limit raised from %d to %d", soft, wanted)
    return wanted
