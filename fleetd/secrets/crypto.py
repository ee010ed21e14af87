"""SOPS value cryptography: AES-256-GCM values, the MAC, Go's byte forms.

Every encrypted leaf of a SOPS file is one string::

    ENC[AES256_GCM,data:<b64 ciphertext>,iv:<b64 32-byte nonce>,tag:<b64 16-byte tag>,type:<type>]

sealed with the file's 32-byte data key. The additional data is the leaf's
key path joined with ``:`` plus a trailing ``:`` (``stringData:password:``);
list items add nothing to the path. Moving a value to another key therefore
fails authentication, which is how `TamperedValue` can name the key.

``type`` says how to read the plaintext back: ``str``, ``int``, ``float``,
``bool`` (Go writes ``True``/``False``), ``bytes``, ``time`` (RFC 3339) or
``comment`` (YAML and dotenv comments, which fleetd drops).

The MAC is SHA-512 over the plaintext bytes of every leaf in document order
(only the encrypted leaves, after a fixed 32-byte prefix, when
``mac_only_encrypted`` is set), as uppercase hex. It is stored encrypted like
a value, with the RFC 3339 ``lastmodified`` as additional data, so neither
can be edited without the data key. The bytes of a leaf are Go's
``sops.ToBytes``: strings as UTF-8, ints in decimal, floats in Go's shortest
``'f'`` form, booleans as ``True``/``False``, times as RFC 3339 with
nanoseconds. `go_float` and `go_time` reproduce those forms, because an
unencrypted ``1.0`` must hash as Go's ``1``, not Python's ``1.0``.

This module also roots the package's exceptions (`SopsError`), so that every
other module can raise them without import cycles.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import math
import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fleetd.errors import FleetdError

#: Hashed first when only encrypted values are MACed (sops.MACOnlyEncryptedInitialization).
MAC_ONLY_ENCRYPTED_PREFIX = bytes.fromhex("8a3fd2ad54ce66527b1034f3d147be0b0b975b3bf44f72c6fdadec8176f27d69")

#: A leaf's key path: mapping keys (str) and list indices (int, for messages only).
KeyPath = tuple[str | int, ...]

_ENC = re.compile(r"^ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]")
_GO_BOOLS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}
# The timestamp forms yaml.v3 resolves: date only; date, T and time with a zone; date, space and
# time without one. Fields may have one digit; fractions up to nanoseconds.
_GO_TIME = re.compile(
    r"(?P<date>\d{4}-\d{1,2}-\d{1,2})"
    r"(?:(?:[Tt](?P<time>\d{1,2}:\d{1,2}:\d{1,2})(?:\.(?P<frac>\d{1,9}))?(?P<zone>[Zz]|[+-]\d{2}:\d{2}))"
    r"|(?: (?P<ltime>\d{1,2}:\d{1,2}:\d{1,2})(?:\.(?P<lfrac>\d{1,9}))?))?"
)


class SopsError(FleetdError):
    """A SOPS file could not be decrypted; the message names the file and what to do."""

    def __init__(self, file: str, message: str) -> None:
        self.file = file
        super().__init__(f"{file}: {message}")


class InvalidSopsFile(SopsError):
    """The file is not a well-formed SOPS file (syntax, metadata, or an ENC value)."""


class TamperedValue(SopsError):
    """An encrypted value failed authentication: it was edited or moved to another key."""

    def __init__(self, file: str, key: str) -> None:
        self.key = key
        super().__init__(
            file,
            f"the encrypted value at {key} failed authentication (AES-GCM tag mismatch): it was "
            "edited or moved from another key after encryption; restore the file from git history "
            "or set the value again with `sops edit`",
        )


class MacMismatch(SopsError):
    """The file's MAC does not match its content: something was changed without sops."""


class NeedsBinary(Exception):
    """Native decryption cannot handle this file; the `sops` binary might. Never escapes the package."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Encrypted(NamedTuple):
    """One parsed ``ENC[...]`` value."""

    data: bytes
    iv: bytes
    tag: bytes
    type: str


def is_encrypted(value: object) -> bool:
    """Whether `value` is an ``ENC[AES256_GCM,...]`` string."""
    return isinstance(value, str) and value.startswith("ENC[AES256_GCM,")


def display_path(path: KeyPath) -> str:
    """`path` for people: ``stringData.list[2].nested`` (empty path: ``the document``)."""
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)
    return text.lstrip(".") or "the document"


def additional_data(path: KeyPath) -> bytes:
    """sops' additional data for a leaf: mapping keys joined with ':' plus a trailing ':'."""
    return ("".join(f"{part}:" for part in path if isinstance(part, str))).encode()


class ValueCipher:
    """Opens the ``ENC[...]`` values of one file with its data key."""

    __slots__ = ("_aead", "_file")

    def __init__(self, data_key: bytes, file: str) -> None:
        if len(data_key) != 32:
            raise InvalidSopsFile(file, "the data key is not 32 bytes; the key metadata is corrupt")
        self._aead = AESGCM(data_key)
        self._file = file

    def __repr__(self) -> str:
        return f"ValueCipher(file={self._file!r})"

    def open(self, text: str, path: KeyPath) -> tuple[bytes, str]:
        """The plaintext bytes and type of the value `text` stored at `path`."""
        value = self._parse(text, path)
        try:
            plain = self._aead.decrypt(value.iv, value.data + value.tag, additional_data(path))
        except InvalidTag:
            raise TamperedValue(self._file, display_path(path)) from None
        return plain, value.type

    def open_mac(self, text: str, lastmodified: str) -> str:
        """The stored MAC (hex), authenticated against `lastmodified`."""
        value = self._parse(text, ("sops", "mac"))
        try:
            plain = self._aead.decrypt(value.iv, value.data + value.tag, lastmodified.encode())
        except InvalidTag:
            raise MacMismatch(
                self._file,
                "sops.mac failed authentication: sops.mac or sops.lastmodified was edited by hand; "
                "restore the file from git history or re-encrypt it with sops",
            ) from None
        return plain.decode("ascii", errors="replace")

    def _parse(self, text: str, path: Sequence[str | int]) -> Encrypted:
        match = _ENC.match(text)
        if match is None:
            raise InvalidSopsFile(
                self._file,
                f"the value at {display_path(tuple(path))} should be encrypted but is not an ENC[...] "
                "value; it was edited by hand: set it with `sops edit` or re-encrypt the file",
            )
        try:
            data, iv, tag = (base64.b64decode(match[n], validate=True) for n in (1, 2, 3))
        except binascii.Error:
            raise InvalidSopsFile(
                self._file, f"the ENC[...] value at {display_path(tuple(path))} is not valid base64"
            ) from None
        return Encrypted(data, iv, tag, match[4])


class MacHasher:
    """Accumulates the MAC of one file; `matches` compares it in constant time."""

    __slots__ = ("_hash",)

    def __init__(self, *, only_encrypted: bool) -> None:
        self._hash = hashlib.sha512(MAC_ONLY_ENCRYPTED_PREFIX if only_encrypted else b"")

    def update(self, data: bytes) -> None:
        self._hash.update(data)

    def matches(self, stored: str) -> bool:
        return hmac.compare_digest(self._hash.hexdigest().upper(), stored)


def typed(plain: bytes, kind: str, path: KeyPath, file: str) -> object:
    """The Python value of a decrypted leaf, read according to its ENC ``type``."""
    reader = _TYPED.get(kind)
    if reader is None:
        raise InvalidSopsFile(file, f"the value at {display_path(path)} has unknown type {kind!r}")
    try:
        return reader(plain)
    except ValueError:
        raise InvalidSopsFile(
            file, f"the value at {display_path(path)} does not decode as its declared type {kind}"
        ) from None


def _go_bool(plain: bytes) -> bool:
    """Go's strconv.ParseBool, which accepts more than the ``True``/``False`` sops writes."""
    try:
        return _GO_BOOLS[plain.decode()]
    except KeyError:
        raise ValueError("not a Go boolean") from None


def _time(plain: bytes) -> dt.datetime:
    parsed = parse_go_time(plain.decode())
    if parsed is None:
        raise ValueError("not an RFC 3339 time")
    return parsed[0]


_TYPED: dict[str, Callable[[bytes], object]] = {
    # Go strings are bytes: a binary file's data need not be UTF-8, and must survive the round trip.
    "str": lambda plain: plain.decode("utf-8", "surrogateescape"),
    "int": lambda plain: int(plain),
    "float": lambda plain: float(plain),
    "bool": _go_bool,
    "bytes": bytes,
    "time": _time,
    "comment": lambda plain: plain.decode("utf-8", "surrogateescape"),
}


def go_float(value: float) -> str:
    """Go's ``strconv.FormatFloat(value, 'f', -1, 64)``: shortest digits, never an exponent."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    # repr() is the shortest round-trip form, like Go's -1 precision; normalize() drops "1.0"'s ".0".
    return format(Decimal(repr(value)).normalize(), "f")


def go_int(value: int) -> str:
    """An int as sops hashes it: Go ints are 64-bit, so larger JSON numbers were floats."""
    return str(value) if -(2**63) <= value < 2**63 else go_float(float(value))


def parse_go_time(text: str) -> tuple[dt.datetime, str] | None:
    """A timestamp as (datetime, Go's MarshalText form), or None if `text` is not one.

    Accepts what yaml.v3 resolves as a timestamp and what Go's MarshalText writes. Go keeps
    nanoseconds, so the text form is rebuilt from the digits, not from the microsecond datetime.
    """
    match = _GO_TIME.fullmatch(text)
    if match is None:
        return None
    clock = match["time"] or match["ltime"] or "0:0:0"
    fraction = match["frac"] or match["lfrac"] or ""
    zone = match["zone"] or "Z"
    zone = "Z" if zone in ("Z", "z", "+00:00", "-00:00") else zone
    try:
        year, month, day = (int(n) for n in match["date"].split("-"))
        hour, minute, second = (int(n) for n in clock.split(":"))
        tz = dt.UTC if zone == "Z" else dt.datetime.strptime(zone, "%z").tzinfo
        micro = int(fraction.ljust(6, "0")[:6])
        value = dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    except ValueError:
        return None
    digits = fraction.rstrip("0")
    clock_text = f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    fraction_text = f".{digits}" if digits else ""
    return value, f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{clock_text}{fraction_text}{zone}"
