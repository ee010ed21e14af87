"""Shared fixtures: the real test bed (etcd + one kube-apiserver per spoke).

The bed is session-scoped and started lazily, on the first test that asks
for it, so unit-only runs never start it. Tests isolate themselves with a
unique namespace per test (created on every spoke) instead of a bed of
their own; tests that need to stop a spoke add a throw-away spoke to the
shared etcd with ``spare_spoke``.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

from testbed.bed import Spoke, TestBed
from testbed.build import put_tools_on_path
from tests.gitservers import GitServers, start_servers

if TYPE_CHECKING:  # imported when a browser test asks: the arm64 check has no Playwright
    from playwright.async_api import Browser

put_tools_on_path()  # fleetd finds sops and kustomize on PATH, as on a hub

SPOKES = ("spoke-a", "spoke-b", "spoke-c")
#: Debian's Chromium, never a downloaded one; without the network flags it keeps calling Google hosts.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync",
)  # fmt: skip
#: The page's first-contentful-paint in ms, waiting for the entry if the browser has not written it yet.
FCP = """new Promise(done => {
  const seen = performance.getEntriesByName('first-contentful-paint')[0];
  if (seen) return done(seen.startTime);
  new PerformanceObserver(list => {
    for (const e of list.getEntries()) if (e.name === 'first-contentful-paint') done(e.startTime);
  }).observe({type: 'paint', buffered: true});
})"""
_spare_names = (f"spare-{i}" for i in itertools.count(1))


@pytest.fixture(scope="session")
def testbed() -> Iterator[TestBed]:
    """Three plain spokes for the whole session."""
    with TestBed(SPOKES) as bed:
        yield bed


@pytest.fixture(scope="session")
def full_testbed() -> Iterator[TestBed]:
    """One spoke with controller-manager, scheduler and kwok: workloads become Available."""
    with TestBed(["full-a"], full=True) as bed:
        yield bed


@pytest.fixture
def spokes(testbed: TestBed) -> list[Spoke]:
    return [testbed.spokes[n] for n in SPOKES]


@pytest.fixture
def namespace(testbed: TestBed) -> Iterator[str]:
    """A fresh namespace, created on every spoke of the shared bed."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    for spoke in testbed.spokes.values():
        if spoke.running:
            spoke.request("POST", "/api/v1/namespaces", body)
    yield name
    for spoke in testbed.spokes.values():
        if spoke.running:
            spoke.request("DELETE", f"/api/v1/namespaces/{name}")


@pytest.fixture
def spare_spoke(testbed: TestBed) -> Iterator[Spoke]:
    """A spoke of its own on the shared etcd, which the test may stop and start."""
    name = next(_spare_names)
    (spoke,) = testbed.add_spokes([name])
    yield spoke
    testbed.remove_spoke(name)


@pytest.fixture(scope="session")
def git_servers() -> Iterator[GitServers]:
    """sshd, smart HTTP over TLS and a GitHub App token stand-in on loopback (tests/gitservers.py)."""
    yield from start_servers()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium from Debian's package, started once for the session (on first use)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS))
        yield chromium
        await chromium.close()
