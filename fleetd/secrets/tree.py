"""SOPS documents: reading the four formats, their metadata, and walking their leaves.

A SOPS file is the original document with each selected leaf replaced by an
``ENC[...]`` string (see `fleetd.secrets.crypto`) plus a ``sops`` metadata entry:

- **yaml**: a top-level ``sops:`` mapping in every document of the stream
  (read from the first). Comments become ``#ENC[...,type:comment]`` and are
  dropped here: they are never part of the MAC and fleetd renders no comments.
- **json**: a top-level ``"sops"`` object.
- **dotenv**: ``KEY=value`` lines; the metadata is flattened into
  ``sops_<path>`` lines (``sops_age__list_0__map_recipient=...``) and
  newlines inside values are written as ``\\n``.
- **binary**: JSON whose ``data`` string holds the whole original file.

Which leaves are encrypted is decided by one rule from the metadata, applied
to the leaf's key path (mapping keys only; list items share their parent's
path): ``unencrypted_suffix`` (the default, ``_unencrypted``),
``encrypted_suffix``, ``unencrypted_regex`` or ``encrypted_regex`` (Go RE2
syntax, searched, not anchored), each matching *any* key of the path. The
comment rules (``encrypted_comment_regex``, ``unencrypted_comment_regex``)
depend on where yaml.v3 attaches comments, which PyYAML cannot see; for them a
leaf counts as encrypted exactly when it is an ``ENC[...]`` string. That
reproduces what sops wrote, and the MAC still covers the choice: a value
swapped between plain and encrypted changes the hash.

Leaves are visited in document order, as the MAC requires, and typed as Go's
yaml.v3 types them, not as PyYAML would: ``yes`` is a string, ``1.0`` hashes
as ``1``, a timestamp keeps its nanoseconds. Unencrypted leaves come out with
those types too, so the result equals what ``sops --decrypt`` prints.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from fleetd.secrets.crypto import (
    InvalidSopsFile,
    KeyPath,
    MacHasher,
    NeedsBinary,
    ValueCipher,
    display_path,
    go_float,
    go_int,
    is_encrypted,
    parse_go_time,
    typed,
)
from fleetd.secrets.keys import KeyGroup, parse_key_groups
from fleetd.util import yamldoc
from fleetd.util.yamldoc import MappingNode, Node, ScalarNode, SequenceNode

Format = Literal["yaml", "json", "dotenv", "binary"]
FORMATS: tuple[Format, ...] = ("yaml", "json", "dotenv", "binary")

#: Called for every non-null leaf: (key path, value as stored, its bytes for the MAC) -> plain value.
Leaf = Callable[[KeyPath, object, bytes], object]

DEFAULT_UNENCRYPTED_SUFFIX = "_unencrypted"
_RULES = (
    "unencrypted_suffix",
    "encrypted_suffix",
    "unencrypted_regex",
    "encrypted_regex",
    "unencrypted_comment_regex",
    "encrypted_comment_regex",
)

_PLAIN = yamldoc.PLAIN_TAG  # the marker of untagged plain scalars, resolved here the yaml.v3 way
_STR = "tag:yaml.org,2002:str"
_BINARY = "tag:yaml.org,2002:binary"
_NULLS = frozenset(("", "~", "null", "Null", "NULL"))
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_SPECIAL_FLOATS = {
    **dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), math.inf),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -math.inf),
}
_YAML_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_GO_INT = re.compile(r"[-+]?(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)")


class _Pairs(list[tuple[str, Any]]):
    """A JSON object or dotenv file as ordered pairs: sops keeps duplicates and order."""


class _ComplexKey(Exception):
    """A YAML mapping key that is a mapping or sequence (sops supports string keys only)."""


@contextmanager
def _walking(file: str) -> Iterator[None]:
    try:
        yield
    except RecursionError:
        raise InvalidSopsFile(file, "the document nests too deeply (a recursive YAML alias?)") from None
    except _ComplexKey:
        raise InvalidSopsFile(
            file, "a mapping key is a mapping or a list; sops supports string keys only"
        ) from None


@dataclass(frozen=True, slots=True)
class Rules:
    """Which leaves are encrypted: at most one rule is set (sops refuses files with more)."""

    unencrypted_suffix: str = ""
    encrypted_suffix: str = ""
    unencrypted_regex: re.Pattern[str] | None = None
    encrypted_regex: re.Pattern[str] | None = None
    by_comment: bool = False
    """A comment rule is set: decide by the value's shape (see the module docstring)."""
    mac_only_encrypted: bool = False

    def encrypts(self, path: KeyPath, value: object) -> bool:
        if self.by_comment:
            return is_encrypted(value)
        keys = [part for part in path if isinstance(part, str)]
        if self.unencrypted_suffix:
            return not any(key.endswith(self.unencrypted_suffix) for key in keys)
        if self.encrypted_suffix:
            return any(key.endswith(self.encrypted_suffix) for key in keys)
        if self.unencrypted_regex is not None:
            return not any(self.unencrypted_regex.search(key) for key in keys)
        if self.encrypted_regex is not None:
            return any(self.encrypted_regex.search(key) for key in keys)
        return True


@dataclass(frozen=True, slots=True)
class Metadata:
    """The parts of the ``sops`` entry that decryption needs."""

    lastmodified: str
    """RFC 3339 as Go formats it: the MAC's additional data."""
    mac: str
    rules: Rules
    key_groups: tuple[KeyGroup, ...]
    """One group: any key opens the file; several: Shamir shares (see `fleetd.secrets.keys`)."""
    shamir_threshold: int = 0
    version: str = ""


@dataclass(slots=True)
class Document:
    """A loaded SOPS file: its data (without metadata), not yet decrypted."""

    fmt: Format
    file: str
    metadata: Metadata
    branches: list[Any] = field(default_factory=list)
    """YAML: one MappingNode per document; others: one `_Pairs`."""

    def walk(self, leaf: Leaf) -> list[Any]:
        """Each branch as Python data, `leaf` applied to every non-null leaf in document order."""
        walk = _walk_node if self.fmt == "yaml" else _walk_plain
        with _walking(self.file):
            return [walk(branch, (), leaf) for branch in self.branches]


class LeafDecryptor:
    """The `Leaf` that decrypts what the rules select and feeds the MAC."""

    __slots__ = ("_cipher", "_file", "_mac", "_rules")

    def __init__(self, cipher: ValueCipher, rules: Rules, mac: MacHasher, file: str) -> None:
        self._cipher, self._rules, self._mac, self._file = cipher, rules, mac, file

    def __call__(self, path: KeyPath, value: object, mac_bytes: bytes) -> object:
        if not self._rules.encrypts(path, value):
            if not self._rules.mac_only_encrypted:
                self._mac.update(mac_bytes)
            return value
        if value == "":
            return value  # sops stores empty values as they are; they add nothing to the hash
        if not isinstance(value, str):
            raise InvalidSopsFile(
                self._file,
                f"the value at {display_path(path)} should be encrypted but is stored in plain "
                "text; set it with `sops edit` or re-encrypt the file",
            )
        plain, kind = self._cipher.open(value, path)
        self._mac.update(plain)
        return typed(plain, kind, path, self._file)


def load(data: bytes, fmt: Format, file: str) -> Document:
    """Parse a SOPS file of format `fmt`; InvalidSopsFile if it is not one."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidSopsFile(file, f"not UTF-8 text (byte {e.start}); is it really a {fmt} file?") from None
    if fmt == "yaml":
        branches, raw_meta = _load_yaml(text, file)
    elif fmt == "dotenv":
        branches, raw_meta = _load_dotenv(text, file)
    else:
        branches, raw_meta = _load_json(text, file)
    return Document(fmt=fmt, file=file, metadata=_metadata(raw_meta, file), branches=branches)


def parse_plain(fmt: Format, data: bytes, file: str) -> list[Any]:
    """A plain document (what ``sops decrypt`` prints) as branches typed like `Document.walk`'s."""
    if fmt == "binary":
        return [{"data": data}]
    text = data.decode("utf-8", "surrogateescape")
    if fmt == "yaml":
        with _walking(file):
            return [_walk_node(node, (), _as_is) for node in _compose_all(text, file)] or [{}]
    if fmt == "dotenv":
        return [_walk_plain(_dotenv_pairs(text, file), (), _as_is)]
    try:
        return [_walk_plain(json.loads(text, object_pairs_hook=_Pairs), (), _as_is)]
    except json.JSONDecodeError:
        raise InvalidSopsFile(file, "sops printed invalid JSON") from None


# --- formats ------------------------------------------------------------------------------------


def _load_yaml(text: str, file: str) -> tuple[list[Any], object]:
    nodes = _compose_all(text, file)
    branches, metadata = [], None
    for index, node in enumerate(nodes):
        if isinstance(node, ScalarNode) and _scalar(node)[1] is None:
            node = MappingNode("tag:yaml.org,2002:map", [])  # an empty document
        if not isinstance(node, MappingNode):
            raise InvalidSopsFile(
                file, f"YAML document {index + 1} is not a mapping; sops files are mappings"
            )
        found = [value for key, value in node.value if key.value == "sops"]
        node.value = [(key, value) for key, value in node.value if key.value != "sops"]
        metadata = found[0] if index == 0 and found else metadata
        branches.append(node)
    if metadata is None:
        raise _not_sops(file, "a top-level `sops:` mapping")
    with _walking(file):
        return branches, _walk_node(metadata, (), _as_is)


def _compose_all(text: str, file: str) -> list[Node]:
    """The documents' node graphs, bounded (sizes, aliases, depth: see `fleetd.util.yamldoc`)."""
    try:
        return yamldoc.compose_all(text, untagged_plain=True)
    except yamldoc.DocumentError as e:
        # Only position and the parser's short complaint: never the offending line, which may hold a secret.
        where = f"{e.position}: " if e.position else ""
        raise InvalidSopsFile(file, f"invalid YAML: {where}{e.problem}") from None


def _load_json(text: str, file: str) -> tuple[list[Any], object]:
    try:
        top = json.loads(text, object_pairs_hook=_Pairs)
    except json.JSONDecodeError as e:
        raise InvalidSopsFile(file, f"invalid JSON: line {e.lineno}, column {e.colno}: {e.msg}") from None
    if not isinstance(top, _Pairs):
        raise InvalidSopsFile(file, "the JSON document is not an object; sops files are objects")
    found = [value for key, value in top if key == "sops"]
    if not found:
        raise _not_sops(file, 'a top-level "sops" object')
    return [_Pairs((key, value) for key, value in top if key != "sops")], _walk_plain(found[0], (), _as_is)


def _load_dotenv(text: str, file: str) -> tuple[list[Any], object]:
    data, flat = _Pairs(), []
    for key, value in _dotenv_pairs(text, file):
        if key.startswith("sops_"):
            flat.append((key.removeprefix("sops_"), value))
        else:
            data.append((key, value))
    if not flat:
        raise _not_sops(file, "sops_* metadata lines")
    return [data], _unflatten(flat)


def _dotenv_pairs(text: str, file: str) -> _Pairs:
    """KEY=value lines as sops reads them: blank lines and #comments skipped, ``\\n`` is a newline."""
    pairs = _Pairs()
    for number, line in enumerate(text.split("\n"), start=1):
        if not line or line.startswith("#"):
            continue
        key, equals, value = line.partition("=")
        if not equals:
            raise InvalidSopsFile(file, f"line {number} is neither KEY=value nor a #comment")
        pairs.append((key, value.replace("\\n", "\n")))
    return pairs


def _not_sops(file: str, missing: str) -> InvalidSopsFile:
    return InvalidSopsFile(
        file, f"not a SOPS-encrypted file: {missing} is missing (truncated, or never encrypted?)"
    )


def _unflatten(pairs: Iterable[tuple[str, str]]) -> object:
    """Rebuild dotenv's flattened metadata: ``age__list_0__map_enc`` is ``age[0].enc``."""
    root: dict[str | int, Any] = {}
    for key, value in pairs:
        parts = re.split(r"(__map_|__list_)", key)
        tokens = [parts[0]] + [
            int(text) if kind == "__list_" and text.isdigit() else text
            for kind, text in zip(parts[1::2], parts[2::2], strict=True)
        ]
        node = root
        for token in tokens[:-1]:
            node = node.setdefault(token, {})
        node[tokens[-1]] = value
    return _lists(root)


def _lists(node: object) -> object:
    if not isinstance(node, dict):
        return node
    if node and all(isinstance(key, int) for key in node):
        return [_lists(node[key]) for key in sorted(node)]
    return {key: _lists(value) for key, value in node.items()}


# --- walking ------------------------------------------------------------------------------------


def _as_is(path: KeyPath, value: object, mac_bytes: bytes) -> object:
    return value


def _walk_node(node: Node, path: KeyPath, leaf: Leaf) -> Any:
    if isinstance(node, MappingNode):
        result = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise _ComplexKey
            result[key_node.value] = _walk_node(value_node, (*path, key_node.value), leaf)
        return result
    if isinstance(node, SequenceNode):
        return [_walk_node(item, (*path, index), leaf) for index, item in enumerate(node.value)]
    value, mac_bytes = _scalar(node)
    return value if mac_bytes is None else leaf(path, value, mac_bytes)


def _walk_plain(value: object, path: KeyPath, leaf: Leaf) -> Any:
    if isinstance(value, _Pairs):
        return {key: _walk_plain(item, (*path, key), leaf) for key, item in value}
    if isinstance(value, list):
        return [_walk_plain(item, (*path, index), leaf) for index, item in enumerate(value)]
    if value is None:
        return None  # sops skips nulls: neither encrypted nor hashed
    return leaf(path, value, _go_bytes(value))


def _go_bytes(value: object) -> bytes:
    """sops.ToBytes for a JSON or dotenv leaf."""
    if isinstance(value, bool):
        return b"True" if value else b"False"
    if isinstance(value, int):
        return go_int(value).encode()
    if isinstance(value, float):
        return go_float(value).encode()
    return str(value).encode("utf-8", "surrogateescape")


def _scalar(node: Node) -> tuple[object, bytes | None]:
    """A YAML scalar as yaml.v3 decodes it, with its MAC bytes (None for null)."""
    if node.tag == _STR:
        return node.value, node.value.encode()
    if node.tag == _BINARY:
        try:
            raw = base64.b64decode(node.value)
        except binascii.Error:
            return node.value, node.value.encode()
        return raw, raw
    if node.tag == _PLAIN or node.tag.startswith("tag:yaml.org,2002:"):
        return _resolve_plain(node.value)
    return node.value, node.value.encode()  # a custom tag (!Ref x): yaml.v3 keeps the text


def _resolve_plain(text: str) -> tuple[object, bytes | None]:
    """yaml.v3's resolve() for an untagged plain scalar (YAML 1.2 core schema, Go's parsers)."""
    if text in _NULLS:
        return None, None
    if text in _BOOLS:
        return _BOOLS[text], b"True" if _BOOLS[text] else b"False"
    if text in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[text], go_float(_SPECIAL_FLOATS[text]).encode()
    if text[0] == "." and _YAML_FLOAT.fullmatch(text):
        return _float(text)
    if text[0] in "+-0123456789":
        return _resolve_number(text)
    return text, text.encode()


def _resolve_number(text: str) -> tuple[object, bytes]:
    moment = parse_go_time(text) if text[:4].isdigit() and text[4:5] == "-" else None
    if moment is not None:
        return moment[0], moment[1].encode()
    plain = text.replace("_", "")
    number = _go_parse_int(plain)
    if number is not None:
        return number, str(number).encode()
    if _YAML_FLOAT.fullmatch(plain):
        return _float(plain)
    return text, text.encode()


def _float(text: str) -> tuple[float, bytes]:
    value = float(text)
    return value, go_float(value).encode()


def _go_parse_int(text: str) -> int | None:
    """strconv.ParseInt(text, 0, 64), falling back to ParseUint like yaml.v3; None if neither."""
    if not _GO_INT.fullmatch(text):
        return None
    sign = -1 if text[0] == "-" else 1
    body = text.lstrip("+-")
    prefix = body[:2].lower()
    if prefix in ("0x", "0o", "0b"):
        number = int(body[2:], {"0x": 16, "0o": 8, "0b": 2}[prefix])
    else:
        number = int(body, 8 if body[:1] == "0" and len(body) > 1 else 10)  # Go: a leading 0 is octal
    number *= sign
    in_range = -(2**63) <= number < 2**63 or (0 <= number < 2**64 and text[0] != "+")
    return number if in_range else None


# --- metadata -----------------------------------------------------------------------------------


def _metadata(raw: object, file: str) -> Metadata:
    if not isinstance(raw, Mapping):
        raise InvalidSopsFile(file, "the sops metadata is not a mapping")
    for name in ("mac", "lastmodified"):
        if not isinstance(raw.get(name), str | dt.datetime) or not raw[name]:
            raise InvalidSopsFile(
                file, f"the sops metadata has no {name}; the file is truncated or was edited by hand"
            )
    return Metadata(
        lastmodified=_rfc3339(raw["lastmodified"], file),
        mac=raw["mac"],
        rules=_rules(raw, file),
        key_groups=parse_key_groups(raw, file),
        shamir_threshold=_weak_int(raw.get("shamir_threshold", 0), file),
        version=str(raw.get("version", "")),
    )


def _rfc3339(value: object, file: str) -> str:
    """Go's time.Parse(RFC3339) then Format(RFC3339): what sops authenticates the MAC with."""
    try:
        moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    except ValueError:
        moment = None
    if moment is None or moment.utcoffset() is None:
        raise InvalidSopsFile(file, "sops.lastmodified is not an RFC 3339 time; the metadata is corrupt")
    offset = moment.strftime("%z")
    zone = "Z" if offset == "+0000" else f"{offset[:3]}:{offset[3:]}"
    return f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}{zone}"


def _rules(raw: Mapping[str, Any], file: str) -> Rules:
    given = {name: str(raw[name]) for name in _RULES if raw.get(name)}
    if len(given) > 1:
        raise InvalidSopsFile(file, f"the sops metadata sets more than one of {', '.join(sorted(given))}")
    if not given:
        given = {"unencrypted_suffix": DEFAULT_UNENCRYPTED_SUFFIX}
    return Rules(
        unencrypted_suffix=given.get("unencrypted_suffix", ""),
        encrypted_suffix=given.get("encrypted_suffix", ""),
        unencrypted_regex=_regex(given.get("unencrypted_regex")),
        encrypted_regex=_regex(given.get("encrypted_regex")),
        by_comment=any(name.endswith("comment_regex") for name in given),
        mac_only_encrypted=_weak_bool(raw.get("mac_only_encrypted", False), file),
    )


@lru_cache(maxsize=256)
def _regex(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error:
        raise NeedsBinary(f"its rule regex {pattern!r} is RE2 syntax Python cannot compile") from None


def _weak_bool(value: object, file: str) -> bool:
    """mapstructure's weak typing: dotenv metadata arrives as strings."""
    if isinstance(value, bool):
        return value
    text = str(value)
    if text in ("", "0", "f", "F", "false", "False", "FALSE"):
        return False
    if text in ("1", "t", "T", "true", "True", "TRUE"):
        return True
    raise InvalidSopsFile(file, "sops.mac_only_encrypted is not a boolean")


def _weak_int(value: object, file: str) -> int:
    try:
        return int(str(value or 0))
    except ValueError:
        raise InvalidSopsFile(file, "sops.shamir_threshold is not a number") from None
