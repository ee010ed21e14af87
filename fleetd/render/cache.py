"""RenderCache: render once per (revision, path, variables, namespace) and share it across clusters.

Two levels: `fleetd.render.pipeline.load` results per (revision, path) and
`fleetd.render.pipeline.finish` results per full key, each an LRU of `size`
entries. Concurrent callers of one key await the same task, shielded, so a
cancelled caller never cancels the render the others wait for. Results and
permanent RenderErrors are remembered (the same revision gives the same
error); temporary errors, cancellations and unexpected exceptions are
forgotten so the next call retries. Policy checks that do not change the
result (``require_encrypted_secrets``) apply per call, after the cache.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Generic, TypeVar

from fleetd.render import pipeline
from fleetd.render.errors import RenderError
from fleetd.render.kustomize import DEFAULT_TIMEOUT
from fleetd.render.model import ClusterScoped, Decrypt, Loaded, RenderResult
from fleetd.render.pipeline import release
from fleetd.render.plaintext import refuse

DEFAULT_CACHE_SIZE = 256

K = TypeVar("K")
V = TypeVar("V")


class _TaskCache(Generic[K, V]):
    """An LRU of tasks: callers of one key share one task; failures to retry are forgotten.

    The tasks belong to the cache, not to any caller (they outlive a
    cancelled one), so they are created here, named, and forgotten on eviction.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._tasks: OrderedDict[K, asyncio.Task[V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tasks)

    async def get(self, key: K, start: Callable[[], Coroutine[Any, Any, V]], name: str) -> V:
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.create_task(start(), name=name)
            task.add_done_callback(functools.partial(self._settled, key))
            self._tasks[key] = task
            while len(self._tasks) > self._size:
                self._tasks.popitem(last=False)
        else:
            self._tasks.move_to_end(key)
        # shield: a cancelled caller must not cancel the render the others wait for.
        return await asyncio.shield(task)

    def _settled(self, key: K, task: asyncio.Task[V]) -> None:
        error = None if task.cancelled() else task.exception()  # also marks it retrieved
        permanent = isinstance(error, RenderError) and not error.temporary
        if (task.cancelled() or (error is not None and not permanent)) and self._tasks.get(key) is task:
            del self._tasks[key]

    def evict(self, keep: Callable[[K], bool]) -> int:
        stale = [key for key in self._tasks if not keep(key)]
        dropped = [self._tasks.pop(key) for key in stale]
        if dropped:
            _release_in_background(dropped)
        return len(stale)


def _release_in_background(tasks: list[asyncio.Task[Any]]) -> None:
    """Free evicted results in a thread, a slice at a time (millions of objects take a while to free).

    The thread holds the only references left (callers still awaiting a task keep theirs).
    """

    def release_all() -> None:
        items: list[Any] = []
        while tasks:
            task = tasks.pop()
            if task.done() and not task.cancelled() and task.exception() is None:
                items.extend(_parts(task.result()))
            del task
        release(items)

    threading.Thread(target=release_all, name="render-cache-release", daemon=True).start()


def _parts(result: object) -> tuple[Any, ...]:
    if isinstance(result, RenderResult):
        return result.objects
    if isinstance(result, Loaded):
        return result.documents
    return ()


RenderKey = tuple[str, PurePosixPath, frozenset[tuple[str, str]], str | None]


class RenderCache:
    """Render once per (revision, path, variables, namespace); see the module docstring.

    `root` is not part of the key: one revision is one snapshot. The hooks
    of the first caller of a key are the ones used, so callers sharing a key
    must pass equivalent hooks. After changing decryption keys, call `clear`.
    """

    def __init__(self, *, size: int = DEFAULT_CACHE_SIZE) -> None:
        self._loads: _TaskCache[tuple[str, PurePosixPath], Loaded] = _TaskCache(size)
        self._renders: _TaskCache[RenderKey, RenderResult] = _TaskCache(size)

    def __len__(self) -> int:
        """Number of remembered (or in-flight) renders."""
        return len(self._renders)

    async def get(
        self,
        root: Path,
        revision: str,
        path: PurePosixPath,
        variables: Mapping[str, str],
        namespace: str | None,
        *,
        kustomize: str | Path | None = None,
        kustomize_timeout: float = DEFAULT_TIMEOUT,
        cluster_scoped: ClusterScoped | None = None,
        decrypt: Decrypt | None = None,
        require_encrypted_secrets: bool = False,
    ) -> RenderResult:
        """Like `fleetd.render.render`, but shared. Read-only: deep-copy objects before changing them."""
        frozen_vars = dict(variables)  # the caller may change its mapping while we render

        async def start_load() -> Loaded:
            return await pipeline.load(
                root,
                revision,
                path,
                kustomize=kustomize,
                kustomize_timeout=kustomize_timeout,
                decrypt=decrypt,
            )

        async def start_render() -> RenderResult:
            loaded = await self._loads.get((revision, path), start_load, f"load {path}@{revision[:12]}")
            return await asyncio.to_thread(
                pipeline.finish, loaded, frozen_vars, namespace, cluster_scoped=cluster_scoped
            )

        key = (revision, path, frozenset(frozen_vars.items()), namespace)
        result = await self._renders.get(key, start_render, f"render {path}@{revision[:12]}")
        if require_encrypted_secrets:
            refuse(result.plaintext_secrets)
        return result

    def evict_except(self, revision: str) -> int:
        """Forget every entry of another revision; returns how many renders were forgotten.

        In-flight renders of old revisions still finish for the callers awaiting them.
        """
        self._loads.evict(lambda key: key[0] == revision)
        return self._renders.evict(lambda key: key[0] == revision)

    def clear(self) -> None:
        """Forget everything (e.g. after the decryption keys changed)."""
        self._loads.evict(lambda _: False)
        self._renders.evict(lambda _: False)
