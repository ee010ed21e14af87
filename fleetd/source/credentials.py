"""Credentials for one fetch: what fleetd presents to the git server, read fresh from files.

A fetch uses at most one of:

* `SshKey`: ``ssh_key_file`` (OpenSSH or PEM format; ed25519, ECDSA, RSA)
  with the passphrase from ``passphrase_file`` when the key has one. A key
  that needs a passphrase fleetd was not given is refused here, before any
  connection; a wrong passphrase is reported by the SSH library when it
  derives the public key (fleetd never reads a ``.pub`` file, so that check
  always happens first).
* `Password`: HTTP basic auth, with the token from ``token_file`` or an
  installation token of a GitHub App (`fleetd.source.github_app`).

Files are read on every attempt, so rotating a token or key needs no
restart. Secrets live only in these objects, whose reprs hide them, and in
the libgit2 call that sends them; never in a url, a message, a log line, a
status document or the mirror's git config.

`CredentialError` means "fix the configuration or the secret" (it becomes an
`AuthError`, or a `TrustError` when `trust` is set); `CredentialUnavailable`
means "the service that issues credentials could not be reached" (a
temporary `FetchError`).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from pathlib import Path

from fleetd.inventory.model import GitAuth

MAX_SECRET_FILE = 64 * 1024
"""Largest token, passphrase or key file read (bytes); anything bigger is not one."""


class CredentialError(Exception):
    """A credential is missing, unreadable or refused; the message names the file and the fix."""

    def __init__(self, message: str, *, trust: bool = False) -> None:
        super().__init__(message)
        self.trust = trust
        """The problem is trusting the server (TLS certificate), not our own credentials."""


class CredentialUnavailable(Exception):
    """The service issuing credentials (the GitHub API) cannot be reached now; retry later."""


@dataclass(frozen=True, slots=True)
class SshKey:
    """A private key for SSH, with its passphrase ("" when it has none)."""

    user: str
    private_key: Path
    passphrase: str = field(default="", repr=False)
    passphrase_file: Path | None = None

    def describe(self) -> str:
        return f"the SSH key in {self.private_key} (user {self.user})"


@dataclass(frozen=True, slots=True)
class Password:
    """HTTP basic auth; `origin` says where the password came from, for messages."""

    user: str
    password: str = field(repr=False)
    origin: str = ""

    def describe(self) -> str:
        return f"{self.origin} (user {self.user})"


Credential = SshKey | Password


def read_static(auth: GitAuth | None) -> Credential | None:
    """The SSH key or token that `auth` names, read now; None for anonymous access or a GitHub App."""
    if auth is None:
        return None
    if auth.ssh_key_file is not None:
        return ssh_key(auth.username, auth.ssh_key_file, auth.passphrase_file)
    if auth.token_file is not None:
        token = read_secret(auth.token_file, "token_file")
        return Password(auth.username, token, origin=f"the token in token_file {auth.token_file}")
    return None


def ssh_key(user: str, private_key: Path, passphrase_file: Path | None) -> SshKey:
    """Check that `private_key` is a private key and that a passphrase is there if it needs one."""
    text = read_secret(private_key, "ssh_key_file")
    encrypted = _encrypted(private_key, text)
    if encrypted and passphrase_file is None:
        raise CredentialError(
            f"ssh_key_file {private_key} is protected by a passphrase; write the passphrase into a file "
            "readable only by fleetd's user and set passphrase_file, or use a deploy key without one"
        )
    passphrase = read_secret(passphrase_file, "passphrase_file", strip=False) if passphrase_file else ""
    return SshKey(user, private_key, passphrase.rstrip("\r\n"), passphrase_file if encrypted else None)


def read_secret(path: Path, key: str, *, strip: bool = True) -> str:
    """The text of a secret file named by setting `key`; messages name the file, never its content."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_SECRET_FILE + 1)
    except OSError as error:
        raise CredentialError(
            f"cannot read {key} {path}: {error.strerror}; check the path and that fleetd's user may read it"
        ) from None
    if len(data) > MAX_SECRET_FILE:
        raise CredentialError(f"{key} {path} is over {MAX_SECRET_FILE} bytes; it is not a secret file")
    text = data.decode("utf-8", errors="replace")
    value = text.strip() if strip else text
    if not value.strip():
        raise CredentialError(f"{key} {path} is empty; write the secret into it")
    return value


_OPENSSH = "-----BEGIN OPENSSH PRIVATE KEY-----"
_PEM_PRIVATE = (
    "-----BEGIN RSA PRIVATE KEY-----",
    "-----BEGIN EC PRIVATE KEY-----",
    "-----BEGIN DSA PRIVATE KEY-----",
)
_PKCS8 = "-----BEGIN PRIVATE KEY-----"
_PKCS8_ENCRYPTED = "-----BEGIN ENCRYPTED PRIVATE KEY-----"


def _encrypted(path: Path, text: str) -> bool:
    """Whether the private key in `text` needs a passphrase; `CredentialError` if it is no private key."""
    head = text.lstrip()
    if head.startswith(_OPENSSH):
        return _openssh_cipher(path, head) != "none"
    if head.startswith(_PEM_PRIVATE):
        return "ENCRYPTED" in head.split("\n\n", 1)[0]
    if head.startswith(_PKCS8_ENCRYPTED):
        return True
    if head.startswith(_PKCS8):
        return False
    looks_public = head.startswith(("ssh-", "ecdsa-", "sk-")) or "PUBLIC KEY" in head[:60]
    hint = (
        "it looks like a public key: name the private one (without .pub)"
        if looks_public
        else ("expected an OpenSSH or PEM private key (ssh-keygen -t ed25519 -f deploy_key)")
    )
    raise CredentialError(f"ssh_key_file {path} is not a private key; {hint}")


def _openssh_cipher(path: Path, text: str) -> str:
    body = "".join(line.strip() for line in text.splitlines()[1:] if line and not line.startswith("-----"))
    try:
        blob = base64.b64decode(body, validate=False)
    except (binascii.Error, ValueError):
        blob = b""
    magic = b"openssh-key-v1\0"
    if not blob.startswith(magic) or len(blob) < len(magic) + 4:
        raise CredentialError(f"ssh_key_file {path} is damaged: not a readable OpenSSH private key")
    size = int.from_bytes(blob[len(magic) : len(magic) + 4], "big")
    return blob[len(magic) + 4 : len(magic) + 4 + size].decode("ascii", errors="replace")
