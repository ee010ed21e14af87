"""Log lines callers from the network can cause: one per kind every few seconds, saying what was held back."""

from __future__ import annotations

import pytest

from fleetd.util.ratelimit import MAX_KINDS, LogLimiter

pytestmark = pytest.mark.timeout(10)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_first_line_is_written_then_one_per_period_with_the_count_held_back() -> None:
    clock = Clock()
    limiter = LogLimiter(every=10.0, clock=clock)
    assert limiter.allow("unauthorized") == 0
    assert [limiter.allow("unauthorized") for _ in range(999)] == [None] * 999
    clock.now += 10.0
    assert limiter.allow("unauthorized") == 999
    assert limiter.allow("unauthorized") is None
    clock.now += 10.0
    assert limiter.allow("unauthorized") == 1


def test_kinds_are_limited_separately() -> None:
    limiter = LogLimiter(every=10.0, clock=Clock())
    assert limiter.allow(("github", "unauthorized")) == 0
    assert limiter.allow(("github", "accepted")) == 0
    assert limiter.allow(("generic", "unauthorized")) == 0
    assert limiter.allow(("github", "unauthorized")) is None


def test_memory_is_bounded_however_many_kinds_arrive() -> None:
    limiter = LogLimiter(every=10.0, clock=Clock())
    for i in range(10 * MAX_KINDS):
        limiter.allow(("generic", "ignored", f"push to refs/heads/{i}"))
    assert limiter.remembered <= MAX_KINDS
