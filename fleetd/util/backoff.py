"""Exponential back-off with jitter, shared by the cluster workers and the watches."""

from __future__ import annotations

import random

BACKOFF_BASE = 1.0
BACKOFF_CAP = 300.0


def backoff(
    failures: int, *, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP, rng: random.Random | None = None
) -> float:
    """Delay after ``failures`` consecutive failures: uniform in ``[d/2, d]``, ``d = min(cap, base*2^(n-1))``.

    The jitter keeps many clusters that failed together (a hub network blip)
    from retrying in lock-step.
    """
    delay = min(cap, base * float(2 ** min(max(0, failures - 1), 32)))
    return (rng or _jitter).uniform(delay / 2, delay)


_jitter = random.Random()  # noqa: S311 - jitter, not cryptography
