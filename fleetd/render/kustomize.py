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
  past the check below still cannot fetch anything;
- before the build, the kustomization graph is read and remote references
  (``https://``, ``git@``, ``github.com/...?ref=``) are refused with a
  message saying to vendor them, as are references that leave the
  repository (``../../..`` or a symbolic link out of it) — kustomize's load
  restrictor confines files to each kustomization's root, but lets a
  ``resources`` directory point anywhere;
- a timeout (default 60 s); on expiry the whole process group is killed.

Errors are raised as `KustomizeError`; `fleetd.render.manifests` turns them into
`RenderError`. Failures that may pass on their own (timeout, binary missing
or not executable) are marked ``temporary`` so they are retried rather than
remembered for the revision.

SOPS-encrypted inputs
    kustomize cannot read SOPS files, and decrypting its *output* does not
    work either: kustomize sorts keys and adds namespaces, labels and name
    prefixes, which breaks the MAC sops computed over the file. So every file
    the kustomization graph reads (resources, patches, ``secretGenerator``
    and ``configMapGenerator`` ``files``/``envs``, …) whose content carries
    SOPS metadata is decrypted *before* the build, into a private copy:

    1. ``tempfile.mkdtemp`` (mode 0700, under ``$TMPDIR``, outside the
       snapshot) receives the kustomization directories of the graph, at
       their paths relative to the repository root, so ``../base`` still
       resolves; symbolic links are copied as links, never followed;
    2. each encrypted file is replaced there by its plaintext (mode 0600),
       from the caller's ``decrypt`` hook — in a worker thread;
    3. kustomize builds the copy (its messages name repository paths, not
       the copy, and words of the plaintext are redacted from them);
    4. the copy is deleted in a ``finally``: after success, failure, timeout
       or cancellation. A cancelled build may leave the copying thread
       running; it deletes the copy itself when it notices.

    Without encrypted inputs nothing is copied and kustomize reads the
    snapshot directly. A file with ``ENC[…]`` values but no sops metadata
    (truncated) is refused, so ciphertext is never applied as a value.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fleetd.errors import FleetdError
from fleetd.secrets.scan import (
    NO_KEYS,
    TRUNCATED,
    encrypted_format,
    failure_text,
    is_truncated,
    plaintext_tokens,
    redact,
)
from fleetd.secrets.sops import Format, SopsError

log = logging.getLogger(__name__)

Decrypt = Callable[[bytes, str], bytes]
"""``(encrypted bytes, SOPS format) -> plaintext``; raises a FleetdError when it cannot decrypt."""

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
DEFAULT_TIMEOUT = 60.0
"""Seconds one ``kustomize build`` may take."""
BINARY_ENV = "FLEETD_KUSTOMIZE"
"""Environment variable naming the kustomize binary (a path or a name on PATH)."""

_STDERR_LIMIT = 4000
# Fields whose entries may name another kustomization (directory) or file.
_ENTRY_FIELDS = (
    "resources",
    "bases",
    "components",
    "crds",
    "configurations",
    "generators",
    "transformers",
    "validators",
    "patchesStrategicMerge",
)
_DIRECTORY_FIELDS = frozenset({"resources", "bases", "components"})
_PATH_FIELDS = ("patches", "patchesJson6902", "replacements")
_GENERATOR_FIELDS = ("configMapGenerator", "secretGenerator")
_REMOTE_PREFIXES = ("git@", "git::", "github.com/", "gitlab.com/", "bitbucket.org/")
_REMOTE_MARKERS = ("://", "?ref=", "?version=", "?timeout=", "?submodules=")


class KustomizeError(FleetdError):
    """``kustomize build`` of one directory failed or was refused."""

    def __init__(self, directory: str | None, detail: str, *, temporary: bool = False) -> None:
        self.directory = directory
        """The kustomization directory relative to the repository root; None if not about one."""
        self.detail = detail
        """What went wrong and what to do, without the directory."""
        self.temporary = temporary
        """True when retrying the same revision may succeed (timeout, missing binary)."""
        super().__init__(f"{directory}: {detail}" if directory else detail)


def kustomization_file(directory: Path) -> Path | None:
    """The kustomization file of `directory`, or None when it is a plain directory."""
    for name in KUSTOMIZATION_FILES:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


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


@dataclass(frozen=True, slots=True)
class Graph:
    """What one build reads: its kustomization directories and the local files they name."""

    directories: tuple[Path, ...]
    """Every kustomization directory of the graph, resolved, the built one first."""
    files: tuple[Path, ...]
    """Every existing file an entry names (resources, patches, generator inputs, …), as kustomize
    opens it: under its kustomization's directory, symbolic links not resolved."""


def check_references(directory: Path, root: Path) -> None:
    """Refuse remote references and references leaving `root`, in the whole kustomization graph.

    `directory` holds a kustomization; `root` is the repository root (resolved).
    Kustomizations that do not parse are left for kustomize to report.
    """
    kustomization_graph(directory, root, strict=True)


def kustomization_graph(directory: Path, root: Path, *, strict: bool = True) -> Graph:
    """The kustomizations and files a build of `directory` reads (see `check_references`).

    With ``strict=False`` remote references and references leaving `root` are
    skipped instead of refused (for callers that only look, like ``fleetd check``).
    """
    pending, seen, files = [directory.resolve()], dict[Path, None](), dict[Path, None]()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen[current] = None
        for field, target, opened in _referenced(current, root, strict):
            if field in _DIRECTORY_FIELDS and target.is_dir():
                pending.append(target)
            elif target.is_file():
                files[opened] = None
    return Graph(directories=tuple(seen), files=tuple(files))


def _referenced(directory: Path, root: Path, strict: bool) -> Iterator[tuple[str, Path, Path]]:
    """(field, resolved target, path as opened) of every local entry of `directory`'s kustomization."""
    kfile = kustomization_file(directory)
    content = _read_kustomization(kfile) if kfile else None
    if kfile is None or content is None:
        return
    where = kfile.relative_to(root).as_posix()
    for field, reference in _references(content):
        try:
            target = _check_reference(where, field, reference, directory, root)
        except KustomizeError:
            if strict:
                raise
            continue
        opened = Path(os.path.normpath(directory / _local(field, reference)))
        if opened.is_relative_to(root):
            yield field, target, opened


def _read_kustomization(kfile: Path) -> dict[str, Any] | None:
    try:
        content = yaml.safe_load(kfile.read_bytes())
    except (OSError, yaml.YAMLError):
        return None
    return content if isinstance(content, dict) else None


def _references(content: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(field, reference) for every entry of `content` that names a file, directory or URL."""
    for field in _ENTRY_FIELDS:
        for entry in _as_list(content.get(field)):
            if isinstance(entry, str) and "\n" not in entry:  # multi-line entries are inline YAML
                yield field, entry
    for field in _PATH_FIELDS:
        for entry in _as_list(content.get(field)):
            if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                yield field, entry["path"]
    for field in _GENERATOR_FIELDS:
        for generator in _as_list(content.get(field)):
            if isinstance(generator, dict):
                sources = [*_as_list(generator.get("files")), *_as_list(generator.get("envs"))]
                sources.append(generator.get("env"))
                yield from ((field, s) for s in sources if isinstance(s, str))
    openapi = content.get("openapi")
    if isinstance(openapi, dict) and isinstance(openapi.get("path"), str):
        yield "openapi", openapi["path"]


def _as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _check_reference(where: str, field: str, reference: str, directory: Path, root: Path) -> Path:
    """The local target of `reference`; KustomizeError if it is remote or outside `root`."""
    if is_remote(reference):
        raise KustomizeError(
            where,
            f"{field} entry {reference!r} is a remote reference; fleetd renders without network "
            "access — vendor it into the repository and refer to it by a relative path",
        )
    local = _local(field, reference)
    target = (directory / local).resolve()
    if Path(local).is_absolute() or not target.is_relative_to(root):
        raise KustomizeError(
            where,
            f"{field} entry {reference!r} points outside the repository; "
            "refer only to files and directories of the same repository",
        )
    return target


def _local(field: str, reference: str) -> str:
    """The path of an entry: a generator's ``key=path`` names its file after the ``=``."""
    return reference.split("=", 1)[-1] if field in _GENERATOR_FIELDS else reference


def is_remote(reference: str) -> bool:
    """Whether a kustomization entry names something kustomize would fetch over the network."""
    return reference.startswith(_REMOTE_PREFIXES) or any(m in reference for m in _REMOTE_MARKERS)


async def build(
    directory: Path,
    *,
    root: Path,
    binary: str | Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    decrypt: Decrypt | None = None,
) -> str:
    """The multi-document YAML ``kustomize build`` prints for `directory` inside repository `root`.

    SOPS-encrypted inputs are decrypted with `decrypt` into a private copy
    first (see the module docstring); without `decrypt` they are an error.
    """
    plan = await asyncio.to_thread(_prepare, directory, root, binary)
    if plan.inputs and decrypt is None:
        raise KustomizeError(plan.inputs[0].where, NO_KEYS)
    scratch = Path(tempfile.mkdtemp(prefix="fleetd-kustomize-"))  # mode 0700
    abandoned = threading.Event()
    try:
        target, tokens = directory, frozenset[str]()
        if decrypt is not None and plan.inputs:
            target, tokens = await asyncio.to_thread(_private_copy, plan, scratch, decrypt, abandoned)
        return await _kustomize(plan, target, scratch, timeout, tokens)
    finally:
        abandoned.set()  # a copying thread still running deletes what it writes after this
        _remove(scratch)


@dataclass(frozen=True, slots=True)
class _Input:
    """A SOPS-encrypted file the build reads."""

    where: str
    """Relative to the repository root: for messages and for its place in the private copy."""
    fmt: Format
    data: bytes


@dataclass(frozen=True, slots=True)
class _Plan:
    """What `_prepare` found out before the build."""

    root: Path
    where: str
    """The built directory relative to `root`."""
    executable: Path
    directories: tuple[Path, ...]
    inputs: tuple[_Input, ...]


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


def _encrypted_input(path: Path, root: Path) -> _Input | None:
    """`path` as an `_Input` when it is SOPS-encrypted; KustomizeError when it is half a SOPS file."""
    where = path.relative_to(root).as_posix()
    try:
        data = path.read_bytes()
    except OSError:
        return None  # kustomize reports files it cannot read
    if is_truncated(data):
        raise KustomizeError(where, TRUNCATED)
    try:
        fmt = encrypted_format(where, data)
    except SopsError as e:
        raise KustomizeError(where, str(e).removeprefix(f"{where}: ")) from None
    return _Input(where=where, fmt=fmt, data=data) if fmt else None


async def _kustomize(plan: _Plan, target: Path, scratch: Path, timeout: float, tokens: frozenset[str]) -> str:
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
    except OSError as e:
        raise KustomizeError(plan.where, f"cannot run {argv[0]}: {e.strerror}", temporary=True) from e
    if returncode != 0:
        text = _stderr_text(err, scratch / "tree", tokens)
        raise KustomizeError(plan.where, f"kustomize build failed: {text}")
    return out.decode("utf-8", errors="replace")


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


async def _run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float) -> tuple[int, bytes, bytes]:
    """Run `argv` to completion; on timeout or cancellation kill its whole process group."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
        start_new_session=True,  # its own group, so git or a stuck child dies with it
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
            returncode = await process.wait()
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    return returncode, out, err


def _stderr_text(err: bytes, tree: Path, tokens: frozenset[str]) -> str:
    """kustomize's complaint with repository paths for the private copy's and no plaintext words."""
    text = err.decode("utf-8", errors="replace").strip() or "(no message)"
    text = redact(text.replace(f"{tree}{os.sep}", "").replace(str(tree), "."), tokens)
    return text if len(text) <= _STDERR_LIMIT else text[:_STDERR_LIMIT] + " …(truncated)"


# --- the private copy for encrypted inputs ----------------------------------------------------


def _private_copy(
    plan: _Plan, scratch: Path, decrypt: Decrypt, abandoned: threading.Event
) -> tuple[Path, frozenset[str]]:
    """Copy the graph's directories into ``scratch/tree``, decrypt the inputs there (a worker thread).

    Returns the directory to build and the plaintext's words (for `redact`).
    When the caller gave up meanwhile (`abandoned`), deletes `scratch` itself.
    """
    tree, tokens = scratch / "tree", set[str]()
    try:
        for directory in _outermost(plan.directories):
            _copy_directory(directory, tree / directory.relative_to(plan.root), abandoned)
        for item in plan.inputs:
            if abandoned.is_set():
                break
            plain = _plaintext(item, decrypt)
            _write_private(tree / item.where, plain)
            tokens |= plaintext_tokens(plain, item.data)
    finally:
        if abandoned.is_set():
            _remove(scratch)
    return tree / plan.where, frozenset(tokens)


def _plaintext(item: _Input, decrypt: Decrypt) -> bytes:
    try:
        return decrypt(item.data, item.fmt)
    except FleetdError as e:
        raise KustomizeError(item.where, f"cannot decrypt: {failure_text(e)}") from e


def _outermost(directories: tuple[Path, ...]) -> list[Path]:
    """`directories` without those inside another of them (copying the outer one copies them)."""
    kept: list[Path] = []
    for directory in sorted(directories, key=lambda d: len(d.parts)):
        if not any(directory.is_relative_to(outer) for outer in kept):
            kept.append(directory)
    return kept


def _copy_directory(source: Path, target: Path, abandoned: threading.Event) -> None:
    """Copy regular files and directories; symbolic links stay links (never followed)."""
    for current, dirs, files in os.walk(source):
        if abandoned.is_set():
            return
        here = target / Path(current).relative_to(source)
        here.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name in [*dirs, *files]:
            entry = Path(current, name)
            if entry.is_symlink():
                (here / name).symlink_to(entry.readlink())
            elif name in files and entry.is_file():
                shutil.copyfile(entry, here / name)


def _write_private(path: Path, data: bytes) -> None:
    """Replace the copy (or link) at `path` by a new file only the owner can read."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _remove(scratch: Path) -> None:
    shutil.rmtree(scratch, ignore_errors=True)
    if scratch.exists():  # only a copying thread racing us; it removes the rest when it ends
        log.debug("private kustomize copy %s not yet fully removed; its copying thread will", scratch)
