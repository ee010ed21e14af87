"""Logging: JSON lines under systemd (or when asked), readable lines on a terminal.

Under systemd (``JOURNAL_STREAM`` is set) or with ``FLEETD_LOG_FORMAT=json``
every record is one JSON object per line — ``time``, ``level``, ``logger``,
``message`` and, where the record carries them, ``cluster``, ``sync`` and
``revision`` — so ``journalctl -o cat | jq`` can filter by cluster.
``FLEETD_LOG_FORMAT=text`` forces readable lines, which end with the same
fields in brackets. Messages never contain secret values: the stages that
handle plaintext never log it.

The fields come from context, not from message prefixes: `bound` sets them
for the current task (a worker binds its cluster, a reconcile its sync and
revision) through a `contextvars.ContextVar`, and tasks started inside
inherit them, so a watch task logs with its cluster.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

FIELDS = ("cluster", "sync", "revision")
_CONTEXT: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
    "fleetd_log_context", default=()
)


def _merged(fields: dict[str, str | None]) -> tuple[tuple[str, str], ...]:
    current = dict(_CONTEXT.get())
    current.update({k: v for k, v in fields.items() if v is not None})
    return tuple(current.items())


@contextlib.contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """Log records made inside (and in tasks started inside) carry these fields."""
    token = _CONTEXT.set(_merged(fields))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def bind(**fields: str | None) -> None:
    """Set fields for the rest of the current task (its own context; the caller's is untouched)."""
    _CONTEXT.set(_merged(fields))


class ContextFilter(logging.Filter):
    """Copies the bound fields onto every record (explicit ``extra`` fields win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _CONTEXT.get():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


class TextFormatter(logging.Formatter):
    """A readable line, the bound fields at the end: ``... [cluster=pi5 sync=apps]``."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [f"{n}={getattr(record, n)}" for n in FIELDS if getattr(record, n, None) is not None]
        return f"{line} [{' '.join(fields)}]" if fields else line


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                doc[name] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def wants_json(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    chosen = env.get("FLEETD_LOG_FORMAT", "").lower()
    if chosen in ("json", "text"):
        return chosen == "json"
    return "JOURNAL_STREAM" in env


def setup(level: str = "info") -> None:
    """Configure the root logger for the daemon."""
    handler = logging.StreamHandler(sys.stderr)
    if wants_json():
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
