"""The git source's errors: one class per thing an operator fixes differently.

Every message starts with ``git source <url> (<ref>):`` and ends with what
to do. None of them ever contains a token, a passphrase or a password; the
url is redacted (`fleetd.source.urls.redact`) before it is stored::

    FleetdError
     └── SourceError          the git source failed
          ├── FetchError      unreachable, timed out, disk trouble: temporary, retried with back-off
          ├── AuthError       credentials refused or unusable (key, passphrase, token, GitHub App)
          │    └── TrustError the server is not the one trusted: unknown or changed SSH host key,
          │                   untrusted TLS certificate, redirect to another host
          └── RefNotFound     no such branch/tag/commit, no tag in the semver range

Whatever the error, the fetcher keeps its last good snapshot: nothing
downstream (render, apply, prune) sees a failed fetch.
"""

from __future__ import annotations

from fleetd.errors import FleetdError


class SourceError(FleetdError):
    """The git source failed; the message names the url and ref and what to do."""

    def __init__(self, url: str, ref: str, detail: str) -> None:
        super().__init__(f"git source {url} ({ref}): {detail}")
        self.url = url
        self.ref = ref
        self.detail = detail


class FetchError(SourceError):
    """The remote could not be read (unreachable, timed out) or the snapshot not written; retry."""


class AuthError(SourceError):
    """Credentials were refused, or cannot be used (unreadable key, wrong passphrase, App key refused)."""


class TrustError(AuthError):
    """The server is not trusted: unknown or changed host key, untrusted certificate, foreign redirect."""


class RefNotFound(SourceError):
    """The branch, tag or commit does not exist, or no tag matches the semver range."""
