"""The renderer's decryption hook, built from the fleet file's ``[decryption]`` table.

Unusable keys (an unreadable file, a malformed key) do not stop the daemon:
the hook then fails every encrypted file with that error, so only the syncs
that hold secrets fail, and they say why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fleetd.inventory import Decryption
from fleetd.secrets.keys import KeyRing
from fleetd.secrets.sops import SopsError, decrypt_bytes

log = logging.getLogger(__name__)

#: (file content, format) -> plaintext; the shape `fleetd.render` calls.
Decrypt = Callable[[bytes, str], bytes]


def decryptor(decryption: Decryption) -> Decrypt | None:
    """The decryption hook for the fleet's keys, or None when none are configured."""
    if not decryption.age_key_files and decryption.gnupg_home is None:
        return None
    try:
        keys = KeyRing.from_decryption(decryption)
    except SopsError as exc:
        log.error("decryption keys unusable: %s", exc)  # noqa: TRY400 - the message is the diagnosis
        failure = exc

        def broken(data: bytes, fmt: str) -> bytes:
            raise failure

        return broken
    return lambda data, fmt: decrypt_bytes(data, fmt, keys)
