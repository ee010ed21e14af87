"""Recognising SOPS files in a repository, and keeping their plaintext out of messages.

Three stages meet encrypted files: the renderer (plain directories),
`fleetd.render.kustomize` (files a kustomization reads) and ``fleetd check``. They
share what this module knows, so all three agree on which file is
encrypted and how:

- **Which files are encrypted** is decided by their SOPS metadata
  (`fleetd.secrets.sops.is_sops_encrypted`), never by their name: a ``.env`` file may
  be plain, a ``db.yaml`` may be encrypted.
- **Half a SOPS file** — ``ENC[AES256_GCM,…]`` values without the complete
  metadata, as after a truncated copy or a merge that lost the ``sops``
  block — is an error of its own (`is_truncated`). Treated as plain, it
  would be applied with ciphertext as the secret's value.
- **The format** to decrypt with is the one sops chose when it encrypted the
  file: by extension (`fleetd.secrets.sops.format_for`), except that dotenv
  metadata (``sops_mac=``) always means dotenv and a JSON body under a YAML
  name means JSON.
- **Messages stay free of plaintext.** SOPS errors never carry values, but
  kustomize, fed decrypted files, may echo a node it dislikes ("node
  contents: …"). `plaintext_tokens` collects the words that occur in a
  decrypted file but not in its encrypted form — exactly the decrypted
  values — and `redact` removes them (and the 7-character prefixes Go's YAML
  library quotes as ```hunter2...```) from such a message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from fleetd.secrets.sops import Format, SopsError, format_for, is_sops_encrypted

NO_KEYS = "the file is SOPS-encrypted but no decryption keys are configured ([decryption] in the fleet file)"
TRUNCATED = (
    "holds SOPS-encrypted values (ENC[AES256_GCM,…]) but no complete sops metadata: the file is "
    "truncated or its sops block was edited away; restore it from git history or encrypt it again "
    "with sops"
)
REDACTED = "[redacted]"
MIN_TOKEN = 4
"""Shorter words are not redacted: they would mangle line numbers and kinds, and are no secret."""

_ENC_VALUE = b"ENC[AES256_GCM,"
_DOTENV_MAC = re.compile(rb"^sops_mac=", re.MULTILINE)
_WORD = re.compile(r"[^\s\"'`=,:;\[\]{}()<>|\\]+")
_GO_SHORTENED = re.compile(r"`([^`\s]{1,16})\.\.\.`")  # yaml.v3 quotes long values as `abcdefg...`
_UNNAMED = "<memory>"


def is_truncated(data: bytes) -> bool:
    """Whether `data` holds SOPS-encrypted values but no complete SOPS metadata."""
    return _ENC_VALUE in data and not is_sops_encrypted(data)


def encrypted_format(name: str, data: bytes) -> Format | None:
    """The SOPS format to decrypt file `name` with, or None when `data` is not SOPS-encrypted.

    Raises `fleetd.secrets.sops.InvalidSopsFile` for an encrypted ``.ini`` file, which fleetd cannot read.
    """
    if not is_sops_encrypted(data):
        return None
    if _DOTENV_MAC.search(data):
        return "dotenv"
    guessed = format_for(name)
    json_body = data.lstrip().startswith(b"{")
    if guessed == "binary":
        return "binary" if json_body else "yaml"  # sops stores binary files as JSON
    return "json" if json_body else guessed


def failure_text(error: BaseException) -> str:
    """`error`'s message for a file that is named elsewhere in the message.

    The renderer's decryption hook decrypts bytes, so SOPS errors name the
    file ``<memory>``; that name is dropped. Errors about another file (an
    unreadable age key file) keep its name.
    """
    text = str(error)
    if isinstance(error, SopsError) and error.file == _UNNAMED:
        return text.removeprefix(f"{_UNNAMED}: ")
    return text


def plaintext_tokens(plain: bytes, encrypted: bytes) -> frozenset[str]:
    """The words of decrypted `plain` that its `encrypted` form does not show: its secret values."""
    public = set(_words(encrypted))
    return frozenset(word for word in _words(plain) if len(word) >= MIN_TOKEN and word not in public)


def redact(text: str, tokens: Iterable[str]) -> str:
    """`text` without any of `tokens`, nor Go's shortened quotes of them."""
    ordered = sorted(set(tokens), key=len, reverse=True)  # longest first: no half-redacted words
    for token in ordered:
        text = text.replace(token, REDACTED)

    def shortened(match: re.Match[str]) -> str:
        prefix = match.group(1)
        hidden = len(prefix) >= MIN_TOKEN and any(token.startswith(prefix) for token in ordered)
        return f"`{REDACTED}`" if hidden else match.group(0)

    return _GO_SHORTENED.sub(shortened, text)


def _words(data: bytes) -> list[str]:
    return _WORD.findall(data.decode("utf-8", "replace"))
