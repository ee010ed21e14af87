"""Who may read and who may act: access tokens, browser sessions, and the policy that combines them.

Pure (no HTTP here), so every rule is tested without a server.

**Tokens** live in ``[web] token_file``, one per line as ``name:token``; the
name says who asked in the events of the actions the token is used for. A
bare token is named ``operator``. Blank lines and ``#`` comments are
skipped. A token shorter than `MIN_TOKEN` characters, a bad name or a
repeated name is refused with the line number. The file is read when the
server starts (a bad file stops it before it listens) and again whenever
it changes on disk, so tokens rotate without a restart; a changed file that
cannot be read keeps the previous tokens and says so in the log once.

Every comparison is constant-time (`hmac.compare_digest`) and tries every
token, so timing tells nothing about which prefix matched. Tokens never
appear in a message, a log line or a repr.

**Sessions** let a browser carry a token without storing it: logging in
sets a cookie ``name|issued|mac``, where ``mac`` is an HMAC of the name and
time keyed with that person's token. It is valid for `SESSION_SECONDS` and
dies as soon as the token is rotated.

**Policy** (`Access`): actions need ``[web] actions = true`` *and* a
token; reads need a token only when the server listens beyond loopback
(without ``allow_unauthenticated``, the inventory refuses that without a
token file).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from fleetd.errors import FleetdError
from fleetd.inventory import WebSettings

log = logging.getLogger(__name__)

MIN_TOKEN: Final = 16
"""Shortest accepted token (characters); ``openssl rand -hex 32`` gives 64."""
SESSION_SECONDS: Final = 12 * 3600
"""How long a browser session lasts before the token must be given again."""
DEFAULT_NAME: Final = "operator"
"""Who a token without a name is."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class TokenFileError(FleetdError):
    """The token file is missing, unreadable, empty or malformed (the message names the line)."""


@dataclass(frozen=True, slots=True)
class Token:
    """One named token; its value never appears in a repr."""

    name: str
    value: bytes

    def __repr__(self) -> str:
        return f"Token({self.name!r}, ***)"


def parse_tokens(text: str, source: str) -> tuple[Token, ...]:
    """The tokens of a token file's text; raise `TokenFileError` naming `source` and the line."""
    found: list[Token] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition(":")
        if not sep:
            name, value = DEFAULT_NAME, line
        where = f"{source}:{number}"
        if not _NAME.fullmatch(name):
            raise TokenFileError(f"{where}: the name before ':' must be letters, digits, '.', '_', '@', '-'")
        if len(value) < MIN_TOKEN:
            raise TokenFileError(
                f"{where}: the token of {name!r} is shorter than {MIN_TOKEN} characters; "
                "make one with `openssl rand -hex 32`"
            )
        if any(t.name == name for t in found):
            raise TokenFileError(f"{where}: {name!r} has a token already; names must be unique")
        found.append(Token(name, value.encode()))
    if not found:
        raise TokenFileError(f"{source} holds no token; add a line name:token")
    return tuple(found)


class Tokens:
    """The tokens of one file, re-read when the file changes; see the module docstring."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._tokens: tuple[Token, ...] = ()
        self._warned: tuple[int, int] | None = None
        self.refresh(strict=True)

    def refresh(self, *, strict: bool = False) -> None:
        """Re-read the file if it changed; ``strict``: raise instead of keeping the last good tokens."""
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp == self._stamp:
                return
            self._tokens = parse_tokens(self.path.read_text(encoding="utf-8"), str(self.path))
            self._stamp = stamp
            log.info("web: %d access token(s) read from %s", len(self._tokens), self.path)
        except (OSError, UnicodeDecodeError, TokenFileError) as exc:
            error = exc if isinstance(exc, TokenFileError) else _unreadable(self.path, exc)
            if strict:
                raise error from exc
            stamp_now = self._stamp_or_none()
            if stamp_now != self._warned:
                self._warned = stamp_now
                log.error("web: %s; the tokens read before stay in force", error)  # noqa: TRY400

    def _stamp_or_none(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def match(self, presented: str) -> str | None:
        """The name of the token equal to ``presented`` (constant time over all tokens), or None."""
        self.refresh()
        given = presented.encode()
        name = None
        for token in self._tokens:
            if hmac.compare_digest(token.value, given):
                name = token.name
        return name

    def session(self, name: str, now: float | None = None) -> str:
        """A session cookie value for the holder of ``name``'s token."""
        issued = int(time.time() if now is None else now)
        token = self._by_name(name)
        return f"{name}|{issued}|{_mac(token, name, issued)}" if token else ""

    def session_name(self, cookie: str, now: float | None = None) -> str | None:
        """Who a session cookie belongs to, or None when it is malformed, expired or forged."""
        self.refresh()
        parts = cookie.split("|")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        name, issued, mac = parts[0], int(parts[1]), parts[2]
        age = (time.time() if now is None else now) - issued
        token = self._by_name(name)
        if token is None or not 0 <= age <= SESSION_SECONDS:
            return None
        return name if hmac.compare_digest(_mac(token, name, issued), mac) else None

    def _by_name(self, name: str) -> Token | None:
        return next((t for t in self._tokens if t.name == name), None)

    def __repr__(self) -> str:
        return f"<Tokens {self.path} ({len(self._tokens)})>"


def _mac(token: Token, name: str, issued: int) -> str:
    return hmac.new(token.value, f"fleetd-session|{name}|{issued}".encode(), hashlib.sha256).hexdigest()


def _unreadable(path: Path, exc: BaseException) -> TokenFileError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
    return TokenFileError(f"cannot read the token file {path}: {reason}")


@dataclass(frozen=True, slots=True)
class Access:
    """What a request may do, given the settings, the tokens and where the server listens."""

    settings: Callable[[], WebSettings]
    """The ``[web]`` settings in force (the inventory may be reloaded)."""
    tokens: Callable[[], Tokens | None]
    loopback: bool
    """Whether the server listens on loopback only."""

    @property
    def reads_need_token(self) -> bool:
        """Beyond loopback, unless explicitly open; fails closed if the token file cannot be read."""
        return not self.loopback and not self.settings().allow_unauthenticated

    def actions_refused(self) -> str | None:
        """Why actions are off for everyone, or None when a token holder may act."""
        if not self.settings().actions:
            return "actions are disabled: set [web] actions = true (and token_file) in the fleet file"
        if self.tokens() is None:
            return "actions need an access token: set [web] token_file in the fleet file"
        return None

    def who(self, *, bearer: str | None, cookie: str | None) -> str | None:
        """The name behind a bearer token or a session cookie; None when neither is valid."""
        tokens = self.tokens()
        if tokens is None:
            return None
        if bearer:
            return tokens.match(bearer)
        if cookie:
            return tokens.session_name(cookie)
        return None


class Failures:
    """Failed token attempts per client address, to slow down guessing (at most `limit` a minute)."""

    def __init__(self, limit: int = 20, window: float = 60.0, size: int = 4096) -> None:
        self.limit, self.window, self.size = limit, window, size
        self._seen: dict[str, list[float]] = {}

    def blocked(self, client: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        recent = [t for t in self._seen.get(client, []) if now - t < self.window]
        if recent:
            self._seen[client] = recent
        else:
            self._seen.pop(client, None)
        return len(recent) >= self.limit

    def failed(self, client: str, now: float | None = None) -> None:
        if len(self._seen) >= self.size and client not in self._seen:
            self._seen.pop(next(iter(self._seen)))  # bounded: the oldest client is forgotten
        self._seen.setdefault(client, []).append(time.monotonic() if now is None else now)
