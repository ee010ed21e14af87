"""Make a kubeconfig safe to hand to kubernetes-asyncio: one context, every file read here, exec split off.

kubernetes-asyncio opens the files a kubeconfig names (``tokenFile``,
``certificate-authority``, ``client-certificate``, ``client-key``) with a
plain ``open()``, which blocks the event loop for ever on a FIFO, and runs
an ``exec`` credential plugin with no deadline. So before it sees a
kubeconfig, `resolve` rewrites it:

* only the chosen context (the one asked for, else ``current-context``),
  its cluster and its user are kept;
* every file named is read here by `read_regular` — regular files only
  (opened non-blocking, so a FIFO is refused instead of waited on), at most
  `MAX_FILE` bytes — and inlined as its ``*-data`` form (data already
  present wins, as in kubectl); relative paths are relative to the
  kubeconfig's directory;
* an ``exec`` section is taken out and described as an `ExecSpec`; the
  caller runs it (`fleetd.kube.credentials`, with a deadline) and inlines
  the answer with `with_credential`.

Everything wrong is an `Unusable` with a message naming the key and file.
Pure apart from reading those files; no kubernetes-asyncio, no subprocess.
"""

from __future__ import annotations

import base64
import copy
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetd.kube.credentials import ExecCredential, ExecSpec

#: Largest kubeconfig, or file a kubeconfig names, that is read (bytes).
MAX_FILE = 4 * 1024 * 1024
_CLUSTER_FILES = {"certificate-authority": "certificate-authority-data"}
_USER_FILES = {"client-certificate": "client-certificate-data", "client-key": "client-key-data"}


class Unusable(ValueError):
    """The kubeconfig cannot be used as it is; the message says why."""


@dataclass(slots=True)
class Resolved:
    """A single-context kubeconfig with nothing left to read, and the plugin to run, if any."""

    context: str
    config: dict[str, Any]
    exec: ExecSpec | None = None
    user: dict[str, Any] = field(default_factory=dict)

    def with_credential(self, credential: ExecCredential) -> None:
        """Inline what the exec plugin answered (a token, or a client certificate and key)."""
        if credential.token is not None:
            self.user["token"] = credential.token
        else:
            assert credential.certificate is not None
            assert credential.key is not None
            self.user["client-certificate-data"] = _b64(credential.certificate.encode())
            self.user["client-key-data"] = _b64(credential.key.encode())


def read_regular(path: Path, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `MAX_FILE` bytes; `Unusable` otherwise (never blocks)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise Unusable(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Unusable(f"the {what} {path} is not a regular file")
        if info.st_size > MAX_FILE:
            raise Unusable(f"the {what} {path} is larger than {MAX_FILE // (1024 * 1024)} MiB")
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_FILE:
                raise Unusable(f"the {what} {path} is larger than {MAX_FILE // (1024 * 1024)} MiB")
        return b"".join(chunks)
    except OSError as exc:
        raise Unusable(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def resolve(doc: object, *, context: str | None, base: Path) -> Resolved:
    """The parsed kubeconfig ``doc`` reduced to ``context``, files inlined, exec split off."""
    if not isinstance(doc, Mapping):
        raise Unusable("it is not a YAML mapping (a kubeconfig starts with apiVersion, kind, clusters, ...)")
    name = context if context is not None else doc.get("current-context")
    if not isinstance(name, str) or not name:
        raise Unusable("it has no current-context; name one with [cluster].context")
    entry = _named(doc, "contexts", name, "context")
    cluster = _named(doc, "clusters", _text(entry, "cluster", f"context {name}"), "cluster")
    user_name = entry.get("user")
    user = _named(doc, "users", user_name, "user") if user_name else {}
    server: dict[str, Any] = copy.deepcopy(dict(cluster))
    person: dict[str, Any] = copy.deepcopy(dict(user))
    _inline(server, _CLUSTER_FILES, base, f"cluster {entry['cluster']}")
    _inline(person, _USER_FILES, base, f"user {user_name}")
    if "tokenFile" in person and "token" not in person:
        token = read_regular(_path(base, person.pop("tokenFile"), "tokenFile"), "tokenFile")
        person["token"] = token.decode(errors="replace").strip()
    person.pop("tokenFile", None)
    spec = None
    if "exec" in person:
        spec = _exec_spec(person.pop("exec"), base, server, f"user {user_name}")
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": name,
        "contexts": [{"name": name, "context": dict(entry)}],
        "clusters": [{"name": entry["cluster"], "cluster": server}],
        "users": [{"name": user_name, "user": person}] if user_name else [],
    }  # fmt: skip
    return Resolved(context=name, config=config, exec=spec, user=person)


def _named(doc: Mapping[str, Any], section: str, name: object, key: str) -> Mapping[str, Any]:
    items = doc.get(section) or []
    if not isinstance(items, list):
        raise Unusable(f"{section} is not a list")
    for item in items:
        if isinstance(item, Mapping) and item.get("name") == name:
            value = item.get(key)
            if not isinstance(value, Mapping):
                raise Unusable(f"{section} entry {name!r} has no {key} mapping")
            return value
    known = ", ".join(str(i.get("name")) for i in items if isinstance(i, Mapping)) or "none"
    raise Unusable(f"no {key} named {name!r} in {section} (it has: {known})")


def _text(table: Mapping[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise Unusable(f"{where} has no {key}")
    return value


def _path(base: Path, value: object, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise Unusable(f"{key} is not a path")
    return base / Path(value).expanduser()


def _inline(table: dict[str, Any], files: Mapping[str, str], base: Path, where: str) -> None:
    for file_key, data_key in files.items():
        if file_key not in table:
            continue
        path = _path(base, table.pop(file_key), f"{where}: {file_key}")
        if not table.get(data_key):
            table[data_key] = _b64(read_regular(path, f"{file_key} of the {where}"))


def _exec_spec(raw: object, base: Path, cluster: Mapping[str, Any], where: str) -> ExecSpec:
    if not isinstance(raw, Mapping):
        raise Unusable(f"{where}: exec is not a mapping")
    command = _text(raw, "command", f"{where}: exec")
    api_version = _text(raw, "apiVersion", f"{where}: exec")
    args = raw.get("args") or []
    env = raw.get("env") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise Unusable(f"{where}: exec.args is not a list of strings")
    if not isinstance(env, list) or not all(
        isinstance(e, Mapping) and isinstance(e.get("name"), str) and isinstance(e.get("value"), str)
        for e in env
    ):
        raise Unusable(f"{where}: exec.env is not a list of {{name, value}} strings")
    if "/" in command and not Path(command).is_absolute():  # as kubectl: relative to the kubeconfig
        command = str(base / command)
    info = None
    if raw.get("provideClusterInfo"):  # ExecCredential's spec.cluster, in its own (camelCase) names
        info = {_CLUSTER_INFO_KEYS[k]: v for k, v in cluster.items() if k in _CLUSTER_INFO_KEYS}
        for ext in cluster.get("extensions") or []:
            if isinstance(ext, Mapping) and ext.get("name") == "client.authentication.k8s.io/exec":
                info["config"] = ext.get("extension")
    return ExecSpec(
        argv=(command, *args), env={e["name"]: e["value"] for e in env}, api_version=api_version,
        interactive_mode=str(raw.get("interactiveMode") or "IfAvailable"),
        install_hint=str(raw.get("installHint") or ""), cluster_info=info,
    )  # fmt: skip


_CLUSTER_INFO_KEYS = {
    "server": "server",
    "tls-server-name": "tlsServerName",
    "insecure-skip-tls-verify": "insecureSkipTLSVerify",
    "certificate-authority-data": "certificateAuthorityData",
    "proxy-url": "proxyURL",
}


def _b64(data: bytes) -> str:
    return base64.standard_b64encode(data).decode()
