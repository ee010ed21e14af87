"""Decrypting SOPS files natively, with the sops binary as a fallback.

Secrets live in git encrypted with SOPS. Running ``sops --decrypt`` for each
of hundreds of files on every reconcile costs a process (and a Go runtime)
per file, so fleetd reads the format itself: the data key from an age or PGP
master key (`fleetd.secrets.keys`), every value with AES-256-GCM and the MAC
over the whole document (`fleetd.secrets.crypto`), in YAML, JSON, dotenv and
binary files under every encryption rule sops has (`fleetd.secrets.tree`).
Files only a cloud KMS, Vault or an age plugin can open go to the real
binary (`fleetd.secrets.binary`), which is also how any file can be forced
through sops for comparison.

Plaintext exists only in memory, in the returned value. No message carries a
value: errors name the file, the key path and what to do. The exceptions::

    FleetdError
     └── SopsError               any SOPS file that could not be decrypted
          ├── InvalidSopsFile    not a (complete) SOPS file: syntax, metadata, an ENC value
          ├── TamperedValue      a value fails AES-GCM authentication (names its key path)
          ├── MacMismatch        the MAC does not match: changed without sops
          ├── KeyFileError       an age key file is unreadable or malformed
          ├── NoKeysConfigured   no age identity and no PGP secret key at all
          ├── WrongKey           keys are configured, none opens the file
          ├── UnsupportedKeyType needs the sops binary, which is missing
          └── SopsBinaryFailed   the sops binary failed or timed out

Decryption is synchronous and CPU-bound (about a millisecond per file); the
daemon runs it in a worker thread (`asyncio.to_thread`). A `KeyRing` is
loaded once per inventory and shared.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any, NamedTuple

from fleetd.secrets import binary, tree
from fleetd.secrets.binary import SopsBinaryFailed, UnsupportedKeyType
from fleetd.secrets.crypto import (
    InvalidSopsFile,
    MacHasher,
    MacMismatch,
    NeedsBinary,
    SopsError,
    TamperedValue,
    ValueCipher,
)
from fleetd.secrets.keys import (
    KeyFileError,
    KeyFilePermissionWarning,
    KeyRing,
    NoKeysConfigured,
    WrongKey,
    data_key,
)
from fleetd.secrets.tree import FORMATS, Format
from fleetd.util import yamldoc

__all__ = [
    "FORMATS",
    "Format",
    "InvalidSopsFile",
    "KeyFileError",
    "KeyFilePermissionWarning",
    "KeyRing",
    "MacMismatch",
    "NoKeysConfigured",
    "SopsBinaryFailed",
    "SopsError",
    "TamperedValue",
    "UnsupportedKeyType",
    "WrongKey",
    "decrypt",
    "decrypt_bytes",
    "decrypt_file",
    "format_for",
    "is_sops_encrypted",
]

log = logging.getLogger(__name__)

_SUFFIXES: dict[str, Format] = {".yaml": "yaml", ".yml": "yaml", ".json": "json", ".env": "dotenv"}
_DOTENV_MAC = re.compile(rb"^sops_mac=", re.MULTILINE)
_DOTENV_LASTMODIFIED = re.compile(rb"^sops_lastmodified=", re.MULTILINE)


class _FromBinary(NamedTuple):
    plaintext: bytes


def format_for(path: str | PurePath) -> Format:
    """The SOPS format of `path` by its extension, as sops guesses it: anything else is binary."""
    name = str(path)
    if name.endswith(".ini"):
        raise InvalidSopsFile(
            name, "INI SOPS files are not supported; store the secret as YAML, JSON or .env"
        )
    return next((fmt for suffix, fmt in _SUFFIXES.items() if name.endswith(suffix)), "binary")


def decrypt(
    data: bytes, fmt: str, keys: KeyRing, *, source: str | PurePath = "<memory>", use_binary: bool = False
) -> Any:
    """The plaintext of SOPS file `data` as Python data, without the ``sops`` metadata.

    YAML and JSON give the mapping (a list of mappings for a multi-document YAML
    stream), with each value's original type; dotenv gives ``dict[str, str]``;
    binary gives ``bytes``. `source` names the file in errors; `use_binary` forces
    the sops binary.
    """
    checked = _format(fmt)
    result = _decrypt(data, checked, keys, str(source), use_binary)
    if isinstance(result, _FromBinary):
        return _shape(checked, tree.parse_plain(checked, result.plaintext, str(source)), str(source))
    return result


def decrypt_bytes(
    data: bytes, fmt: str, keys: KeyRing, *, source: str | PurePath = "<memory>", use_binary: bool = False
) -> bytes:
    """The plaintext of SOPS file `data` serialised again as plain `fmt`, for the renderer."""
    checked = _format(fmt)
    result = _decrypt(data, checked, keys, str(source), use_binary)
    return result.plaintext if isinstance(result, _FromBinary) else _dump(checked, result)


def decrypt_file(path: Path, keys: KeyRing, *, fmt: str | None = None, use_binary: bool = False) -> Any:
    """`decrypt` for the file at `path`; the format comes from its extension unless `fmt` is given."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InvalidSopsFile(str(path), f"cannot read the file: {e.strerror}") from None
    return decrypt(data, fmt or format_for(path), keys, source=path, use_binary=use_binary)


def is_sops_encrypted(doc_or_bytes: object) -> bool:
    """Whether a parsed document or raw file carries SOPS metadata (``mac`` and ``lastmodified``)."""
    if isinstance(doc_or_bytes, str):
        doc_or_bytes = doc_or_bytes.encode()
    if isinstance(doc_or_bytes, bytes | bytearray):
        return _bytes_are_encrypted(bytes(doc_or_bytes))
    if isinstance(doc_or_bytes, Mapping):
        metadata = doc_or_bytes.get("sops")
        flat = "sops_mac" in doc_or_bytes and "sops_lastmodified" in doc_or_bytes  # parsed dotenv
        return flat or (isinstance(metadata, Mapping) and "mac" in metadata and "lastmodified" in metadata)
    return False


def _bytes_are_encrypted(data: bytes) -> bool:
    if b"mac" not in data or b"lastmodified" not in data:
        return False  # the cheap answer for almost every plain manifest
    if _DOTENV_MAC.search(data) and _DOTENV_LASTMODIFIED.search(data):
        return True
    try:
        if data.lstrip().startswith(b"{"):
            return is_sops_encrypted(json.loads(data))
        return is_sops_encrypted(yamldoc.first_plain(data))
    except ValueError:  # invalid JSON, or a yamldoc.DocumentError
        return False


def _format(fmt: str) -> Format:
    for known in FORMATS:
        if fmt == known:
            return known
    raise ValueError(f"unknown SOPS format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _decrypt(data: bytes, fmt: Format, keys: KeyRing, file: str, use_binary: bool) -> Any:
    if use_binary:
        return _FromBinary(_run_binary(data, fmt, keys, file, "the caller asked for the sops binary"))
    try:
        return _native(data, fmt, keys, file)
    except NeedsBinary as why:
        return _FromBinary(_run_binary(data, fmt, keys, file, why.reason))


def _native(data: bytes, fmt: Format, keys: KeyRing, file: str) -> Any:
    document = tree.load(data, fmt, file)
    metadata = document.metadata
    cipher = ValueCipher(data_key(metadata.key_groups, metadata.shamir_threshold, keys, file), file)
    mac = MacHasher(only_encrypted=metadata.rules.mac_only_encrypted)
    branches = document.walk(tree.LeafDecryptor(cipher, metadata.rules, mac, file))
    if not mac.matches(cipher.open_mac(metadata.mac, metadata.lastmodified)):
        raise MacMismatch(
            file,
            "the MAC does not match the content: values, keys or their order were changed without "
            "sops; restore the file from git history, or re-encrypt it with sops",
        )
    return _shape(fmt, branches, file)


def _run_binary(data: bytes, fmt: Format, keys: KeyRing, file: str, reason: str) -> bytes:
    executable = binary.find(keys.sops_binary)
    if executable is None:
        raise UnsupportedKeyType(
            file,
            f"this file needs the sops binary ({reason}), but {keys.sops_binary!r} was not "
            "found; install sops, or set decryption.sops_binary to its path",
        )
    log.info("%s: decrypting with %s (%s)", file, executable, reason)
    return binary.decrypt(
        data,
        fmt,
        executable=executable,
        file=file,
        age_keys=keys.secret_key_text(),
        gnupg_home=keys.gnupg_home,
        timeout=keys.binary_timeout,
    )


# --- results ------------------------------------------------------------------------------------


def _shape(fmt: Format, branches: list[Any], file: str) -> Any:
    """The decrypted branches as the public API returns them (see `fleetd.secrets.sops.decrypt`)."""
    if fmt == "yaml":
        return branches[0] if len(branches) == 1 else branches
    if fmt == "dotenv":
        return {key: _env_text(value) for key, value in branches[0].items()}
    if fmt == "binary":
        data = branches[0].get("data")
        if data is None:
            raise InvalidSopsFile(file, 'a binary SOPS file needs a "data" entry; this one has none')
        return data if isinstance(data, bytes) else str(data).encode("utf-8", "surrogateescape")
    return branches[0]


def _env_text(value: object) -> str:
    """A dotenv value as text, as sops writes non-string values (Go's stores.ValToString)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


def _dump(fmt: Format, value: Any) -> bytes:
    """Serialise a decrypted result (from `_shape`) as plain `fmt` for the renderer."""
    if fmt == "binary":
        return bytes(value)
    if fmt == "dotenv":
        return "".join(f"{key}={_escape_newlines(text)}\n" for key, text in value.items()).encode()
    if fmt == "json":
        return (json.dumps(value, indent=4, ensure_ascii=False, default=_json_default) + "\n").encode()
    documents = value if isinstance(value, list) else [value]
    return yamldoc.dump_all(documents).encode()  # multi-line strings as literal blocks, as sops prints them


def _escape_newlines(text: str) -> str:
    return text.replace("\n", "\\n")


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()  # what Go's json.Marshal does with []byte
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")
