"""kustomize: the one module through which the kustomize binary enters fleetd.

fleetd renders a sync path that holds a ``kustomization.yaml`` (or
``kustomization.yml``, ``Kustomization``) by running::

    kustomize build --load-restrictor LoadRestrictionsRootOnly <dir>

The repository is trusted to say *what* to deploy, not to run code or reach
the network on the hub, so the build is locked down:

- no ``--enable-alpha-plugins``, ``--enable-exec`` or ``--enable-helm``:
  generator/transformer plugins, KRM exec functions and Helm charts fail
  with kustomize's own "disabled" error;
- a minimal environment: ``PATH``, ``HOME`` set to a private temporary
  directory (so no plugin home, no kustomize or git configuration of the
  hub's user), no ``KUSTOMIZE_PLUGIN_HOME``; git transports are all
  disallowed and HTTP(S) goes to a dead proxy, so a remote base that slips
  past `fleetd.render.kustomization.check_references` still cannot fetch anything;
- a timeout (default 60 s); on expiry or cancellation the whole process
  group is killed, and the process dies with the daemon
  (`fleetd.util.children`);
- at most `MAX_CONCURRENT_BUILDS` builds at once per event loop (each is a
  process and, with encrypted inputs, a copy in memory), and at most
  `MAX_OUTPUT_BYTES` of output.

SOPS-encrypted inputs (resources, patches, generator ``files``/``envs`` in
any SOPS format) are decrypted before the build into a private copy, in a
directory a crash cannot leave on disk (`fleetd.render.workdir`): kustomize
cannot read SOPS files, and decrypting its output would not work because
kustomize's transformations break the MAC. Without encrypted inputs nothing
is copied and kustomize reads the snapshot directly. kustomize's messages
name repository paths, not the copy, and words of the plaintext are
redacted from them.

Errors are raised as `KustomizeError`; `fleetd.render.pipeline` turns them
into `RenderError`. Failures that may pass on their own (timeout, binary
missing or not executable, no room for the private copy) are marked
``temporary`` so they are retried rather than remembered for the revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from fleetd.render.errors import KustomizeError
from fleetd.render.kustomization import (
    KUSTOMIZATION_FILES,
    check_references,
    is_remote,
    kustomization_file,
    kustomization_graph,
)
from fleetd.render.model import Decrypt
from fleetd.render.workdir import Input, make_workdir, private_copy, remove_workdir
from fleetd.secrets.scan import NO_KEYS, TRUNCATED, encrypted_format, is_truncated, redact
from fleetd.secrets.sops import SopsError
from fleetd.util.children import die_with_parent

__all__ = [
    "BINARY_ENV",
    "DEFAULT_TIMEOUT",
    "KUSTOMIZATION_FILES",
    "MAX_CONCURRENT_BUILDS",
    "MAX_OUTPUT_BYTES",
    "Built",
    "KustomizeError",
    "build",
    "check_references",
    "environment",
    "find_binary",
    "is_remote",
    "kustomization_file",
    "kustomization_graph",
]

DEFAULT_TIMEOUT = 60.0
"""Seconds one ``kustomize build`` may take."""
BINARY_ENV = "FLEETD_KUSTOMIZE"
"""Environment variable naming the kustomize binary (a path or a name on PATH)."""
MAX_CONCURRENT_BUILDS = 4
"""Builds running at once per event loop; set it before the first build."""
MAX_OUTPUT_BYTES = 256 * 1024 * 1024
"""Most output one build may print; more fails the build."""

_STDERR_LIMIT = 4000
_STDERR_READ = 64 * 1024
_READ_SIZE = 1024 * 1024
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class Built:
    """What one build printed, and what decrypting its inputs produced (for `fleetd.render.plaintext`)."""

    output: bytes = field(repr=False)
    """The multi-document YAML ``kustomize build`` printed."""
    decrypted: frozenset[str] = field(default=frozenset(), repr=False)
    """Decrypted values and file texts of its SOPS-encrypted inputs; empty without any."""


def find_binary(explicit: str | Path | None = None) -> Path:
    """The kustomize to run: `explicit`, else ``$FLEETD_KUSTOMIZE``, else the one on PATH.

    A value with a slash is a path, one without is looked up on PATH. Raises a
    temporary `KustomizeError` without a directory when none is found.
    """
    wanted = str(explicit) if explicit else os.environ.get(BINARY_ENV, "kustomize")
    found = wanted if os.sep in wanted else shutil.which(wanted)
    if found is None:
        raise KustomizeError(
            None,
            f"kustomize binary {wanted!r} not found on PATH: install it or set ${BINARY_ENV}",
            temporary=True,
        )
    return Path(found)


async def build(
    directory: Path,
    *,
    root: Path,
    binary: str | Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    decrypt: Decrypt | None = None,
) -> Built:
    """Build the kustomization in `directory` of repository `root`.

    SOPS-encrypted inputs are decrypted with `decrypt` into a private copy
    first (see the module docstring); without `decrypt` they are an error.
    """
    async with _build_slots():
        plan = await asyncio.to_thread(_prepare, directory, root, binary)
        if plan.inputs and decrypt is None:
            raise KustomizeError(plan.inputs[0].where, NO_KEYS)
        scratch = await asyncio.to_thread(make_workdir)
        abandoned = threading.Event()
        try:
            if decrypt is None or not plan.inputs:
                return Built(await _kustomize(plan, directory, scratch, timeout, frozenset()))
            tree = await asyncio.to_thread(
                private_copy,
                root=plan.root,
                directories=plan.directories,
                inputs=plan.inputs,
                built=plan.where,
                scratch=scratch,
                decrypt=decrypt,
                abandoned=abandoned,
            )
            output = await _kustomize(plan, tree.target, scratch, timeout, tree.tokens)
            return Built(output, tree.decrypted)
        finally:
            abandoned.set()  # a copying thread still running deletes what it writes after this
            remove_workdir(scratch)


def _build_slots() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = asyncio.Semaphore(MAX_CONCURRENT_BUILDS)
    return slots


@dataclass(frozen=True, slots=True)
class _Plan:
    """What `_prepare` found out before the build."""

    root: Path
    where: str
    """The built directory relative to `root`."""
    executable: Path
    directories: tuple[Path, ...]
    inputs: tuple[Input, ...]


def _prepare(directory: Path, root: Path, binary: str | Path | None) -> _Plan:
    """Check the kustomization graph, find the binary and the encrypted inputs."""
    root = root.resolve()
    where = directory.resolve().relative_to(root).as_posix()
    check_references(directory, root)
    try:
        executable = find_binary(binary)
    except KustomizeError as e:
        raise KustomizeError(where, e.detail, temporary=True) from None
    graph = kustomization_graph(directory, root, strict=False)
    inputs = tuple(filter(None, (_encrypted_input(path, root) for path in graph.files)))
    return _Plan(root=root, where=where, executable=executable, directories=graph.directories, inputs=inputs)


def _encrypted_input(path: Path, root: Path) -> Input | None:
    """`path` as an `Input` when it is SOPS-encrypted; KustomizeError when it is half a SOPS file."""
    where = path.relative_to(root).as_posix()
    try:
        if path.stat().st_size > MAX_OUTPUT_BYTES:
            return None  # kustomize will read it (or refuse it) on its own
        data = path.read_bytes()
    except OSError:
        return None  # kustomize reports files it cannot read
    if is_truncated(data):
        raise KustomizeError(where, TRUNCATED)
    try:
        fmt = encrypted_format(where, data)
    except SopsError as e:
        raise KustomizeError(where, str(e).removeprefix(f"{where}: ")) from None
    return Input(where=where, fmt=fmt, data=data) if fmt else None


async def _kustomize(
    plan: _Plan, target: Path, scratch: Path, timeout: float, tokens: frozenset[str]
) -> bytes:
    """Run ``kustomize build`` on `target` with a private HOME inside `scratch`."""
    home = scratch / "home"
    home.mkdir(mode=0o700)
    argv = [str(plan.executable), "build", "--load-restrictor", "LoadRestrictionsRootOnly", str(target)]
    try:
        returncode, out, err = await _run(argv, environment(home), home, timeout)
    except TimeoutError:
        raise KustomizeError(
            plan.where, f"kustomize build did not finish within {timeout:g}s", temporary=True
        ) from None
    except _TooMuchOutput:
        raise KustomizeError(
            plan.where,
            f"kustomize build printed more than {MAX_OUTPUT_BYTES} bytes; split the sync into several",
        ) from None
    except OSError as e:
        raise KustomizeError(plan.where, f"cannot run {argv[0]}: {e.strerror}", temporary=True) from e
    if returncode != 0:
        text = _stderr_text(err, scratch / "tree", tokens)
        raise KustomizeError(plan.where, f"kustomize build failed: {text}")
    return out


def environment(home: Path) -> dict[str, str]:
    """The whole environment of a kustomize build: nothing of the daemon's but PATH."""
    dead_proxy = "http://127.0.0.1:9"  # the discard port: connecting fails at once
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        # Defence in depth behind check_references: no git transport is allowed
        # ("none" names no protocol), git never prompts, and HTTP(S) goes nowhere.
        "GIT_ALLOW_PROTOCOL": "none",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HTTP_PROXY": dead_proxy,
        "HTTPS_PROXY": dead_proxy,
        "http_proxy": dead_proxy,
        "https_proxy": dead_proxy,
    }


class _TooMuchOutput(Exception):
    """The child printed more than `MAX_OUTPUT_BYTES`."""


async def _run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float) -> tuple[int, bytes, bytes]:
    """Run `argv` to completion; on timeout, cancellation or too much output kill its process group."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
        start_new_session=True,  # its own group, so git or a stuck child dies with it
        preexec_fn=die_with_parent(),  # only prctl, looked up before the fork
    )
    try:
        async with asyncio.timeout(timeout), asyncio.TaskGroup() as group:
            out = group.create_task(_read(process.stdout, MAX_OUTPUT_BYTES), name="kustomize stdout")
            err = group.create_task(_read(process.stderr, _STDERR_READ, keep=True), name="kustomize stderr")
            group.create_task(process.wait(), name="kustomize wait")
    except* _TooMuchOutput:
        raise _TooMuchOutput from None
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            for stream in (process.stdout, process.stderr):  # wait() also waits for the pipes to close
                while stream is not None and await stream.read(_READ_SIZE):
                    pass
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.result(), err.result()


async def _read(stream: asyncio.StreamReader | None, limit: int, *, keep: bool = False) -> bytes:
    """All of `stream`; past `limit` bytes _TooMuchOutput, or with `keep` the first `limit` bytes."""
    if stream is None:
        return b""
    chunks, size = [], 0
    while chunk := await stream.read(_READ_SIZE):
        if size + len(chunk) > limit and not keep:
            raise _TooMuchOutput
        if size < limit:
            chunks.append(chunk[: limit - size])
        size += len(chunk)
    return b"".join(chunks)


def _stderr_text(err: bytes, tree: Path, tokens: frozenset[str]) -> str:
    """kustomize's complaint with repository paths for the private copy's and no plaintext words."""
    text = err.decode("utf-8", errors="replace").strip() or "(no message)"
    text = redact(text.replace(f"{tree}{os.sep}", "").replace(str(tree), "."), tokens)
    return text if len(text) <= _STDERR_LIMIT else text[:_STDERR_LIMIT] + " …(truncated)"
