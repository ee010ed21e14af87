"""A resilient list-then-watch of one resource type, like a client-go informer without the cache.

``ResourceWatch.run`` lists the objects matching a label selector, hands the
list to ``on_list``, then watches from the list's resourceVersion and hands
every event to ``on_event``. It keeps going until cancelled:

* the server ends watches every few minutes (``timeoutSeconds``): resume from
  the last resourceVersion seen — no event is lost;
* bookmarks advance the resourceVersion without an object change, so a
  resume rarely hits a compacted version;
* 410 Gone (the version was compacted): list again, so ``on_list`` sees the
  whole current state and nothing that happened meanwhile is missed;
* connection failures: back off (exponential with jitter, capped) and resume.

``synced`` is set while the watch is established after a list; the drift
tracker uses it to know whether it can vouch for a sync between sweeps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fleetd.kube.client import Gone, KubeClient, KubeError
from fleetd.kube.discovery import Resource
from fleetd.util.backoff import backoff

log = logging.getLogger(__name__)

EventHandler = Callable[[str, dict[str, Any]], Awaitable[None]]
ListHandler = Callable[[list[dict[str, Any]]], Awaitable[None]]

WATCH_SECONDS = 300


class ResourceWatch:
    """Keeps one label-selected watch alive; see the module docstring."""

    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        selector: str,
        *,
        on_event: EventHandler,
        on_list: ListHandler,
        watch_seconds: int = WATCH_SECONDS,
        namespace: str = "",
    ) -> None:
        self.client, self.resource, self.selector = client, resource, selector
        self.namespace = namespace  # "" = every namespace
        self._on_event, self._on_list = on_event, on_list
        self._watch_seconds = watch_seconds
        self.synced = asyncio.Event()
        self._version: str | None = None

    @property
    def name(self) -> str:
        r = self.resource
        return f"{r.plural}.{r.group}/{r.version}" if r.group else f"{r.plural}/{r.version}"

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                if self._version is None:
                    await self._list()
                await self._watch()
                failures = 0
            except Gone:
                self._version = None  # compacted: list again
            except KubeError as exc:
                self.synced.clear()
                failures += 1
                delay = backoff(failures)
                log.warning(
                    "cluster %s: watch %s failed (%s); retrying in %.1fs",
                    self.client.cluster,
                    self.name,
                    exc.detail,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _list(self) -> None:
        listed = await self.client.request(
            "GET", self.resource.path(self.namespace), query={"labelSelector": self.selector}
        )
        self._version = str(listed["metadata"]["resourceVersion"])
        # Items of a list carry no apiVersion and kind (watch events do): restore them, so
        # handlers see the same complete objects either way.
        r = self.resource
        api_version = f"{r.group}/{r.version}" if r.group else r.version
        await self._on_list(
            [{**o, "apiVersion": api_version, "kind": r.kind} for o in listed.get("items") or []]
        )

    async def _watch(self) -> None:
        query = [
            ("labelSelector", self.selector),
            ("resourceVersion", self._version or ""),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(self._watch_seconds)),
        ]
        self.synced.set()
        async for event in self.client.watch(
            self.resource.path(self.namespace), query=query, timeout=self._watch_seconds + 30
        ):
            obj = event.get("object") or {}
            self._version = str((obj.get("metadata") or {}).get("resourceVersion") or self._version)
            if event.get("type") != "BOOKMARK":
                await self._on_event(str(event.get("type")), obj)
