"""``GET /api/v1/stream``: the live event bus as Server-Sent Events, resumable by event id.

`frames` yields the bytes of the stream; the HTTP layer only writes them.

* Each event is one SSE message: ``id:`` is its journal id (so a browser's
  ``EventSource`` sends it back as ``Last-Event-ID`` when it reconnects) and
  ``data:`` is the event's JSON (`Event.to_json`). No ``event:`` field: every
  message reaches ``onmessage``; the kind is in the data.
* **Resume.** Given a last id, the stream first replays the journal events
  after it (at most `REPLAY` of the newest), then goes live. It subscribes to
  the bus *before* reading the journal, and skips live events it has
  already replayed, so nothing falls in the gap between the two.
* **Filters** (``cluster``, ``sync``, ``kind``) apply to both parts.
* A comment line every `KEEPALIVE` seconds keeps proxies from closing an
  idle connection and tells the server when the client went away.
* A subscriber that falls `fleetd.daemon.events.QUEUE_SIZE` events behind is
  dropped by the bus; the stream then ends, and the client reconnects and
  resumes from the journal: a slow client never slows the daemon.

Events recorded while the state directory is broken have no id (0); they
are sent without an ``id:`` line, so a resume does not jump over them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

from fleetd.daemon.events import Event, Subscription
from fleetd.daemon.state import FleetState

KEEPALIVE: Final = 15.0
REPLAY: Final = 1000
RETRY_MS: Final = 2000
"""How long a browser waits before reconnecting (milliseconds)."""


def frame(event: Event) -> bytes:
    """One SSE message for ``event``."""
    data = json.dumps(event.to_json(), separators=(",", ":"))
    head = f"id: {event.id}\n" if event.id else ""
    return f"{head}data: {data}\n\n".encode()


def matches(event: Event, filters: Mapping[str, Any]) -> bool:
    """Whether a live event passes the journal filters `filters` (cluster, sync, kinds)."""
    if "cluster" in filters and event.cluster != filters["cluster"]:
        return False
    if "sync" in filters and event.sync != filters["sync"]:
        return False
    kinds = filters.get("kinds")
    return not kinds or str(event.kind) in kinds


def end(sub: Subscription) -> None:
    """Stop a subscription from outside (server shutdown): its stream ends at once."""
    sub.close()
    while sub.queue.full():
        sub.queue.get_nowait()
    sub.queue.put_nowait(None)


async def frames(
    state: FleetState,
    sub: Subscription,
    *,
    last_id: int | None,
    filters: Mapping[str, Any],
    keepalive: float = KEEPALIVE,
) -> AsyncIterator[bytes]:
    """The stream's bytes for one client; ``sub`` must be subscribed before this is called."""
    yield f"retry: {RETRY_MS}\n\n".encode()
    sent = 0
    if last_id is not None:
        sent = last_id
        journal = {k: v for k, v in filters.items() if k in ("cluster", "sync", "kinds")}
        for old in state.events(**journal, after_id=last_id, limit=REPLAY):
            yield frame(old)
            sent = max(sent, old.id)
    while True:
        try:
            event: Event | None = await asyncio.wait_for(sub.queue.get(), keepalive)
        except TimeoutError:
            yield b": keepalive\n\n"
            continue
        if event is None:
            return  # dropped for lagging, or the server stops: the client resumes from the journal
        if (event.id and event.id <= sent) or not matches(event, filters):
            continue
        yield frame(event)
        sent = max(sent, event.id)
