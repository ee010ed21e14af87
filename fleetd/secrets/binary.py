"""The fallback: ``sops decrypt`` as a subprocess, for what fleetd cannot open natively.

Cloud KMS, Azure Key Vault, HashiCorp Vault, age ssh/plugin recipients and
RE2-only rule regexes are left to the real sops binary. It gets:

- the encrypted document on **stdin** (``--input-type``/``--output-type``
  name the format), so no temporary file and nothing secret in argv;
- the age identities through a **pipe** it reads as ``SOPS_AGE_KEY_FILE=/dev/fd/N``:
  key material never touches the disk, argv or the environment;
- ``GNUPGHOME`` for PGP, and the rest of fleetd's environment for cloud
  credentials (``AWS_*``, ``GOOGLE_APPLICATION_CREDENTIALS``, ``VAULT_*``, ...);
- a **timeout**, after which it is killed; and on Linux it is killed with the
  daemon (`fleetd.util.children`), so a ``kill -9`` of fleetd leaves no sops
  holding plaintext.

Its plaintext comes back on stdout and stays in memory. Its stderr becomes
`SopsBinaryFailed`, with ENC[...] values and echoed input removed, because
sops quotes a malformed value (possibly a secret someone pasted in clear) in
its error messages.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

from fleetd.secrets.crypto import SopsError
from fleetd.util.children import die_with_parent

_OUR_ENV = ("SOPS_AGE_KEY", "SOPS_AGE_KEY_FILE", "SOPS_AGE_KEY_CMD")
_ENC_VALUE = re.compile(r"ENC\[[^\]]*\]")
# sops messages that quote a value or line of the input, which may be a secret pasted in clear.
_ECHOED_INPUT = (
    (re.compile(r"Input string .*? does not match", re.DOTALL), "Input string <redacted> does not match"),
    (re.compile(r"Could not convert .*? to bytes", re.DOTALL), "Could not convert <redacted> to bytes"),
    (re.compile(r"invalid dotenv input line: [^\n]*"), "invalid dotenv input line: <redacted>"),
)
_STDERR_LIMIT = 1500
_EXIT_MEANINGS = {
    51: "MAC mismatch: the file was changed without sops",
    128: "could not retrieve the data key with any key",
}


class UnsupportedKeyType(SopsError):
    """The file needs the sops binary (a key type fleetd does not open natively), and there is none."""


class SopsBinaryFailed(SopsError):
    """The sops binary ran but did not decrypt the file (or timed out)."""


def find(binary: str) -> str | None:
    """The executable `binary` names (a path, or a name on PATH), or None."""
    return shutil.which(binary)


def decrypt(
    data: bytes,
    fmt: str,
    *,
    executable: str,
    file: str,
    age_keys: bytes,
    gnupg_home: Path | None,
    timeout: float,
) -> bytes:
    """The plaintext of `data` (a SOPS file in format `fmt`) as sops prints it."""
    argv = [executable, "decrypt", "--input-type", fmt, "--output-type", fmt]
    read_end, write_end = os.pipe()
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_environment(read_end, gnupg_home),
            pass_fds=(read_end,),
            cwd="/",  # no stray .sops.yaml from wherever the daemon runs
            preexec_fn=die_with_parent(),  # killed with the daemon, plaintext and all (Linux)
        )
    except OSError as e:
        os.close(write_end)
        raise SopsBinaryFailed(
            file, f"cannot run {executable}: {e.strerror}; check decryption.sops_binary"
        ) from None
    finally:
        os.close(read_end)
    _feed(write_end, age_keys)
    return _collect(process, data, timeout, file)


def _environment(key_fd: int, gnupg_home: Path | None) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in _OUR_ENV}
    env["SOPS_AGE_KEY_FILE"] = f"/dev/fd/{key_fd}"
    if gnupg_home is not None:
        env["GNUPGHOME"] = str(gnupg_home)
    return env


def _feed(fd: int, payload: bytes) -> None:
    """Write the keys in a thread: a pipe holds 64 KiB, and sops reads it only when it needs keys."""

    def write() -> None:
        try:
            with os.fdopen(fd, "wb") as pipe:
                pipe.write(payload)
        except OSError:
            pass  # sops exited without reading its keys; its exit status tells the story

    threading.Thread(target=write, name="sops-key-pipe", daemon=True).start()


def _collect(process: subprocess.Popen[bytes], data: bytes, timeout: float, file: str) -> bytes:
    try:
        stdout, stderr = process.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise SopsBinaryFailed(
            file, f"sops did not finish within {timeout:g}s (a KMS or Vault that does not answer?)"
        ) from None
    if process.returncode != 0:
        meaning = _EXIT_MEANINGS.get(process.returncode, "")
        detail = f"{meaning}; " if meaning else ""
        raise SopsBinaryFailed(
            file, f"sops decrypt failed (exit {process.returncode}): {detail}{sanitise(stderr)}"
        )
    return stdout


def sanitise(stderr: bytes) -> str:
    """sops' stderr without encrypted blobs or echoed input, shortened, on one line."""
    text = stderr.decode("utf-8", "replace")
    text = _ENC_VALUE.sub("ENC[...]", text)
    for pattern, replacement in _ECHOED_INPUT:
        text = pattern.sub(replacement, text)
    text = " ".join(text.split())
    return text if len(text) <= _STDERR_LIMIT else text[:_STDERR_LIMIT] + " ..."
