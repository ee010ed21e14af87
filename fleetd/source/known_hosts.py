"""SSH host trust: which keys of ``known_hosts_file`` the server may present.

libgit2 does not hand the server's host key to Python (its certificate
callback receives None), so the check is split in two:

1. Here, fleetd reads the operator's known_hosts file itself, with OpenSSH's
   rules: plain and wildcard patterns, negations, hashed ``|1|salt|hash``
   entries, ``[host]:port`` for other ports than 22. ``@revoked`` keys are
   never trusted. A host without a usable entry is refused before any
   connection is made (`UntrustedHost`, with the ``ssh-keyscan`` line that
   fixes it after the key has been verified).
2. The matching keys are written, unhashed, into a private known_hosts that
   libgit2/libssh2 compares with the key the server actually presents;
   libgit2 also asks the server only for key types listed there. A different
   key is a changed host key (`changed_host_key` says what to do).

``@cert-authority`` lines (host certificates) are refused with a clear
message: libssh2 cannot verify host certificates, and trusting a CA's plain
key as if it were the host's key would be wrong. Add the host's own key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

REVOKED = "@revoked"
CERT_AUTHORITY = "@cert-authority"


class UntrustedHost(Exception):
    """The host cannot be trusted with this known_hosts file; the message says how to fix it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KnownHost:
    """One line of an OpenSSH known_hosts file."""

    hosts: str
    """The host field as written: patterns, or a hashed ``|1|salt|hash`` entry."""
    key_type: str
    """e.g. ssh-ed25519."""
    key: str
    """Base64 public key."""
    marker: str | None = None
    """"@cert-authority" or "@revoked"; None for a plain host key."""

    def matches(self, host: str, port: int = 22) -> bool:
        """Whether this line names `host` on `port` (OpenSSH rules: ``[host]:port`` off port 22)."""
        name = host_name(host, port).lower()
        if self.hosts.startswith("|1|"):
            return _hashed_host_matches(self.hosts, name)
        patterns = self.hosts.lower().split(",")
        if any(p.startswith("!") and _wildcard_matches(p[1:], name) for p in patterns):
            return False
        return any(not p.startswith("!") and _wildcard_matches(p, name) for p in patterns)


def host_name(host: str, port: int) -> str:
    """How known_hosts names `host` on `port`: ``host`` on 22, ``[host]:port`` elsewhere."""
    return host if port == 22 else f"[{host}]:{port}"


def parse_known_hosts(text: str) -> list[KnownHost]:
    """The usable lines of a known_hosts file; comments, blanks and malformed lines are skipped."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        marker = fields.pop(0) if fields and fields[0].startswith("@") else None
        if len(fields) >= 3 and not fields[0].startswith("#"):
            entries.append(KnownHost(hosts=fields[0], key_type=fields[1], key=fields[2], marker=marker))
    return entries


def keys_for_host(entries: Iterable[KnownHost], host: str, port: int = 22) -> list[KnownHost]:
    """The plain (unmarked), unrevoked entries that name `host` on `port`."""
    matching = [e for e in entries if e.matches(host, port)]
    revoked = {e.key for e in matching if e.marker == REVOKED}
    return [e for e in matching if e.marker is None and e.key not in revoked]


def trusted_keys(known_hosts_file: Path, host: str, port: int) -> str:
    """The known_hosts text for libssh2: the keys of `host` on `port`; raises `UntrustedHost`."""
    try:
        text = known_hosts_file.read_text(errors="replace")
    except OSError as error:
        raise UntrustedHost(
            f"cannot read known_hosts_file {known_hosts_file}: {error.strerror}; check the path and "
            "that fleetd's user may read it"
        ) from None
    entries = parse_known_hosts(text)
    keys = keys_for_host(entries, host, port)
    if keys:
        name = host_name(host, port)
        return "".join(f"{name} {k.key_type} {k.key}\n" for k in keys)
    matching = [e for e in entries if e.matches(host, port)]
    if any(e.marker == CERT_AUTHORITY for e in matching):
        raise UntrustedHost(
            f"{known_hosts_file} trusts {host_name(host, port)} only through @cert-authority (host "
            "certificates), which libssh2, fleetd's SSH library, cannot verify; add the host's own key "
            f"after checking its fingerprint: {_keyscan(host, port, known_hosts_file)}"
        )
    if matching:
        raise UntrustedHost(
            f"every key of {host_name(host, port)} in {known_hosts_file} is marked @revoked; add the "
            f"host's new key after checking its fingerprint: {_keyscan(host, port, known_hosts_file)}"
        )
    raise UntrustedHost(
        f"host {host} port {port} has no entry in {known_hosts_file}; verify the server's key, then add "
        f"it: {_keyscan(host, port, known_hosts_file)}"
    )


def changed_host_key(host: str, port: int, known_hosts_file: Path | None) -> str:
    """What to say when the server presents a key that known_hosts does not list for it."""
    where = known_hosts_file or "known_hosts_file"
    return (
        f"the SSH host key of {host_name(host, port)} does not match {where}: the server's key changed "
        "or this is not that server; do not trust it blindly. If the change is expected, verify the new "
        f"key's fingerprint with the server's admin, then replace the entry: ssh-keygen -R "
        f"'{host_name(host, port)}' -f {where} && {_keyscan(host, port, where)}"
    )


def _keyscan(host: str, port: int, known_hosts: Path | str) -> str:
    option = f" -p {port}" if port != 22 else ""
    return f"ssh-keyscan{option} {host} >> {known_hosts}"


def _hashed_host_matches(field: str, name: str) -> bool:
    parts = field.split("|")
    if len(parts) != 4:
        return False
    try:
        salt, digest = base64.b64decode(parts[2]), base64.b64decode(parts[3])
    except ValueError:
        return False
    return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)


def _wildcard_matches(pattern: str, name: str) -> bool:
    # fnmatch would read "[host]:port" as a character class; known_hosts has only * and ?.
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name) is not None
