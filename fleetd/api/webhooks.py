"""Webhook verification: is this push notification genuine, and should fleetd fetch?

A webhook only shortens the wait for the next fetch; fleetd still fetches
on its interval without one. So a receiver takes no data from the request
(no ref, no commit): a valid call means "fetch now". The only thing to get
right is authenticity, and that is kept pure here, away from HTTP, so it is
tested without a server.

Both receivers authenticate with an HMAC-SHA256 of the raw request body,
keyed with a shared secret, in hex:

* **GitHub** (``POST /hooks/github``): header ``X-Hub-Signature-256:
  sha256=<hex>``, as GitHub sends it when the webhook has a secret. Event
  ``push`` triggers a fetch; ``ping`` (sent when the hook is created) is
  accepted without one; other events are ignored. A signed call without
  ``X-GitHub-Event`` is a bad request.
* **Generic** (``POST /hooks/generic``), for Gitea, GitLab relays, CI jobs
  or ``curl``: header ``X-Signature-256: sha256=<hex>``; every validly
  signed call triggers a fetch. For example::

      sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1)
      curl -H "X-Signature-256: sha256=$sig" --data "$body" http://hub:9480/hooks/generic

The signature is checked before anything else, so an unauthenticated caller
learns nothing (not even which events fleetd cares about), and compared in
constant time (`hmac.compare_digest`). Secrets are read once, from files, at
start; they and the signatures never appear in a message, a log line or a
repr. An empty or unreadable secret file is a configuration error
(`WebhookSecretError`), raised before the server listens.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from fleetd.errors import FleetdError

GITHUB_SIGNATURE = "X-Hub-Signature-256"
GITHUB_EVENT = "X-GitHub-Event"
GENERIC_SIGNATURE = "X-Signature-256"

_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")


class WebhookSecretError(FleetdError):
    """A webhook secret file is missing, unreadable or empty."""


class Result(StrEnum):
    """How one webhook call ended; also the ``result`` label of its metric."""

    ACCEPTED = "accepted"
    IGNORED = "ignored"
    UNAUTHORIZED = "unauthorized"
    TOO_LARGE = "too_large"
    BAD_REQUEST = "bad_request"


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """The outcome of verifying one call; `message` is safe to log and to answer with."""

    result: Result
    fetch: bool
    """Whether fleetd should fetch now."""
    message: str


@dataclass(frozen=True, slots=True)
class Secret:
    """A webhook secret; its repr never shows the value."""

    value: bytes = field(repr=False)

    @classmethod
    def read(cls, path: Path) -> Secret:
        """The file's content without surrounding whitespace; `WebhookSecretError` if empty or unreadable."""
        try:
            value = path.read_bytes().strip()
        except OSError as exc:
            raise WebhookSecretError(
                f"webhook secret file {path}: cannot be read ({exc.strerror}); check the path and permissions"
            ) from exc
        if not value:
            raise WebhookSecretError(
                f"webhook secret file {path}: is empty; write a random secret into it, "
                f"e.g. `openssl rand -hex 32 > {path}`, and give the same secret to the sender"
            )
        return cls(value)


def sign(secret: Secret, body: bytes) -> str:
    """The header value a sender computes: ``sha256=<hex HMAC-SHA256 of body>``."""
    return "sha256=" + hmac.new(secret.value, body, hashlib.sha256).hexdigest()


def signature_valid(secret: Secret, body: bytes, header: str | None) -> bool:
    """Whether `header` is ``sha256=<hex>`` of `body` under `secret`, compared in constant time."""
    match = _SIGNATURE.fullmatch(header or "")
    if match is None:
        return False
    expected = hmac.new(secret.value, body, hashlib.sha256).digest()
    return hmac.compare_digest(expected, bytes.fromhex(match[1]))


def verify_github(secret: Secret, headers: Mapping[str, str], body: bytes) -> Verdict:
    """A call from GitHub: push fetches, ping is acknowledged, other events are ignored."""
    if not signature_valid(secret, body, headers.get(GITHUB_SIGNATURE)):
        return _unauthorized(GITHUB_SIGNATURE)
    event = headers.get(GITHUB_EVENT)
    if not event:
        return Verdict(result=Result.BAD_REQUEST, fetch=False, message=f"missing {GITHUB_EVENT} header")
    if event == "push":
        return Verdict(result=Result.ACCEPTED, fetch=True, message="push event; fetching now")
    if event == "ping":
        return Verdict(result=Result.ACCEPTED, fetch=False, message="ping event; webhook is set up")
    return Verdict(result=Result.IGNORED, fetch=False, message=f"{_printable(event)} event ignored")


def verify_generic(secret: Secret, headers: Mapping[str, str], body: bytes) -> Verdict:
    """A call from any sender that signs the body: always fetches when the signature is valid."""
    if not signature_valid(secret, body, headers.get(GENERIC_SIGNATURE)):
        return _unauthorized(GENERIC_SIGNATURE)
    return Verdict(result=Result.ACCEPTED, fetch=True, message="signed request; fetching now")


Verifier = Callable[[Secret, Mapping[str, str], bytes], Verdict]
"""The shape of `verify_github` and `verify_generic`."""

RECEIVERS: Mapping[str, Verifier] = {"github": verify_github, "generic": verify_generic}
"""Receiver name (the last part of its path, ``/hooks/<name>``) to its verifier."""


def _unauthorized(header: str) -> Verdict:
    # Says which header is checked, never what was received or expected.
    message = f"missing or invalid {header} signature (HMAC-SHA256 of the body with the shared secret)"
    return Verdict(result=Result.UNAUTHORIZED, fetch=False, message=message)


def _printable(text: str) -> str:
    # The event name is caller-controlled and goes into a log line: keep it short and plain.
    return re.sub(r"[^A-Za-z0-9_.-]", "?", text[:40])
