"""Chat and push services through apprise: apprise enters fleetd only here.

One `AppriseTarget` per apprise URL (Slack, Discord, Microsoft Teams,
Telegram, ntfy, Matrix, e-mail, ``json://`` ...): a rule with a file of
several URLs gets one target each, so a retry never repeats a message to a
service that already has it. apprise is synchronous, so a send runs in a
worker thread; apprise's own connect and read timeouts bound it.

apprise URLs often hold tokens. fleetd names a target only by its scheme
(``slack``, ``json``), apprise's logger is kept at WARNING (its debug lines
print payloads and URLs), and a filter replaces every part of the
configured URLs that could be a credential in whatever apprise logs.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from fleetd.daemon.events import Severity
from fleetd.notify.credentials import CredentialError
from fleetd.notify.messages import Notice
from fleetd.notify.post import DeliveryError

#: apprise's notify types (the values of ``apprise.NotifyType``).
_TYPES = {Severity.INFO: "info", Severity.WARNING: "warning", Severity.ERROR: "failure"}
_RECOVERED = "success"
#: URL parts at least this long are treated as possible credentials in apprise's log lines.
_MIN_SECRET = 6


class _Scrub(logging.Filter):
    """Masks the configured URLs' possible credentials in apprise's (and urllib3's) log records."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        record.msg, record.args = text, None
        return True


_scrub = _Scrub()
for _name in ("apprise", "urllib3"):
    _logger = logging.getLogger(_name)
    _logger.setLevel(logging.WARNING)
    _logger.addFilter(_scrub)


def _parts(url: str) -> set[str]:
    pieces = re.split(r"[/:@?&=#]+", url.split("://", 1)[-1])
    return {url, *(p for p in pieces if len(p) >= _MIN_SECRET)}


class AppriseTarget:
    """One apprise URL."""

    def __init__(self, url: str) -> None:
        self.scheme = url.split("://", 1)[0] if "://" in url else "?"
        _scrub.secrets |= _parts(url)
        import apprise  # apprise loads ~200 plugins: only a daemon with an apprise target pays for it

        self._apprise: Any = apprise.Apprise()
        if not self._apprise.add(url):
            raise CredentialError(
                f"an apprise URL with scheme {self.scheme!r} is not one apprise understands; "
                "see the apprise wiki for the URL format of the service"
            )

    @property
    def label(self) -> str:
        return f"apprise {self.scheme}"

    async def send(self, notice: Notice) -> None:
        kind = _RECOVERED if notice.reason == "recovery" else _TYPES[notice.severity]
        ok = await asyncio.to_thread(
            self._apprise.notify, body=notice.body, title=notice.title, notify_type=kind
        )
        if not ok:
            raise DeliveryError(
                f"apprise could not deliver to {self.scheme} (see apprise's warning)", temporary=True
            )
