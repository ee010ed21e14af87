"""A kubeconfig is made safe before use: one context, named files read here without blocking, exec split off.

Files a kubeconfig names that would block an ``open()`` for ever (a FIFO)
or are not files at all are a clear per-cluster error, raised at once.
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from typing import Any

import pytest

from fleetd.kube.client import KubeconfigError, connect
from fleetd.kube.kubeconfig import MAX_FILE, Unusable, read_regular, resolve

pytestmark = pytest.mark.timeout(20)


def kubeconfig(user: dict[str, Any], cluster: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "main",
        "contexts": [{"name": "main", "context": {"cluster": "c", "user": "u"}},
                     {"name": "other", "context": {"cluster": "c2", "user": "u"}}],
        "clusters": [{"name": "c", "cluster": cluster or {"server": "https://10.0.0.1:6443"}},
                     {"name": "c2", "cluster": {"server": "https://10.0.0.2:6443"}}],
        "users": [{"name": "u", "user": user}],
    }  # fmt: skip


def b64(data: bytes) -> str:
    return base64.standard_b64encode(data).decode()


def test_only_the_chosen_context_is_kept(tmp_path: Path) -> None:
    resolved = resolve(kubeconfig({"token": "t"}), context="other", base=tmp_path)
    assert resolved.context == "other"
    assert [c["cluster"]["server"] for c in resolved.config["clusters"]] == ["https://10.0.0.2:6443"]
    assert resolve(kubeconfig({"token": "t"}), context=None, base=tmp_path).context == "main"


def test_named_files_are_read_here_relative_to_the_kubeconfig_and_inlined(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_bytes(b"CA")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "me.crt").write_bytes(b"CERT")
    (tmp_path / "keys" / "me.key").write_bytes(b"KEY")
    (tmp_path / "token").write_text("abc\n")
    user = {"client-certificate": "keys/me.crt", "client-key": "keys/me.key", "tokenFile": "token"}
    resolved = resolve(kubeconfig(user, {"server": "https://x", "certificate-authority": "ca.crt"}),
                       context=None, base=tmp_path)  # fmt: skip
    cluster = resolved.config["clusters"][0]["cluster"]
    assert cluster == {"server": "https://x", "certificate-authority-data": b64(b"CA")}
    assert resolved.config["users"][0]["user"] == {
        "client-certificate-data": b64(b"CERT"), "client-key-data": b64(b"KEY"), "token": "abc",
    }  # fmt: skip


def test_inline_data_wins_over_a_named_file_that_is_then_not_read(tmp_path: Path) -> None:
    user = {"client-certificate": "missing.crt", "client-certificate-data": b64(b"INLINE")}
    resolved = resolve(kubeconfig(user), context=None, base=tmp_path)
    assert resolved.config["users"][0]["user"] == {"client-certificate-data": b64(b"INLINE")}


def test_an_exec_section_becomes_a_plugin_to_run(tmp_path: Path) -> None:
    user = {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1beta1", "command": "bin/get-token",
        "args": ["--region", "eu"], "env": [{"name": "A", "value": "1"}], "provideClusterInfo": True,
        "installHint": "see the wiki",
    }}  # fmt: skip
    cluster = {"server": "https://x", "tls-server-name": "k8s", "certificate-authority-data": "Q0E="}
    resolved = resolve(kubeconfig(user, cluster), context=None, base=tmp_path)
    spec = resolved.exec
    assert spec is not None
    assert spec.argv == (str(tmp_path / "bin/get-token"), "--region", "eu")
    assert dict(spec.env) == {"A": "1"}
    assert spec.api_version == "client.authentication.k8s.io/v1beta1"
    assert spec.cluster_info == {
        "server": "https://x",
        "tlsServerName": "k8s",
        "certificateAuthorityData": "Q0E=",
    }
    assert spec.install_hint == "see the wiki"
    assert "exec" not in resolved.config["users"][0]["user"]
    plain = resolve(kubeconfig({"exec": {"apiVersion": "v", "command": "aws"}}), context=None, base=tmp_path)
    assert plain.exec is not None
    assert plain.exec.argv == ("aws",)  # no path separator: looked up on PATH
    assert plain.exec.cluster_info is None


UNUSABLE = {
    "not a mapping": (["a"], None, "not a YAML mapping"),
    "no current context": ({"contexts": []}, None, "no current-context"),
    "unknown context": (kubeconfig({}), "nope", "no context named 'nope' in contexts (it has: main, other)"),
    "clusters not a list": ({**kubeconfig({}), "clusters": 7}, None, "clusters is not a list"),
    "exec without command": (kubeconfig({"exec": {"apiVersion": "v"}}), None, "exec has no command"),
    "exec args not strings": (kubeconfig({"exec": {"apiVersion": "v", "command": "x", "args": [1]}}), None,
                              "exec.args is not a list of strings"),
    "missing tokenFile": (kubeconfig({"tokenFile": "nope"}), None, "cannot read the tokenFile"),
}  # fmt: skip


@pytest.mark.parametrize(("doc", "context", "message"), UNUSABLE.values(), ids=UNUSABLE)
def test_an_unusable_kubeconfig_says_why(
    tmp_path: Path, doc: object, context: str | None, message: str
) -> None:
    with pytest.raises(Unusable, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve(doc, context=context, base=tmp_path)


def test_a_fifo_is_refused_at_once_instead_of_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "token")
    started = time.monotonic()
    with pytest.raises(Unusable, match="is not a regular file"):
        resolve(kubeconfig({"tokenFile": "token"}), context=None, base=tmp_path)
    assert time.monotonic() - started < 1


def test_a_device_or_a_directory_or_a_huge_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Unusable, match="is not a regular file"):
        read_regular(Path("/dev/zero"))
    with pytest.raises(Unusable, match="is not a regular file"):
        read_regular(tmp_path)
    huge = tmp_path / "huge"
    with huge.open("wb") as out:
        out.truncate(MAX_FILE + 1)
    with pytest.raises(Unusable, match="larger than 4 MiB"):
        read_regular(huge)


async def test_connect_turns_a_blocking_token_file_into_a_kubeconfig_error_naming_it(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "token")
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: a\n"
        "clusters: [{name: a, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        f"users: [{{name: a, user: {{tokenFile: {tmp_path / 'token'}}}}}]\n"
        "contexts: [{name: a, context: {cluster: a, user: a}}]\n"
    )
    with pytest.raises(
        KubeconfigError, match=f"cannot use kubeconfig {config}: the tokenFile .* is not a regular"
    ):
        await connect("c", config)


async def test_connect_refuses_a_kubeconfig_that_is_a_fifo(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "kubeconfig")
    with pytest.raises(KubeconfigError, match="does not exist or is not a file"):
        await connect("c", tmp_path / "kubeconfig")
