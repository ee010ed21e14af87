"""Syntax checks for the strings an inventory holds.

Each check takes the string and returns what is wrong with it (a message
naming the value and how to fix it) or None when it is fine, so the readers
in `fields` can record problems without exceptions. Kubernetes' own rules are
followed where the value ends up in Kubernetes (names, labels, namespaces);
elsewhere the checks are deliberately loose and only catch obvious mistakes.
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Literal

from fleetd.util.semver import Range, SemverError

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COMMIT = re.compile(r"[0-9a-fA-F]{7,40}")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?")
_SCP_LIKE = re.compile(r"[\w.-]+@[\w.-]+:.+")
_BAD_REF = re.compile(r"[\s~^:?*\[\\]|\.\.|@\{|//")

UrlKind = Literal["http", "ssh", "file", "local"]
Check = Callable[[str], str | None]
"""A syntax check: returns what is wrong with the string, or None when it is fine."""


def dns_label(what: str) -> Check:
    """A check for Kubernetes DNS-1123 labels: lowercase alphanumerics and '-', at most 63."""

    def check(value: str) -> str | None:
        if len(value) <= 63 and _DNS_LABEL.fullmatch(value):
            return None
        return (
            f"{value!r} is not a valid {what} (use at most 63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit)"
        )

    return check


def label_key(value: str) -> str | None:
    """Kubernetes label key: optional DNS-subdomain prefix and '/', then a name of at most 63."""
    prefix, _, name = value.rpartition("/")
    bad_prefix = bool(prefix) and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix))
    if bad_prefix or len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return f"{value!r} is not a valid label key (e.g. 'role' or 'example.com/role')"
    return None


def label_value(value: str) -> str | None:
    """Kubernetes label value: empty, or at most 63 alphanumerics, '-', '_', '.'."""
    if value == "" or (len(value) <= 63 and _LABEL_NAME.fullmatch(value)):
        return None
    return f"{value!r} is not a valid label value (at most 63 letters, digits, '-', '_', '.')"


def variable_name(value: str) -> str | None:
    """Names usable as ${name}: a letter or '_', then letters, digits, '_'."""
    if _VARIABLE.fullmatch(value):
        return None
    return f"{value!r} is not a valid variable name (letters, digits and '_', not starting with a digit)"


def json_pointer(value: str) -> str | None:
    """RFC 6901 pointer: starts with '/', '~' only as '~0' or '~1'."""
    if not value.startswith("/"):
        return f"{value!r} is not a JSON pointer (it must start with '/', e.g. \"/spec/replicas\")"
    if re.search(r"~(?![01])", value):
        return f"{value!r} is not a JSON pointer (write '~' as '~0' and '/' inside a key as '~1')"
    return None


def sync_path(value: str) -> str | None:
    """A directory inside the repository: relative and not escaping it."""
    if value.startswith("/"):
        return f'{value!r} is absolute; give a path relative to the repository root, e.g. "apps/base"'
    if value.strip() == "":
        return 'the path is empty; use "." for the repository root'
    if normalize_path(value).parts[:1] == ("..",):
        return f"{value!r} leaves the repository; remove the '..'"
    return None


def normalize_path(value: str) -> PurePosixPath:
    """The canonical form of a repository path ("./apps//base/" -> "apps/base")."""
    return PurePosixPath(posixpath.normpath(value or "."))


def git_ref_name(what: str) -> Check:
    """A loose check of branch and tag names (git check-ref-format's main rules)."""

    def check(value: str) -> str | None:
        bad = not value or value.startswith(("-", "/", ".")) or value.endswith(("/", ".", ".lock"))
        if bad or _BAD_REF.search(value):
            return f"{value!r} is not a valid git {what} name"
        return None

    return check


def commit_hash(value: str) -> str | None:
    """A commit id: 7 to 40 hexadecimal digits."""
    if _COMMIT.fullmatch(value):
        return None
    return f"{value!r} is not a commit hash (expected 7 to 40 hexadecimal digits)"


def semver_range(value: str) -> str | None:
    """A range `fleetd.util.semver.Range` accepts."""
    try:
        Range.parse(value)
    except SemverError as error:
        return str(error)
    return None


def url_kind(value: str) -> UrlKind | None:
    """Classify a source URL; None when it is not one fleetd can fetch."""
    if value.startswith(("https://", "http://")):
        return "http"
    if value.startswith("ssh://") or _SCP_LIKE.fullmatch(value):
        return "ssh"
    if value.startswith("file://"):
        return "file"
    return None if "://" in value or not value.strip() else "local"


def source_url(value: str) -> str | None:
    """A URL `url_kind` understands."""
    if url_kind(value) is not None:
        return None
    return f"{value!r} is not a supported URL (use https://, ssh://, git@host:path, file:// or a local path)"


def parse_listen(value: str) -> tuple[str, int]:
    """Split "host:port" or "[v6]:port"; raise ValueError with a message otherwise."""
    hint = 'use host:port, e.g. "127.0.0.1:9480" or "[::1]:9480"'
    match = re.fullmatch(r"\[(?P<v6>[^\]]+)\]:(?P<port>\d+)|(?P<host>[^:\[\]]+):(?P<port2>\d+)", value)
    if match is None:
        raise ValueError(f"invalid listen address {value!r} ({hint})")
    host, port = (match["v6"], match["port"]) if match["v6"] else (match["host"], match["port2"])
    if not _valid_host(host, v6=bool(match["v6"])):
        raise ValueError(f"invalid listen address {value!r}: {host!r} is not an IP address or host name")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"invalid listen address {value!r}: port must be 1..65535")
    return host, int(port)


def _valid_host(host: str, *, v6: bool) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return not v6 and len(host) <= 253 and bool(_HOSTNAME.fullmatch(host))
    return address.version == (6 if v6 else 4)


def listen_address(value: str) -> str | None:
    """A check wrapping `parse_listen`."""
    try:
        parse_listen(value)
    except ValueError as error:
        return str(error)
    return None


def nonempty(value: str) -> str | None:
    """Reject the empty string (for paths and names that must say something)."""
    return "must not be empty" if not value.strip() else None


def absolute(path: Path) -> Path:
    """`path` made absolute and lexically normalised ("a/../b" -> "b"), symlinks kept."""
    return Path(os.path.normpath(path.expanduser().absolute()))


def resolve_path(base: Path, text: str) -> Path:
    """`text` with ~ expanded, relative to the directory `base`, absolute and normalised."""
    return absolute(base / Path(text).expanduser())


def display_path(base: Path, text: str) -> Path:
    """`text` relative to `base` as a user would name it: ~ expanded, normalised, not made absolute."""
    return Path(os.path.normpath(base / Path(text).expanduser()))
