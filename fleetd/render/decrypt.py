"""SOPS in rendering: documents of files and of kustomize output, decrypted when encrypted.

A file or document whose content carries SOPS metadata (a top-level ``sops``
mapping holding ``mac`` and ``lastmodified``) is encrypted, whatever its name.

- In a plain directory the whole file's bytes go to ``decrypt(data, "yaml" |
  "json")``, and its result replaces the file. Its documents keep the lines
  of the encrypted file.
- In kustomize output (`fleetd.render.workdir` decrypts kustomize's inputs
  before the build) a document that is still encrypted goes to ``decrypt``
  as JSON.

Without ``decrypt``, when it fails, or when a file holds ``ENC[…]`` values
without its metadata (truncated), the render fails naming the file:
encrypted data is never applied, and a sync that fails to render applies and
prunes nothing. Every document comes out as a `Source` saying whether it
came from SOPS and which decrypted texts substitution must leave alone
(`fleetd.render.plaintext`). Messages about decrypted data never quote it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from fleetd.errors import FleetdError
from fleetd.render.errors import RenderError
from fleetd.render.model import Decrypt
from fleetd.render.parse import Syntax, parse
from fleetd.render.plaintext import carries_decrypted, decrypted_leaves, verbatim
from fleetd.secrets.scan import NO_KEYS, TRUNCATED, failure_text, is_truncated
from fleetd.secrets.sops import is_sops_encrypted
from fleetd.util.yamldoc import Document


@dataclass(frozen=True, slots=True)
class Source:
    """One parsed document, ready to become objects."""

    document: Document
    line: int | None
    """Where it starts in its file; None for kustomize output."""
    from_sops: bool = False
    verbatim: frozenset[str] = field(default=frozenset(), repr=False)


def file_sources(raw: bytes, where: str, syntax: Syntax, decrypt: Decrypt | None) -> Iterator[Source]:
    """The documents of one manifest file, one at a time, decrypted first when it is SOPS-encrypted."""
    if is_truncated(raw):
        raise RenderError(TRUNCATED, file=where)
    if is_sops_encrypted(raw):  # sops puts its metadata in the first document (and every other)
        yield from _decrypted_sources(raw, where, syntax, decrypt)
        return
    for doc in parse(raw, where, syntax):
        if is_sops_encrypted(doc.value):
            raise RenderError(
                "holds sops metadata, but the file's first document does not: sops encrypts whole "
                "files; encrypt the file again with sops",
                file=where,
                document=doc.index,
                line=doc.line,
            )
        yield Source(doc, doc.line)


def _decrypted_sources(raw: bytes, where: str, syntax: Syntax, decrypt: Decrypt | None) -> list[Source]:
    documents = list(parse(raw, where, syntax))
    plain = list(parse(call_decrypt(decrypt, raw, syntax, where), where, syntax, secret=True))
    if any(is_sops_encrypted(doc.value) for doc in plain):
        raise RenderError("still SOPS-encrypted after decryption", file=where)
    lines = [doc.line for doc in documents] if len(documents) == len(plain) else [None] * len(plain)
    return [
        Source(new, line, True, verbatim(decrypted_leaves(old.value, new.value)))
        for old, new, line in zip(documents, plain, lines, strict=False)
    ]


def output_sources(
    output: bytes, where: str, decrypt: Decrypt | None, decrypted: frozenset[str]
) -> Iterator[Source]:
    """The documents of kustomize's `output`; `decrypted` is what decrypting its inputs produced."""
    build_verbatim = verbatim(decrypted)
    for doc in parse(output, where, "yaml"):
        if is_sops_encrypted(doc.value):
            raw = json.dumps(doc.value).encode()
            (plain,) = parse(call_decrypt(decrypt, raw, "json", where, doc.index), where, "json", secret=True)
            plain = Document(plain.value, doc.index, doc.line)
            yield Source(plain, None, True, verbatim(decrypted_leaves(doc.value, plain.value)))
        else:
            from_sops = _is_secret(doc.value) and carries_decrypted(doc.value, decrypted)
            yield Source(doc, None, from_sops, build_verbatim)


def _is_secret(value: object) -> bool:
    return isinstance(value, dict) and value.get("apiVersion") == "v1" and value.get("kind") == "Secret"


def call_decrypt(
    decrypt: Decrypt | None, data: bytes, fmt: str, where: str, document: int | None = None
) -> bytes:
    """`decrypt(data, fmt)`, its failures (and its absence) as RenderErrors naming the file."""
    if decrypt is None:
        raise RenderError(NO_KEYS, file=where, document=document)
    try:
        return decrypt(data, fmt)
    except FleetdError as e:
        raise RenderError(f"cannot decrypt: {failure_text(e)}", file=where, document=document) from e
