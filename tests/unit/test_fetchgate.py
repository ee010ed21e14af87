"""Webhook pushes to fetches: one at once, then at most one per spacing; the last push is always fetched."""

from __future__ import annotations

import asyncio

import pytest

from fleetd.api.fetchgate import FetchGate
from tests.integration.fleet import eventually

pytestmark = pytest.mark.timeout(10)


async def test_a_burst_shorter_than_the_spacing_asks_for_two_fetches() -> None:
    asked: list[float] = []
    loop = asyncio.get_running_loop()
    gate = FetchGate(lambda: asked.append(loop.time()), spacing=0.3)
    for _ in range(1000):
        gate.push()
    assert len(asked) == 1

    async def two() -> bool:
        return len(asked) == 2

    await eventually(two, "the queued fetch", timeout=5)
    assert asked[1] - asked[0] >= 0.29
    await asyncio.sleep(0.4)  # the window passes with nothing more asked for
    assert len(asked) == 2
    gate.push()  # a push after a quiet window fetches at once
    assert len(asked) == 3


async def test_closing_drops_the_queued_fetch() -> None:
    asked: list[int] = []
    gate = FetchGate(lambda: asked.append(1), spacing=0.1)
    gate.push()
    gate.push()
    gate.close()
    await asyncio.sleep(0.2)
    assert asked == [1]
