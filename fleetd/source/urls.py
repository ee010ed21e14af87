"""Source URLs: which transport reaches them, which host and port to trust, how to print them.

Pure string handling; nothing here touches the network. `redact` is applied
to every url before it reaches a message, a log line, a metric or a status
document, so a password written into a url by mistake is never repeated.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

Transport = Literal["ssh", "http", "local"]

_SCP_LIKE = re.compile(r"(?:(?P<user>[^@/]+)@)?(?P<host>\[[^]]+\]|[^:/]+):(?!//)")


def transport(url: str) -> Transport:
    """How `url` is reached: "ssh" (ssh://, git@host:path), "http" (http[s]://) or "local"."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in {"http", "https"}:
        return "http"
    if scheme in {"ssh", "git+ssh", "ssh+git"} or (not scheme.startswith("file") and _scp_like(url)):
        return "ssh"
    return "local"


def _scp_like(url: str) -> bool:
    return not url.startswith("/") and _SCP_LIKE.match(url) is not None


def ssh_host_port(url: str) -> tuple[str, int]:
    """Host and port of an SSH url, as libgit2 connects to them."""
    if "://" in url:
        parts = urlsplit(url)
        return parts.hostname or "", parts.port or 22
    match = _SCP_LIKE.match(url)
    return (match["host"].strip("[]") if match else ""), 22


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) or ssh url: where credentials may be sent."""
    if transport(url) == "ssh":
        host, port = ssh_host_port(url)
        return "ssh", host.lower(), port
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def redact(url: str) -> str:
    """`url` without a password, should one have been written into it."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def libgit2_url(url: str) -> str:
    """The url as libgit2 wants it (it reports a missing absolute path as an unsupported protocol)."""
    return Path(url).as_uri() if url.startswith("/") else url
