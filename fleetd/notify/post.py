"""HTTP POSTs of notifications: aiohttp enters `fleetd.notify` only here.

`Poster` holds one client session for the notifier's lifetime and sends
one JSON body per call, within a deadline. Every failure becomes a
`DeliveryError` whose ``temporary`` says whether a retry may help (no
answer, 408, 429, 5xx) and whose message names the host and the HTTP
status, never the path or query (a webhook URL may carry a token there)
and never a header.
"""

from __future__ import annotations

from types import TracebackType
from urllib.parse import urlsplit

import aiohttp

from fleetd.errors import FleetdError

#: Seconds one POST may take, connection included.
TIMEOUT = 15.0
_TEMPORARY_STATUSES = frozenset({408, 425, 429})


class DeliveryError(FleetdError):
    """A notification could not be delivered this time."""

    def __init__(
        self, message: str, *, temporary: bool, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.temporary = temporary
        self.status = status
        self.retry_after = retry_after


def host_of(url: str) -> str:
    """``scheme://host[:port]`` of `url`, for messages (never its path, query or user info)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}{f':{parts.port}' if parts.port else ''}"


class Poster:
    """One aiohttp session; use as an async context manager."""

    def __init__(self, timeout: float = TIMEOUT) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Poster:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """POST `body`; return (status, text) of a 2xx answer, raise `DeliveryError` otherwise."""
        assert self._session is not None, "Poster used outside its context"
        where = host_of(url)
        try:
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                text = (await resp.text(errors="replace"))[:500]
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = "no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__
            raise DeliveryError(f"{where}: {reason}", temporary=True) from None
        if 200 <= status <= 299:
            return status, text
        temporary = status >= 500 or status in _TEMPORARY_STATUSES
        delay = float(retry_after) if retry_after and retry_after.isdigit() else None
        raise DeliveryError(
            f"{where} answered {status}", temporary=temporary, status=status, retry_after=delay
        )
