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

Errors are raised as `KustomizeError`; `fleetd.render` turns them into
`RenderError`. Failures that may pass on their own (timeout, binary missing
or not executable) are marked ``temporary`` so they are retried rather than
remembered for the revision.

SOPS-encrypted *generator inputs* (``secretGenerator`` files) would need a
private decrypted copy of the tree before the build; that is not done yet,
so such inputs reach the output still encrypted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from fleetd.errors import FleetdError

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
    """The kustomize to run: `explicit`, else ``$FLEETD_KUSTOMIZE``, else PATH, else the test bed's.

    A value with a slash is a path, one without is looked up on PATH. The test
    bed is imported only when nothing else is found, so a production install
    never depends on it. Raises a temporary `KustomizeError` without a directory.
    """
    wanted = str(explicit) if explicit else os.environ.get(BINARY_ENV)
    if wanted:
        found = wanted if os.sep in wanted else shutil.which(wanted)
        if found is None:
            raise KustomizeError(None, f"kustomize binary {wanted!r} not found on PATH", temporary=True)
        return Path(found)
    on_path = shutil.which("kustomize")
    return Path(on_path) if on_path else _testbed_binary()


def _testbed_binary() -> Path:
    missing = KustomizeError(
        None, f"kustomize not found: install it on PATH or set ${BINARY_ENV}", temporary=True
    )
    try:
        from fleetd.testbed.build import toolset  # lazily: development only
    except ImportError:
        raise missing from None
    path = toolset().path("kustomize")
    if not path.is_file():
        raise missing
    return path


def check_references(directory: Path, root: Path) -> None:
    """Refuse remote references and references leaving `root`, in the whole kustomization graph.

    `directory` holds a kustomization; `root` is the repository root (resolved).
    Kustomizations that do not parse are left for kustomize to report.
    """
    pending, seen = [directory.resolve()], set[Path]()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        pending.extend(_referenced_kustomizations(current, root))


def _referenced_kustomizations(directory: Path, root: Path) -> Iterator[Path]:
    kfile = kustomization_file(directory)
    content = _read_kustomization(kfile) if kfile else None
    if kfile is None or content is None:
        return
    where = kfile.relative_to(root).as_posix()
    for field, reference in _references(content):
        target = _check_reference(where, field, reference, directory, root)
        if field in _DIRECTORY_FIELDS and target.is_dir():
            yield target


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
    local = reference.split("=", 1)[-1] if field in _GENERATOR_FIELDS else reference
    target = (directory / local).resolve()
    if Path(local).is_absolute() or not target.is_relative_to(root):
        raise KustomizeError(
            where,
            f"{field} entry {reference!r} points outside the repository; "
            "refer only to files and directories of the same repository",
        )
    return target


def is_remote(reference: str) -> bool:
    """Whether a kustomization entry names something kustomize would fetch over the network."""
    return reference.startswith(_REMOTE_PREFIXES) or any(m in reference for m in _REMOTE_MARKERS)


async def build(
    directory: Path,
    *,
    root: Path,
    binary: str | Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """The multi-document YAML ``kustomize build`` prints for `directory` inside repository `root`."""
    where, argv = await asyncio.to_thread(_prepare, directory, root, binary)
    with tempfile.TemporaryDirectory(prefix="fleetd-kustomize-") as home:
        try:
            returncode, out, err = await _run(argv, environment(Path(home)), Path(home), timeout)
        except TimeoutError:
            raise KustomizeError(
                where, f"kustomize build did not finish within {timeout:g}s", temporary=True
            ) from None
        except OSError as e:
            raise KustomizeError(where, f"cannot run {argv[0]}: {e.strerror}", temporary=True) from e
    if returncode != 0:
        raise KustomizeError(where, f"kustomize build failed: {_stderr_text(err)}")
    return out.decode("utf-8", errors="replace")


def _prepare(directory: Path, root: Path, binary: str | Path | None) -> tuple[str, list[str]]:
    """Check the kustomization graph and find the binary: (directory for messages, argv)."""
    root = root.resolve()
    where = directory.resolve().relative_to(root).as_posix()
    check_references(directory, root)
    try:
        executable = find_binary(binary)
    except KustomizeError as e:
        raise KustomizeError(where, e.detail, temporary=True) from None
    return where, [str(executable), "build", "--load-restrictor", "LoadRestrictionsRootOnly", str(directory)]


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


def _stderr_text(err: bytes) -> str:
    text = err.decode("utf-8", errors="replace").strip() or "(no message)"
    return text if len(text) <= _STDERR_LIMIT else text[:_STDERR_LIMIT] + " …(truncated)"
