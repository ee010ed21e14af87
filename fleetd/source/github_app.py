"""GitHub App installation tokens: sign a JWT with the App's key, exchange it, cache the token.

aiohttp's client enters the git source only here. An App authenticates as
itself with a JSON web token (RS256, signed with its private key, ``iss`` =
the App id, ``iat`` a minute in the past for clock drift, ``exp`` nine
minutes ahead, under GitHub's ten) and exchanges it with::

    POST {api_url}/app/installations/{installation_id}/access_tokens

for an installation token (about an hour), which the HTTPS fetch then sends
as the password of user ``x-access-token``. `AppTokens` caches the token
until `REFRESH_MARGIN` before its expiry, measured on the monotonic clock
(a wall-clock jump neither keeps an expired token nor throws a good one
away), and forgets it when the git server refuses it (`invalidate`).

The private key is read for every new JWT, so a rotated key needs no
restart. Answers become: 401 (GitHub does not accept the JWT: wrong App id
or a key that is not, or no longer, one of the App's) and 404 (no such
installation) → `CredentialError` naming the setting to fix; an untrusted
TLS certificate → `CredentialError(trust=True)`; no answer, 5xx, 429 →
`CredentialUnavailable` (retried). The token and the JWT never appear in a
message or a repr. `ca_file`, when set, is trusted in addition to the
system CAs, as for the git server.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from fleetd.inventory.model import GitHubApp
from fleetd.source.credentials import CredentialError, CredentialUnavailable, Password, read_secret

TOKEN_USER = "x-access-token"  # noqa: S105 - a user name GitHub documents, not a secret
"""The user name GitHub expects with an installation token."""
REFRESH_MARGIN = 300.0
"""Seconds before its expiry that a cached installation token is replaced."""
JWT_LIFETIME = 540
"""Seconds a JWT is valid (GitHub accepts at most 600)."""
CLOCK_DRIFT = 60
"""Seconds ``iat`` is set in the past, for a hub clock slightly ahead of GitHub's."""
MAX_ANSWER = 64 * 1024
"""Largest token-endpoint answer read (bytes)."""


class AppTokens:
    """Installation tokens of one GitHub App installation, cached until shortly before they expire."""

    def __init__(self, app: GitHubApp, *, ca_file: Path | None = None, timeout: float = 30.0) -> None:
        self.app = app
        self._ca_file = ca_file
        self._timeout = timeout
        self._cached: tuple[Password, float] | None = None

    def __repr__(self) -> str:
        return f"<AppTokens app {self.app.app_id} installation {self.app.installation_id}>"

    @property
    def endpoint(self) -> str:
        return f"{self.app.api_url}/app/installations/{self.app.installation_id}/access_tokens"

    def invalidate(self) -> None:
        """Forget the cached token (the git server refused it)."""
        self._cached = None

    async def token(self) -> Password:
        """A valid installation token: the cached one, or a new one from the API."""
        if self._cached is not None and time.monotonic() < self._cached[1]:
            return self._cached[0]
        self._cached = None
        token, lifetime = await self._exchange(self.jwt(time.time()))
        password = Password(
            TOKEN_USER,
            token,
            origin=f"an installation token of GitHub App {self.app.app_id} "
            f"(installation {self.app.installation_id})",
        )
        self._cached = (password, time.monotonic() + max(0.0, lifetime - REFRESH_MARGIN))
        return password

    def jwt(self, now: float) -> str:
        """The App's JSON web token at wall-clock time `now`, signed RS256 with its private key."""
        key = self._private_key()
        header = {"alg": "RS256", "typ": "JWT"}
        claims = {"iat": int(now) - CLOCK_DRIFT, "exp": int(now) + JWT_LIFETIME, "iss": str(self.app.app_id)}
        signing_input = f"{_b64_json(header)}.{_b64_json(claims)}".encode()
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input.decode()}.{_b64(signature)}"

    def _private_key(self) -> rsa.RSAPrivateKey:
        path = self.app.private_key_file
        text = read_secret(path, "private_key_file")
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError):
            raise CredentialError(
                f"private_key_file {path} is not an unencrypted PEM private key; use the .pem file "
                "generated in the GitHub App's settings (Private keys → Generate a private key)"
            ) from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise CredentialError(
                f"private_key_file {path} is not an RSA key; GitHub Apps sign with RSA keys"
            )
        return key

    async def _exchange(self, jwt: str) -> tuple[str, float]:
        headers = {
            "Authorization": f"Bearer {jwt}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "fleetd",
        }
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout)) as http,
                http.post(self.endpoint, headers=headers, ssl=self._tls(), allow_redirects=False) as answer,
            ):
                body = await answer.content.read(MAX_ANSWER)
                status = answer.status
        except aiohttp.ClientSSLError as error:
            raise CredentialError(
                f"the TLS certificate of the GitHub API at {self.app.api_url} is not trusted "
                f"({_short(error)}); if it is signed by a private CA, set ca_file in [source.auth] "
                "to that CA's PEM bundle",
                trust=True,
            ) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise CredentialUnavailable(
                f"cannot reach the GitHub API at {self.app.api_url} for an installation token "
                f"({_short(error) or 'no answer'}); check github_api_url and the network, fleetd retries"
            ) from None
        return self._read_answer(status, body)

    def _tls(self) -> ssl.SSLContext | bool:
        if self._ca_file is None:
            return True
        context = ssl.create_default_context()
        try:
            context.load_verify_locations(cafile=str(self._ca_file))
        except (OSError, ssl.SSLError) as error:
            raise CredentialError(
                f"cannot use ca_file {self._ca_file}: {_short(error)}; it must be PEM"
            ) from None
        return context

    def _read_answer(self, status: int, body: bytes) -> tuple[str, float]:
        data = _json(body)
        said = _short(data.get("message", "")) if data else ""
        app, installation = self.app.app_id, self.app.installation_id
        if status == 201 and isinstance(data.get("token"), str) and data["token"]:
            return data["token"], _lifetime(data.get("expires_at"))
        if status == 401:
            raise CredentialError(
                f"GitHub refused the JSON web token of App {app} (401 {said}); check github_app_id and that "
                f"private_key_file {self.app.private_key_file} is a current key of that App (a key deleted "
                "in the App's settings stops working: generate a new one) and that the hub's clock is right"
            )
        if status == 404:
            raise CredentialError(
                f"GitHub App {app} has no installation {installation} (404 {said}); check installation_id "
                "(the number at the end of the installation's settings URL) and that the App is installed"
            )
        if status == 403:
            raise CredentialError(
                f"GitHub refused an installation token for installation {installation} (403 {said}); the "
                "installation may be suspended, or the App lacks the Contents (read) permission"
            )
        if status in (429,) or status >= 500:
            raise CredentialUnavailable(f"the GitHub API answered {status} {said}; fleetd retries")
        raise CredentialError(f"unexpected answer {status} {said} from {self.endpoint}; check github_api_url")


def _lifetime(expires_at: object) -> float:
    """Seconds until `expires_at` (ISO 8601); an hour when GitHub did not say."""
    if not isinstance(expires_at, str):
        return 3600.0
    try:
        return datetime.fromisoformat(expires_at).timestamp() - time.time()
    except ValueError:
        return 3600.0


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64_json(value: dict[str, Any]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def _short(value: object) -> str:
    text = str(value)
    return "".join(c if c.isprintable() else "?" for c in text[:200])
