"""Logging: JSON lines under systemd (or when asked), readable lines on a terminal.

Under systemd (``JOURNAL_STREAM`` is set) or with ``FLEETD_LOG_FORMAT=json``
every record is one JSON object per line — ``time``, ``level``, ``logger``,
``message`` and, where the record carries them, ``cluster``, ``sync`` and
``revision`` — so ``journalctl -o cat | jq`` can filter by cluster.
``FLEETD_LOG_FORMAT=text`` forces readable lines. Messages never contain
secret values: the stages that handle plaintext never log it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

FIELDS = ("cluster", "sync", "revision")


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
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
