"""Recovering a SOPS file's data key: age identities, GnuPG, Shamir key groups.

Each file has a random 32-byte data key, encrypted once per master key in
its metadata. Master keys come in *key groups*: any one key of a group opens
the group. With one group that yields the data key itself. With several,
sops split the key with Shamir's secret sharing over GF(2^8) (the AES field,
one share per group, the share's x coordinate in its last byte) and
``shamir_threshold`` groups (default: all) must be opened and combined.

Natively fleetd opens:

- **age X25519** stanzas with pyrage: every identity of every configured
  key file is tried against the stanza (age matches identities to recipients
  itself), stanzas naming one of our own public keys first. A key file may
  hold several ``AGE-SECRET-KEY-1...`` lines and comments, so rotated keys
  simply sit side by side.
- **PGP** stanzas with python-gnupg against `Decryption.gnupg_home` (loopback
  pinentry: a passphrase-protected key fails at once instead of waiting for a
  pinentry that a daemon cannot answer).

Everything else (AWS/GCP/Huawei KMS, Azure Key Vault, HashiCorp Vault, age
ssh and plugin recipients) is the sops binary's job: when a group can only be
opened by such keys, `data_key` signals `NeedsBinary`.

The `KeyRing` is loaded once from the inventory's `Decryption` and shared by
every decryption. Key material stays inside it: its repr shows public keys
and file names only, and it refuses to be pickled.
"""

from __future__ import annotations

import re
import stat
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import gnupg
import pyrage

from fleetd.inventory.model import DEFAULT_SOPS_BINARY, Decryption
from fleetd.secrets.crypto import InvalidSopsFile, NeedsBinary, SopsError

DEFAULT_BINARY_TIMEOUT = 30.0
_NATIVE_PREFIX = "AGE-SECRET-KEY-1"
_BINARY_ONLY_PREFIXES = ("AGE-PLUGIN-", "AGE-SECRET-KEY-PQ-")
_OTHER_KEY_TYPES = {  # key types only the sops binary opens, and the field that names each key
    "kms": "arn",
    "gcp_kms": "resource_id",
    "azure_kv": "vault_url",
    "hc_vault": "vault_address",
    "hckms": "key_id",
}
_X25519_RECIPIENT = re.compile(r"age1[02-9ac-hj-np-z]{58}")


@dataclass(frozen=True, slots=True)
class AgeStanza:
    """One age master key: the recipient (public key) and the armored age file of the data key."""

    recipient: str
    enc: str

    @property
    def native(self) -> bool:
        """Whether this is an X25519 recipient (not ssh-*, not an age plugin)."""
        return _X25519_RECIPIENT.fullmatch(self.recipient) is not None


@dataclass(frozen=True, slots=True)
class PgpStanza:
    """One PGP master key: its fingerprint and the armored PGP message of the data key."""

    fingerprint: str
    enc: str


@dataclass(frozen=True, slots=True)
class KeyGroup:
    """Master keys of which any one recovers the group's data key (or Shamir share)."""

    age: tuple[AgeStanza, ...] = ()
    pgp: tuple[PgpStanza, ...] = ()
    others: tuple[str, ...] = ()
    """Keys only the sops binary can use, described for messages (``kms arn:aws:...``)."""

    def describe(self) -> list[str]:
        """Every key of the group, for messages: ``age age1...``, ``pgp <fingerprint>``, ``kms <arn>``."""
        return [
            *(f"age {stanza.recipient}" for stanza in self.age),
            *(f"pgp {stanza.fingerprint}" for stanza in self.pgp),
            *self.others,
        ]


class KeyFileError(SopsError):
    """A configured age key file is unreadable or holds something other than identities."""


class NoKeysConfigured(SopsError):
    """No decryption key is configured at all (no age identities, no PGP secret keys)."""


class WrongKey(SopsError):
    """Keys are configured, but none opens the file."""


class KeyFilePermissionWarning(UserWarning):
    """An age key file is readable by its group or by others."""


class KeyRing:
    """The decryption keys of a fleet, loaded once; see the module docstring."""

    __slots__ = (
        "_gpg",
        "_identities",
        "_lock",
        "_secret_lines",
        "binary_timeout",
        "gnupg_home",
        "key_files",
        "recipients",
        "sops_binary",
        "use_gnupg",
    )

    def __init__(
        self,
        *,
        age_identities: Iterable[str] = (),
        key_files: Iterable[Path] = (),
        gnupg_home: Path | None = None,
        use_gnupg: bool = True,
        sops_binary: str = DEFAULT_SOPS_BINARY,
        binary_timeout: float = DEFAULT_BINARY_TIMEOUT,
    ) -> None:
        """Keys from `age_identities` (lines of key files) that were read from `key_files`."""
        identities, lines = _parse_identities(age_identities, "age_identities")
        self._identities: tuple[Any, ...] = identities
        self._secret_lines: tuple[str, ...] = lines
        self.recipients: tuple[str, ...] = tuple(str(identity.to_public()) for identity in identities)
        """Public keys of the native age identities."""
        self.key_files: tuple[Path, ...] = tuple(key_files)
        self.gnupg_home = gnupg_home
        """GnuPG home for PGP keys; None = GnuPG's default."""
        self.use_gnupg = use_gnupg
        self.sops_binary = sops_binary
        self.binary_timeout = binary_timeout
        """Seconds one `sops --decrypt` may take."""
        self._gpg: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_decryption(
        cls, decryption: Decryption, *, binary_timeout: float = DEFAULT_BINARY_TIMEOUT
    ) -> KeyRing:
        """Read every key file of `decryption` (warning about loose permissions)."""
        lines: list[str] = []
        for path in decryption.age_key_files:
            lines.extend(_read_key_file(path))
        home = decryption.gnupg_home
        if home is not None and not home.is_dir():
            warnings.warn(f"{home}: GnuPG home does not exist; PGP keys are disabled", stacklevel=2)
        return cls(
            age_identities=lines,
            key_files=decryption.age_key_files,
            gnupg_home=home,
            use_gnupg=home is None or home.is_dir(),
            sops_binary=decryption.sops_binary,
            binary_timeout=binary_timeout,
        )

    def __repr__(self) -> str:
        files = ", ".join(str(path) for path in self.key_files) or "none"
        return (
            f"KeyRing(age={list(self.recipients)}, key_files=[{files}], "
            f"gnupg_home={self.gnupg_home}, sops_binary={self.sops_binary!r})"
        )

    def __reduce__(self) -> NoReturn:
        raise TypeError("a KeyRing holds secret keys and cannot be pickled")

    def secret_key_text(self) -> bytes:
        """Every identity line, for handing to the sops binary through a pipe. Secret!"""
        return "".join(f"{line}\n" for line in self._secret_lines).encode()

    def open_age(self, stanza: AgeStanza) -> bytes | None:
        """The data key (or share) in `stanza`, or None if no identity opens it."""
        if not self._identities:
            return None
        try:
            return bytes(pyrage.decrypt(stanza.enc.encode(), list(self._identities)))
        except pyrage.DecryptError:
            return None

    def open_pgp(self, stanza: PgpStanza) -> bytes | None:
        """The data key (or share) in `stanza`, or None if GnuPG has no secret key for it."""
        gpg = self._gnupg()
        if gpg is None:
            return None
        result = gpg.decrypt(stanza.enc, extra_args=["--pinentry-mode", "loopback"])
        return bytes(result.data) if result.ok else None

    def pgp_secret_keys(self) -> list[str]:
        """Fingerprints of the GnuPG home's secret keys (for messages)."""
        gpg = self._gnupg()
        return [] if gpg is None else [key["fingerprint"] for key in gpg.list_keys(secret=True)]

    def _gnupg(self) -> Any:
        if not self.use_gnupg:
            return None
        with self._lock:
            if self._gpg is None:
                home = str(self.gnupg_home) if self.gnupg_home is not None else None
                try:
                    self._gpg = gnupg.GPG(gnupghome=home)
                except (OSError, ValueError):
                    self.use_gnupg = False  # no gpg executable: PGP stanzas stay closed
                    return None
            return self._gpg


def data_key(groups: Sequence[KeyGroup], shamir_threshold: int, keys: KeyRing, file: str) -> bytes:
    """The file's 32-byte data key; WrongKey/NoKeysConfigured, or NeedsBinary for foreign keys."""
    needed = 1 if len(groups) == 1 else shamir_threshold or len(groups)
    parts: list[bytes] = []
    for group in groups:
        part = _open_group(group, keys)
        if part is not None:
            parts.append(part)
        if len(parts) == needed:
            return parts[0] if len(groups) == 1 else shamir_combine(parts, file)
    raise _no_key(groups, needed, len(parts), keys, file)


def _open_group(group: KeyGroup, keys: KeyRing) -> bytes | None:
    ours = set(keys.recipients)
    # Stanzas naming one of our keys first: usually the first try succeeds.
    for stanza in sorted(group.age, key=lambda s: s.recipient not in ours):
        if (part := keys.open_age(stanza)) is not None:
            return part
    for pgp in group.pgp:
        if (part := keys.open_pgp(pgp)) is not None:
            return part
    return None


def _no_key(groups: Sequence[KeyGroup], needed: int, opened: int, keys: KeyRing, file: str) -> Exception:
    foreign = [key for g in groups for key in g.others]
    foreign += [f"age {s.recipient}" for g in groups for s in g.age if not s.native]
    if foreign:
        return NeedsBinary(f"it is encrypted for {', '.join(foreign)}, which fleetd does not open natively")
    wanted = _describe_groups(groups)
    pgp_keys = keys.pgp_secret_keys() if any(g.pgp for g in groups) or not keys.recipients else []
    if not keys.recipients and not pgp_keys:
        return NoKeysConfigured(
            file,
            f"no decryption keys are configured (no age identities, and {_gnupg_name(keys)} holds no "
            f"PGP secret keys); the file is encrypted for {wanted}. Add an age key file to "
            "decryption.age_key_files (or a PGP secret key to decryption.gnupg_home)",
        )
    if opened:
        headline = f"the configured keys open only {opened} of the {needed} Shamir key groups it needs"
    else:
        headline = "none of the configured keys opens this file"
    return WrongKey(
        file,
        f"{headline}. It is encrypted for {wanted}; fleetd tried the age identities "
        f"{list(keys.recipients)} from {[str(p) for p in keys.key_files]} and the PGP secret keys "
        f"{pgp_keys} in {_gnupg_name(keys)}. Add a matching key, or re-encrypt the file for one of "
        "these keys (`sops updatekeys`)",
    )


def _describe_groups(groups: Sequence[KeyGroup]) -> str:
    if len(groups) == 1:
        return ", ".join(groups[0].describe())
    return "; ".join(f"key group {n}: {', '.join(g.describe())}" for n, g in enumerate(groups, start=1))


def _gnupg_name(keys: KeyRing) -> str:
    if not keys.use_gnupg:
        return "GnuPG (unavailable)"
    return f"the GnuPG home {keys.gnupg_home}" if keys.gnupg_home else "the default GnuPG home"


# --- metadata -----------------------------------------------------------------------------------


def parse_key_groups(raw: Mapping[str, Any], file: str) -> tuple[KeyGroup, ...]:
    """The key groups of the ``sops`` metadata: its top-level keys, or its ``key_groups``."""
    if any(raw.get(kind) for kind in ("age", "pgp", *_OTHER_KEY_TYPES)):
        groups = [_key_group(raw, file)]
    else:
        groups = [_key_group(group, file) for group in _list(raw.get("key_groups"))]
    if not groups or not any(group.describe() for group in groups):
        raise InvalidSopsFile(file, "the sops metadata lists no keys; the file is truncated or corrupt")
    return tuple(groups)


def _key_group(raw: object, file: str) -> KeyGroup:
    if not isinstance(raw, Mapping):
        raise InvalidSopsFile(file, "a sops key group is not a mapping")
    age = tuple(AgeStanza(str(k.get("recipient", "")), str(k.get("enc", ""))) for k in _entries(raw, "age"))
    pgp = tuple(PgpStanza(str(k.get("fp", "")), str(k.get("enc", ""))) for k in _entries(raw, "pgp"))
    others = tuple(
        f"{kind} {entry.get(field, '?')}"
        for kind, field in _OTHER_KEY_TYPES.items()
        for entry in _entries(raw, kind)
    )
    return KeyGroup(age=age, pgp=pgp, others=others)


def _entries(raw: Mapping[str, Any], kind: str) -> list[Mapping[str, Any]]:
    return [entry for entry in _list(raw.get(kind)) if isinstance(entry, Mapping)]


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


# --- key files ----------------------------------------------------------------------------------


def _read_key_file(path: Path) -> list[str]:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else "not UTF-8 text"
        message = f"cannot read the age key file ({reason}); check decryption.age_key_files"
        raise KeyFileError(str(path), message) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.warn(
            f"{path}: age key file is accessible by group or others (mode {stat.S_IMODE(mode):04o}); "
            f"run `chmod 600 {path}`",
            KeyFilePermissionWarning,
            stacklevel=3,
        )
    lines = [line.strip() for line in text.splitlines()]
    _parse_identities(lines, str(path))  # fail here, naming the file, rather than later
    return lines


def _parse_identities(lines: Iterable[str], source: str) -> tuple[tuple[Any, ...], tuple[str, ...]]:
    """Native identities and all identity lines (plugins included); comments are skipped."""
    identities, kept = [], []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(_NATIVE_PREFIX):
            identities.append(_identity(line, source, number))
        elif not line.startswith(_BINARY_ONLY_PREFIXES):
            message = f"line {number} is neither a #comment nor an AGE-SECRET-KEY-1... identity"
            raise KeyFileError(source, message)
        kept.append(line)
    return tuple(identities), tuple(kept)


def _identity(line: str, source: str, number: int) -> Any:
    try:
        return pyrage.x25519.Identity.from_str(line)
    except pyrage.IdentityError:
        # Never echo the line: it is (a corrupted) secret key.
        raise KeyFileError(source, f"line {number} is not a valid age identity") from None


# --- Shamir -------------------------------------------------------------------------------------


def _gf256_tables() -> tuple[list[int], list[int]]:
    """exp/log tables of GF(2^8) with the AES polynomial 0x11B and generator 3, as sops' shamir."""
    exp, log = [0] * 510, [0] * 256
    value = 1
    for power in range(255):
        exp[power] = exp[power + 255] = value
        log[value] = power
        value ^= ((value << 1) ^ (0x1B if value & 0x80 else 0)) & 0xFF  # value * 3
    return exp, log


_EXP, _LOG = _gf256_tables()


def _mul(a: int, b: int) -> int:
    return 0 if a == 0 or b == 0 else _EXP[_LOG[a] + _LOG[b]]


def _div(a: int, b: int) -> int:
    return 0 if a == 0 else _EXP[_LOG[a] - _LOG[b] + 255]


def shamir_combine(parts: Sequence[bytes], file: str) -> bytes:
    """The secret whose shares are `parts` (each: y bytes, then its x coordinate)."""
    xs = [part[-1] for part in parts]
    if len({len(part) for part in parts}) != 1 or len(set(xs)) != len(xs) or 0 in xs:
        raise InvalidSopsFile(file, "its Shamir key shares do not fit together; the key metadata is corrupt")
    # Lagrange interpolation at x = 0; in GF(2^8) subtraction is XOR.
    basis = [_basis(i, xs) for i in range(len(xs))]
    width = len(parts[0]) - 1
    return bytes(_xor_all(_mul(part[n], basis[i]) for i, part in enumerate(parts)) for n in range(width))


def _basis(i: int, xs: Sequence[int]) -> int:
    value = 1
    for j, x in enumerate(xs):
        if j != i:
            value = _mul(value, _div(x, xs[i] ^ x))
    return value


def _xor_all(values: Iterable[int]) -> int:
    result = 0
    for value in values:
        result ^= value
    return result
