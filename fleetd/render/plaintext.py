"""Plaintext in rendering: decrypted values stay verbatim, and Secrets in git unencrypted are found.

Decrypted values are applied exactly as decrypted
    Variable substitution (`fleetd.render.variables`) skips every string
    value that contains a decrypted text holding a ``$``: a password such as
    ``pa${ss}`` is applied verbatim, never substituted, and never named in
    an "undefined variable" message. Only texts with a ``$`` can be changed
    by substitution, so only those are kept (`verbatim`). What counts as
    decrypted is found by comparing each file before and after decryption
    (`decrypted_texts`): the values that were ``ENC[…]`` in git, and for
    kustomize inputs also the whole decrypted file (a generator embeds it).

Plaintext Secrets
    A ``v1`` Secret with data that did not come out of SOPS-encrypted data
    has its values in git in clear (`is_plaintext_secret`). Every render
    lists them (`fleetd.render.RenderResult.plaintext_secrets`) for ``fleetd
    check`` and status to warn about; with ``require_encrypted_secrets``
    (inventory ``[decryption]``) they fail the render (`refuse`). For
    kustomize output a Secret counts as encrypted when one of its values is
    a decrypted text (an encrypted resource or generator input).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator
from typing import Any

from fleetd.render.kustomization import KUSTOMIZATION_FILES
from fleetd.render.model import Rendered
from fleetd.util import yamldoc

_ENC_PREFIX = "ENC["


def decrypted_texts(fmt: str, encrypted: bytes, plain: bytes) -> frozenset[str]:
    """What decrypting one file produced: its whole plaintext and each value that was encrypted."""
    text = plain.decode("utf-8", "surrogateescape")
    found = {text}
    if fmt == "dotenv":
        found |= {line.partition("=")[2] for line in text.splitlines() if "=" in line}
    elif fmt in ("yaml", "json"):
        found |= set(_file_leaves(fmt, encrypted, plain))
    return frozenset(value for value in found if value)


def _file_leaves(fmt: str, encrypted: bytes, plain: bytes) -> Iterator[str]:
    try:
        if fmt == "json":
            before, after = [yamldoc.load_json(encrypted).value], [yamldoc.load_json(plain).value]
        else:
            before, after = yamldoc.load_plain(encrypted), yamldoc.load_plain(plain)
    except yamldoc.DocumentError:
        return
    for old, new in zip(before, after, strict=False):
        yield from decrypted_leaves(old, new)


def decrypted_leaves(encrypted: Any, decrypted: Any) -> Iterator[str]:
    """The decrypted strings of `decrypted` at the places where `encrypted` holds ``ENC[…]`` values."""
    if isinstance(encrypted, str):
        if encrypted.startswith(_ENC_PREFIX) and isinstance(decrypted, str):
            yield decrypted
    elif isinstance(encrypted, dict) and isinstance(decrypted, dict):
        for key, value in decrypted.items():
            if key in encrypted:
                yield from decrypted_leaves(encrypted[key], value)
    elif isinstance(encrypted, list) and isinstance(decrypted, list):
        for old, new in zip(encrypted, decrypted, strict=False):
            yield from decrypted_leaves(old, new)


def verbatim(texts: Iterable[str]) -> frozenset[str]:
    """The decrypted texts substitution must leave alone: those holding a ``$``."""
    return frozenset(text for text in texts if "$" in text)


def carries_decrypted(obj: dict[str, Any], texts: frozenset[str]) -> bool:
    """Whether a Secret's ``data`` or ``stringData`` holds one of the decrypted `texts`."""
    if not texts:
        return False
    for field, encoded in (("data", True), ("stringData", False)):
        values = obj.get(field)
        for value in values.values() if isinstance(values, dict) else ():
            if isinstance(value, str) and (value in texts or (encoded and _unbase64(value) in texts)):
                return True
    return False


def _unbase64(value: str) -> str | None:
    try:
        return base64.b64decode(value, validate=True).decode("utf-8", "surrogateescape")
    except (binascii.Error, ValueError):
        return None


def is_plaintext_secret(rendered: Rendered) -> bool:
    """A v1 Secret with data, not from SOPS-encrypted data: its values are in git in clear."""
    obj = rendered.obj
    if rendered.from_sops or obj.get("apiVersion") != "v1" or obj.get("kind") != "Secret":
        return False
    return any(isinstance(obj.get(field), dict) and obj[field] for field in ("data", "stringData"))


def plaintext_secrets(objects: Iterable[Rendered]) -> tuple[Rendered, ...]:
    """The plaintext Secrets of `objects` (see `is_plaintext_secret`)."""
    return tuple(rendered for rendered in objects if is_plaintext_secret(rendered))


def warning(rendered: Rendered) -> str:
    """What to tell an operator about one plaintext Secret."""
    return f"{rendered.where()}: {rendered.ref} is a Secret stored in git unencrypted; {_fix(rendered)}"


def _fix(rendered: Rendered) -> str:
    if rendered.file.rpartition("/")[2] in KUSTOMIZATION_FILES:
        return "encrypt the file it comes from (or its secretGenerator inputs) with sops"
    return (
        f"encrypt it with sops (sops --encrypt --encrypted-regex '^(data|stringData)$' --in-place "
        f"{rendered.file})"
    )


def refuse(secrets: tuple[Rendered, ...]) -> None:
    """Raise a RenderError for the first plaintext Secret of `secrets` (they are refused by policy)."""
    if not secrets:
        return
    first, others = secrets[0], len(secrets) - 1
    more = f" ({others} more plaintext Secret{'s' if others > 1 else ''} in this sync)" if others else ""
    raise first.error(
        "a Secret stored in git unencrypted, refused because [decryption] require_encrypted_secrets "
        f"is true{more}; {_fix(first)} and commit the encrypted file"
    )
