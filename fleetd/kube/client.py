"""Kubernetes client: the one module through which kubernetes-asyncio enters fleetd.

fleetd manages arbitrary kinds, so it speaks REST by path (``/api/v1/...``,
``/apis/<group>/<version>/...``) with plain JSON dictionaries instead of the
generated model classes. kubernetes-asyncio contributes what is hard to get
right: kubeconfig loading (contexts, inline or file certificates, tokens,
exec credential plugins with refresh) and its aiohttp connection pool.

Nothing here waits without a deadline. The kubeconfig is first made safe
by `fleetd.kube.kubeconfig` (files it names read without blocking, only the
chosen context kept); an exec credential plugin is run by
`fleetd.kube.credentials` within the cluster's ``credential_timeout`` and
killed when that runs out or the daemon stops — and run again shortly
before the token it gave expires. Every request has a total deadline
(``timeout``, `DEFAULT_TIMEOUT` unless the caller says otherwise); a watch
also ends when the server stays silent for `WATCH_IDLE_TIMEOUT` (a live
API server sends a bookmark every minute), so a spoke that stops answering
shows as unreachable instead of quietly keeping its last state.

Errors are translated here, at the boundary, into fleetd's own tree::

    KubeError                      (any failure talking to one cluster)
    ├── KubeconfigError            kubeconfig missing, unreadable, no such context (permanent)
    │   └── CredentialError        the exec credential plugin failed or did not answer in time
    ├── Unreachable                connection refused, TLS failure, timeout (temporary)
    └── ApiError                   the API server answered with an error status
        ├── Unauthorized           401: the credentials are not accepted (permanent)
        ├── Forbidden              403: RBAC denies fleetd (permanent until RBAC changes)
        ├── NotFound               404 (permanent)
        ├── Conflict               409 (temporary: someone else wrote first)
        ├── Gone                   410: a watch's resourceVersion is too old
        ├── Invalid                422: the object failed validation (permanent)
        ├── TooManyRequests        429: throttled; ``retry_after`` from the Retry-After header
        └── ServerError            5xx: the server failed (temporary)

Every error carries the cluster name so a message can say where it happened.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config import ConfigException, load_kube_config_from_dict
from kubernetes_asyncio.config.kube_config import KubeConfigMerger

from fleetd.errors import FleetdError
from fleetd.kube.credentials import DEFAULT_TIMEOUT as CREDENTIAL_TIMEOUT
from fleetd.kube.credentials import ExecSpec, PluginFailed, RefreshingToken, run_plugin
from fleetd.kube.kubeconfig import Unusable, read_regular, resolve

DEFAULT_TIMEOUT = 30.0
#: A watch that receives nothing (not even a bookmark: a live API server sends one every minute)
#: for this long is ended as unreachable.
WATCH_IDLE_TIMEOUT = 90.0
#: Seconds kubernetes-asyncio may take to build a client from a resolved kubeconfig.
LOAD_TIMEOUT = 30.0


class KubeError(FleetdError):
    """A failure talking to one cluster."""

    def __init__(self, cluster: str, message: str) -> None:
        super().__init__(f"cluster {cluster}: {message}")
        self.cluster = cluster
        self.detail = message


class KubeconfigError(KubeError):
    """The kubeconfig cannot be used (missing file, bad YAML, unknown context)."""


class CredentialError(KubeconfigError):
    """The kubeconfig's exec credential plugin failed, answered nothing usable, or did not answer in time."""

    temporary = True


class Unreachable(KubeError):
    """The API server could not be reached (refused, TLS, timeout); retry later."""

    temporary = True


class ApiError(KubeError):
    """The API server answered with an error status."""

    def __init__(
        self, cluster: str, status: int, reason: str, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(cluster, f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.api_message = message
        self.retry_after = retry_after


class Unauthorized(ApiError):
    """401: the kubeconfig's credentials are not accepted (expired token, wrong certificate)."""


class Forbidden(ApiError):
    """403: RBAC does not allow the request."""


class NotFound(ApiError):
    """404: no such object or resource."""


class Conflict(ApiError):
    """409: conflict (exists already, or a stale resourceVersion)."""

    temporary = True


class Gone(ApiError):
    """410: the requested resourceVersion is too old."""


class Invalid(ApiError):
    """422: the object failed validation."""


class TooManyRequests(ApiError):
    """429: the server throttles fleetd; ``retry_after`` says for how long, when it said."""

    temporary = True


class ServerError(ApiError):
    """5xx: the API server (or something behind it, such as etcd or a webhook) failed."""

    temporary = True


_BY_STATUS: dict[int, type[ApiError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Invalid,
    429: TooManyRequests,
}
#: Longest Retry-After honoured (seconds): a hostile or broken server cannot park a cluster for days.
MAX_RETRY_AFTER = 300.0
_TRANSIENT = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError, ssl.SSLError)


def api_error(cluster: str, status: int, body: bytes, retry_after: str | None = None) -> ApiError:
    """Build the right :class:`ApiError` from a response status, its ``Status`` body and Retry-After."""
    reason, message = "", body.decode(errors="replace")[:500]
    try:
        status_obj = json.loads(body)
        reason, message = str(status_obj.get("reason", "")), str(status_obj.get("message", message))[:2000]
    except (ValueError, AttributeError, TypeError):
        pass
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return kind(cluster, status, reason or "Error", message, retry_after=_seconds(retry_after))


def _seconds(retry_after: str | None) -> float | None:
    """Retry-After in seconds (only the delta-seconds form), bounded by `MAX_RETRY_AFTER`."""
    try:
        value = float(retry_after) if retry_after else None
    except ValueError:
        return None
    return None if value is None or value != value or value < 0 else min(value, MAX_RETRY_AFTER)


class KubeClient:
    """A connection to one cluster. Use :func:`connect`; close with :meth:`close`."""

    def __init__(
        self,
        cluster: str,
        api: ApiClient,
        *,
        requests: Counter[str] | None = None,
        errors: Counter[str] | None = None,
    ) -> None:
        self.cluster = cluster
        self._api = api
        #: Requests sent, by HTTP method (for metrics and benchmarks). The caller may hand in the
        #: counter it keeps (the fleet state), so counts survive reconnections without being copied.
        self.requests: Counter[str] = Counter() if requests is None else requests
        #: Failed requests by kind: unreachable, unauthorized, forbidden, throttled, server (5xx), other.
        self.errors: Counter[str] = Counter() if errors is None else errors

    @property
    def server(self) -> str:
        return str(self._api.configuration.host)

    async def close(self) -> None:
        await self._api.close()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Any:
        """Send one request and return the decoded JSON body; raise a :class:`KubeError` on failure."""
        params = list(query.items()) if isinstance(query, Mapping) else list(query or [])
        headers = {"Accept": accept, "Content-Type": content_type}
        self.requests[method] += 1
        try:
            resp = await self._api.call_api(
                path,
                method,
                query_params=params,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout,
            )
            async with resp:
                raw = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except _TRANSIENT as exc:
            self.errors["unreachable"] += 1
            raise Unreachable(self.cluster, _describe(exc, self.server)) from exc
        except (ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
            # Credentials are loaded lazily: an exec plugin that fails or a token file that vanished.
            self.errors["unauthorized"] += 1
            raise KubeconfigError(self.cluster, f"cannot authenticate to {self.server}: {exc}") from exc
        if not 200 <= status <= 299:
            self._count_error(status)
            raise api_error(self.cluster, status, raw, retry_after)
        return _decode(self.cluster, raw)

    def _count_error(self, status: int) -> None:
        kind = {401: "unauthorized", 403: "forbidden", 429: "throttled"}.get(status)
        if kind is not None:
            self.errors[kind] += 1
        elif status >= 500:
            self.errors["server"] += 1
        elif status not in (404, 409, 410):  # answers, not failures: absent, conflict, expired watch
            self.errors["other"] += 1

    async def watch(
        self, path: str, *, query: Sequence[tuple[str, str]], timeout: float,
        idle_timeout: float = WATCH_IDLE_TIMEOUT,
    ) -> AsyncIterator[dict[str, Any]]:  # fmt: skip
        """Stream the events of one watch request (``watch=1`` is added) until the server ends it.

        Yields decoded event objects (``{"type": ..., "object": ...}``). An
        ``ERROR`` event with code 410 raises :class:`Gone`; other failures
        raise like :meth:`request`, and so does a server silent for ``idle_timeout`` seconds.
        """
        params = [*query, ("watch", "1")]
        self.requests["WATCH"] += 1
        deadline = aiohttp.ClientTimeout(total=timeout, sock_read=idle_timeout)
        try:
            resp = await self._api.call_api(
                path, "GET", query_params=params, header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"], _preload_content=False, _request_timeout=deadline,
            )  # fmt: skip
            async with resp:
                if not 200 <= resp.status <= 299:
                    self._count_error(resp.status)
                    raise api_error(
                        self.cluster, resp.status, await resp.read(), resp.headers.get("Retry-After")
                    )
                async for event in _json_lines(self.cluster, resp.content):
                    if event.get("type") == "ERROR":
                        raise _watch_error(self.cluster, event.get("object") or {})
                    yield event
        except _TRANSIENT as exc:
            self.errors["unreachable"] += 1
            raise Unreachable(self.cluster, _describe(exc, self.server)) from exc

    async def version(self) -> dict[str, Any]:
        """The server's ``/version`` document (gitVersion, platform, ...)."""
        result: dict[str, Any] = await self.request("GET", "/version", timeout=10.0)
        return result

    async def can_i(self, verb: str, group: str, resource: str, namespace: str | None = None) -> bool:
        """Ask the server (SelfSubjectAccessReview) whether this client may do ``verb`` on ``resource``."""
        attrs: dict[str, str] = {"verb": verb, "group": group, "resource": resource}
        if namespace:
            attrs["namespace"] = namespace
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attrs},
        }
        path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
        result = await self.request("POST", path, body=review, timeout=10.0)
        return bool(result.get("status", {}).get("allowed", False))


def _decode(cluster: str, raw: bytes) -> Any:
    """A response body as JSON; a server answering 2xx with something else is an error of its own."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise ServerError(cluster, 200, "BadResponse", f"the answer is not JSON: {raw[:80]!r}") from None


def _event(cluster: str, line: bytes) -> dict[str, Any]:
    event = _decode(cluster, line)
    if not isinstance(event, dict):
        raise ServerError(cluster, 200, "BadResponse", f"a watch event is not an object: {line[:80]!r}")
    return event


async def _json_lines(cluster: str, stream: aiohttp.StreamReader) -> AsyncIterator[dict[str, Any]]:
    """Decode newline-delimited JSON of any line length (watch events can be large)."""
    buffer = b""
    async for chunk in stream.iter_any():
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield _event(cluster, line)
    if buffer.strip():
        yield _event(cluster, buffer)


def _watch_error(cluster: str, status: dict[str, Any]) -> ApiError:
    code = int(status.get("code") or 500)
    return api_error(cluster, code, json.dumps(status).encode())


def _describe(exc: BaseException, server: str) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return f"no answer from {server} in time"
    if isinstance(exc, ssl.SSLError | aiohttp.ClientSSLError):
        return f"TLS failure talking to {server}: {exc} (check the kubeconfig's CA and server address)"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {server}: {exc.os_error.strerror or exc}"
    return f"connection to {server} failed: {exc}"


async def connect(
    cluster: str,
    kubeconfig: Path,
    context: str | None = None,
    *,
    requests: Counter[str] | None = None,
    errors: Counter[str] | None = None,
    credential_timeout: float = CREDENTIAL_TIMEOUT,
) -> KubeClient:
    """Load ``kubeconfig`` (optionally a named ``context``) and return a client for ``cluster``.

    Nothing is sent to the cluster yet, but an exec credential plugin runs
    now (within ``credential_timeout`` seconds). A bad kubeconfig raises
    :class:`KubeconfigError`, a failed plugin :class:`CredentialError`.
    ``requests``/``errors``: counters to count into (see `KubeClient`);
    plugin failures count as ``errors["credentials"]``.
    """
    if not kubeconfig.is_file():  # noqa: ASYNC240 - one stat(); the kubeconfig is read synchronously next
        raise KubeconfigError(cluster, f"kubeconfig {kubeconfig} does not exist or is not a file")
    where = f"kubeconfig {kubeconfig}" + (f" (context {context})" if context else "")
    try:
        resolved = resolve(_parse(kubeconfig), context=context, base=kubeconfig.parent)
    except Unusable as exc:
        raise KubeconfigError(cluster, f"cannot use {where}: {exc}") from exc
    counted: Counter[str] = Counter() if errors is None else errors
    refresher = None
    if resolved.exec is not None:
        credential = await _plugin(cluster, resolved.exec, credential_timeout, counted)
        resolved.with_credential(credential)
        if credential.token is not None and credential.expires is not None:
            refresher = RefreshingToken(resolved.exec, credential, credential_timeout)
    config = Configuration()
    try:
        async with asyncio.timeout(LOAD_TIMEOUT):
            await load_kube_config_from_dict(
                config_dict=resolved.config, context=resolved.context, client_configuration=config
            )
    except Exception as exc:
        raise KubeconfigError(cluster, f"cannot use {where}: {type(exc).__name__}: {exc}") from exc
    client = KubeClient(cluster, ApiClient(configuration=config), requests=requests, errors=counted)
    if refresher is not None:
        config.refresh_api_key_hook = _renew(cluster, refresher, counted)
    return client


def _parse(kubeconfig: Path) -> object:
    """The kubeconfig's YAML document; `Unusable` unless it is a readable regular file of sane size."""
    read_regular(kubeconfig, "kubeconfig")  # a FIFO, device or huge file is refused before parsing
    try:
        merger = KubeConfigMerger(str(kubeconfig))
    except Exception as exc:
        raise Unusable(f"{type(exc).__name__}: {exc}") from exc
    if str(kubeconfig) not in merger.config_files:
        raise Unusable("the path cannot be read as one file (does it contain ':'?)")
    return merger.config_files[str(kubeconfig)]


async def _plugin(cluster: str, spec: ExecSpec, timeout: float, errors: Counter[str]) -> Any:
    try:
        return await run_plugin(spec, timeout)
    except PluginFailed as exc:
        errors["credentials"] += 1
        raise CredentialError(cluster, str(exc)) from exc


def _renew(cluster: str, token: RefreshingToken, errors: Counter[str]) -> Any:
    """The hook kubernetes-asyncio calls before every request: renew the plugin's token when due."""

    async def hook(config: Configuration) -> None:
        try:
            config.api_key["BearerToken"] = await token.header()
        except PluginFailed as exc:
            errors["credentials"] += 1
            raise CredentialError(cluster, str(exc)) from exc

    return hook
