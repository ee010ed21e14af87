"""Exec credential plugins, run with a deadline and never left behind.

A kubeconfig's ``users[].user.exec`` names a program that prints an
``ExecCredential`` (a bearer token, or a client certificate and key):
``aws eks get-token``, ``gke-gcloud-auth-plugin``, ``kubelogin``... Such a
program can hang — an SSO login waiting for a browser nobody will open, a
cloud CLI behind a dead proxy — and a hung plugin must cost its cluster one
clear error, not its worker for ever. So `run_plugin`:

* starts the plugin in a session of its own (its own process group), stdin
  from ``/dev/null``, with ``KUBERNETES_EXEC_INFO`` saying it is not
  interactive (and carrying the cluster when the kubeconfig asks
  ``provideClusterInfo``) and the kubeconfig's ``env`` added;
* gives it `timeout` seconds to exit with its answer, reading at most
  `MAX_OUTPUT` bytes of it;
* on a timeout, a failure, or cancellation (the daemon stopping), kills the
  whole process group with SIGKILL — helpers the plugin started included —
  and reaps it before returning or re-raising.

Errors are `PluginFailed`, whose message names the command and quotes the
end of its stderr; never its output, which holds the credential.
`RefreshingToken` runs the plugin again when the token it gave is about to
expire. The subprocess enters fleetd here and nowhere else in ``kube``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: Seconds a plugin gets by default ([cluster].credential_timeout overrides it).
DEFAULT_TIMEOUT = 30.0
#: Most bytes of output read from a plugin (an ExecCredential is a few KiB).
MAX_OUTPUT = 1024 * 1024
#: Seconds to read what a killed plugin left in its pipes (so they close).
KILL_GRACE = 2.0
#: A token is renewed this many seconds before the expiry the plugin gave.
REFRESH_MARGIN = 30.0
_STDERR_QUOTED = 400


class PluginFailed(Exception):
    """The plugin did not answer in time, failed, or answered something unusable."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecSpec:
    """How to run one kubeconfig's exec plugin."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    api_version: str = "client.authentication.k8s.io/v1"
    interactive_mode: str = "IfAvailable"
    install_hint: str = ""
    cluster_info: Mapping[str, Any] | None = None

    @property
    def command(self) -> str:
        return self.argv[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecCredential:
    """What a plugin answered. Its repr never shows the secret parts."""

    token: str | None = field(default=None, repr=False)
    certificate: str | None = field(default=None, repr=False)
    key: str | None = field(default=None, repr=False)
    expires: float | None = None
    """Wall-clock time (epoch seconds) the plugin said the credential expires; None: never."""


async def run_plugin(spec: ExecSpec, timeout: float) -> ExecCredential:
    """Run ``spec`` once within ``timeout`` seconds; see the module docstring."""
    if spec.interactive_mode == "Always":
        raise PluginFailed(
            f"credential plugin {spec.command} needs an interactive terminal (interactiveMode: Always), "
            "which a daemon does not have"
        )
    try:
        proc = await _start(spec)
    except OSError as exc:
        hint = f" ({spec.install_hint.strip()})" if spec.install_hint.strip() else ""
        reason = exc.strerror or exc
        raise PluginFailed(f"cannot run credential plugin {spec.command}: {reason}{hint}") from exc
    done = False
    try:
        async with asyncio.timeout(timeout):
            out, err = await _outputs(proc, spec.command)
            code = await proc.wait()
        done = True
    except TimeoutError:
        raise PluginFailed(
            f"credential plugin {spec.command} did not answer within {timeout:g}s; it was stopped "
            "(set [cluster].credential_timeout if it needs longer)"
        ) from None
    finally:
        if not done:
            await _kill(proc)
    if code != 0:
        raise PluginFailed(f"credential plugin {spec.command} exited with status {code}{_quote(err)}")
    return parse(spec, out, err)


async def _start(spec: ExecSpec) -> asyncio.subprocess.Process:
    """Start the plugin; a cancellation meanwhile waits for the start, kills the plugin, and re-raises.

    Python 3.11 cannot clean up a subprocess whose start is cancelled while
    its pipes connect (it kills the plugin but not its helpers, then waits
    for ever), so the start itself is shielded from cancellation.
    """
    spawn = asyncio.create_subprocess_exec(
        *spec.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=_environment(spec), start_new_session=True,
    )  # fmt: skip
    starting = asyncio.ensure_future(spawn)  # awaited to its end below, whatever happens
    try:
        return await asyncio.shield(starting)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await _kill(await starting)
        raise


def parse(spec: ExecSpec, out: bytes, err: bytes = b"") -> ExecCredential:
    """The ExecCredential a plugin printed; `PluginFailed` naming what is wrong (not the output)."""
    what = f"credential plugin {spec.command}"
    try:
        doc = json.loads(out)
    except ValueError:
        raise PluginFailed(f"{what} printed something that is not JSON{_quote(err)}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "ExecCredential":
        raise PluginFailed(f"{what} did not print an ExecCredential")
    if doc.get("apiVersion") != spec.api_version:
        raise PluginFailed(
            f"{what} answered apiVersion {doc.get('apiVersion')!r}; the kubeconfig asks {spec.api_version!r}"
        )
    status = doc.get("status")
    if not isinstance(status, dict):
        raise PluginFailed(f"{what} answered without a status")
    token, cert, key = status.get("token"), status.get("clientCertificateData"), status.get("clientKeyData")
    if not (isinstance(token, str) and token) and not (isinstance(cert, str) and isinstance(key, str)):
        raise PluginFailed(f"{what} answered neither a token nor a client certificate and key")
    expires = _timestamp(status.get("expirationTimestamp"), what)
    if isinstance(token, str) and token:
        return ExecCredential(token=token, expires=expires)
    return ExecCredential(certificate=str(cert), key=str(key), expires=expires)


class RefreshingToken:
    """A plugin's bearer token, renewed by running the plugin again shortly before it expires."""

    def __init__(self, spec: ExecSpec, first: ExecCredential, timeout: float) -> None:
        self._spec, self._credential, self._timeout = spec, first, timeout
        self._lock = asyncio.Lock()

    @property
    def due(self) -> bool:
        expires = self._credential.expires
        return expires is not None and time.time() >= expires - REFRESH_MARGIN

    async def header(self) -> str:
        """``Bearer <token>``, renewed first if due (concurrent callers share one run)."""
        if self.due:
            async with self._lock:
                if self.due:
                    self._credential = await run_plugin(self._spec, self._timeout)
        return f"Bearer {self._credential.token}"


def _environment(spec: ExecSpec) -> dict[str, str]:
    spec_info: dict[str, Any] = {"interactive": False}
    if spec.cluster_info is not None:
        spec_info["cluster"] = dict(spec.cluster_info)
    info = {"apiVersion": spec.api_version, "kind": "ExecCredential", "spec": spec_info}
    return {**os.environ, **spec.env, "KUBERNETES_EXEC_INFO": json.dumps(info)}


async def _outputs(proc: asyncio.subprocess.Process, command: str) -> tuple[bytes, bytes]:
    """Both pipes until the plugin closes them; `PluginFailed` as soon as one exceeds `MAX_OUTPUT`."""
    assert proc.stdout is not None
    assert proc.stderr is not None
    overflow = False
    try:
        async with asyncio.TaskGroup() as tg:
            out = tg.create_task(_drain(proc.stdout), name="plugin-stdout")
            err = tg.create_task(_drain(proc.stderr), name="plugin-stderr")
    except* _Overflow:
        overflow = True
    if overflow:
        raise PluginFailed(f"credential plugin {command} printed more than {MAX_OUTPUT} bytes")
    return out.result(), err.result()


class _Overflow(Exception):
    """A plugin's pipe carried more than `MAX_OUTPUT` bytes."""


async def _drain(stream: asyncio.StreamReader) -> bytes:
    """Everything read from ``stream``; `_Overflow` as soon as it exceeds `MAX_OUTPUT`."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(1 << 16):
        size += len(chunk)
        if size > MAX_OUTPUT:
            raise _Overflow
        chunks.append(chunk)
    return b"".join(chunks)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the plugin's whole process group, reap the plugin, and read its pipes to their end."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the group id is its pid
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(KILL_GRACE):  # what is left in the pipes, so they close
            for stream in (proc.stdout, proc.stderr):
                while stream is not None and await stream.read(1 << 16):
                    pass
    await proc.wait()


def _quote(err: bytes) -> str:
    text = err.decode(errors="replace").strip()
    if not text:
        return ""
    return f": {text[-_STDERR_QUOTED:]}"


def _timestamp(value: object, what: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise PluginFailed(
            f"{what} answered an expirationTimestamp that is not RFC 3339: {value!r}"
        ) from None
