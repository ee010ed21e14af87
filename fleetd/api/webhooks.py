"""Webhook verification: is this push notification genuine, and should fleetd fetch?

A webhook only shortens the wait for the next fetch; fleetd still fetches
on its interval without one. So a receiver trusts nothing in the request
but its authenticity and the name of the ref that was pushed: a valid push
means "fetch now", unless the ref is one the source does not follow. All of
it is pure, away from HTTP, so it is tested without a server.

Receivers:

* **GitHub** (``POST /hooks/github``): header ``X-Hub-Signature-256:
  sha256=<hex>``, an HMAC-SHA256 of the raw body keyed with the shared
  secret, as GitHub sends it when the webhook has a secret. Event ``push``
  (branches and tags alike) triggers a fetch; ``ping`` (sent when the hook
  is created) is accepted without one; other events are ignored. A signed
  call without ``X-GitHub-Event`` is a bad request.
* **GitLab** (``POST /hooks/gitlab``): header ``X-Gitlab-Token``, the
  webhook's secret token itself (GitLab does not sign bodies), compared in
  constant time. Events ``Push Hook`` and ``Tag Push Hook`` trigger a
  fetch; others are ignored; a call without ``X-Gitlab-Event`` is a bad
  request.
* **Generic** (``POST /hooks/generic``), for Gitea, relays, CI jobs or
  ``curl``: header ``X-Signature-256: sha256=<hex>`` (HMAC-SHA256 of the
  body); every validly signed call triggers a fetch. For example::

      sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1)
      curl -H "X-Signature-256: sha256=$sig" --data "$body" http://hub:9480/hooks/generic

**Refs.** When a verified body is JSON with a ``"ref"`` string (GitHub,
GitLab and Gitea pushes all have one: ``refs/heads/main``,
``refs/tags/v1.2.0``), the verdict carries it, and `for_source` turns a
push to a ref the source does not follow into ``ignored`` with the reason
(`fleetd.source.follows`): another branch, a tag outside the semver range,
anything while the source is pinned to a commit. A body without a ref
still fetches (the fetch itself finds out whether anything changed).

The signature or token is checked before anything else, so an
unauthenticated caller learns nothing (not even which events fleetd cares
about). Secrets are read once, from files, at start; they and the
signatures never appear in a message, a log line or a repr. An empty or
unreadable secret file is a configuration error (`WebhookSecretError`),
raised before the server listens.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from fleetd.errors import FleetdError
from fleetd.inventory.model import GitRef
from fleetd.source import follows

GITHUB_SIGNATURE = "X-Hub-Signature-256"
GITHUB_EVENT = "X-GitHub-Event"
GENERIC_SIGNATURE = "X-Signature-256"
GITLAB_TOKEN = "X-Gitlab-Token"  # noqa: S105 - a header name, not a secret
GITLAB_EVENT = "X-Gitlab-Event"
GITLAB_PUSH_EVENTS = frozenset({"Push Hook", "Tag Push Hook"})

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
    ref: str | None = None
    """The ref the push names (``refs/heads/main``), when the body says; None otherwise."""


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
        return _push("push event", body)
    if event == "ping":
        return Verdict(result=Result.ACCEPTED, fetch=False, message="ping event; webhook is set up")
    return Verdict(result=Result.IGNORED, fetch=False, message=f"{_printable(event)} event ignored")


def verify_gitlab(secret: Secret, headers: Mapping[str, str], body: bytes) -> Verdict:
    """A call from GitLab: its token must equal the secret; push and tag push events fetch."""
    token = headers.get(GITLAB_TOKEN, "").encode()
    if not token or not hmac.compare_digest(token, secret.value):
        message = f"missing or wrong {GITLAB_TOKEN} (the webhook's secret token)"
        return Verdict(result=Result.UNAUTHORIZED, fetch=False, message=message)
    event = headers.get(GITLAB_EVENT)
    if not event:
        return Verdict(result=Result.BAD_REQUEST, fetch=False, message=f"missing {GITLAB_EVENT} header")
    if event in GITLAB_PUSH_EVENTS:
        return _push(event.lower(), body)
    return Verdict(result=Result.IGNORED, fetch=False, message=f"{_printable(event)} event ignored")


def verify_generic(secret: Secret, headers: Mapping[str, str], body: bytes) -> Verdict:
    """A call from any sender that signs the body: fetches when the signature is valid."""
    if not signature_valid(secret, body, headers.get(GENERIC_SIGNATURE)):
        return _unauthorized(GENERIC_SIGNATURE)
    return _push("signed request", body)


def for_source(verdict: Verdict, followed: GitRef) -> Verdict:
    """`verdict`, turned into ``ignored`` when it pushes a ref that cannot change what `followed` deploys.

    The daemon calls it with the current inventory's ``source.ref`` after
    verifying a call; a verdict without a ref is returned unchanged.
    """
    if not verdict.fetch or verdict.ref is None:
        return verdict
    reason = follows(followed, verdict.ref)
    if reason is None:
        return verdict
    return dataclasses.replace(verdict, result=Result.IGNORED, fetch=False, message=f"push ignored: {reason}")


def pushed_ref(body: bytes) -> str | None:
    """The ``"ref"`` of a JSON push payload (``refs/heads/x``, ``refs/tags/y``); None if there is none."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    ref = data.get("ref") if isinstance(data, dict) else None
    return ref if isinstance(ref, str) and ref.startswith("refs/") and len(ref) < 1024 else None


def _push(what: str, body: bytes) -> Verdict:
    ref = pushed_ref(body)
    where = f" to {_printable(ref)}" if ref else ""
    return Verdict(result=Result.ACCEPTED, fetch=True, message=f"{what}{where}; fetching now", ref=ref)


Verifier = Callable[[Secret, Mapping[str, str], bytes], Verdict]
"""The shape of `verify_github`, `verify_gitlab` and `verify_generic`."""

RECEIVERS: Mapping[str, Verifier] = {
    "github": verify_github,
    "gitlab": verify_gitlab,
    "generic": verify_generic,
}
"""Receiver name (the last part of its path, ``/hooks/<name>``) to its verifier."""


def _unauthorized(header: str) -> Verdict:
    # Says which header is checked, never what was received or expected.
    message = f"missing or invalid {header} signature (HMAC-SHA256 of the body with the shared secret)"
    return Verdict(result=Result.UNAUTHORIZED, fetch=False, message=message)


def _printable(text: str) -> str:
    # Event and ref names are caller-controlled and go into a log line: keep them short and plain.
    return re.sub(r"[^A-Za-z0-9_./ -]", "?", text[:120])
