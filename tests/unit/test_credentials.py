"""Exec credential plugins have a deadline: answers parsed, failures named, hung plugins killed with helpers.

The plugins are real programs (small shell scripts), run as a hub runs
``aws eks get-token`` or ``kubelogin``.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from fleetd.kube.credentials import (
    REFRESH_MARGIN,
    ExecCredential,
    ExecSpec,
    PluginFailed,
    RefreshingToken,
    run_plugin,
)
from tests.integration.fleet import eventually

pytestmark = pytest.mark.timeout(30)

API = "client.authentication.k8s.io/v1"


def plugin(tmp_path: Path, body: str, name: str = "plugin") -> ExecSpec:
    script = tmp_path / name
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return ExecSpec(argv=(str(script),), api_version=API)


def answer(status: dict[str, object], api_version: str = API) -> str:
    doc = {"apiVersion": api_version, "kind": "ExecCredential", "status": status}
    return f"cat <<'EOF'\n{json.dumps(doc)}\nEOF"


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not ended (a zombie has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


async def test_a_token_and_its_expiry_are_read_from_the_plugins_answer(tmp_path: Path) -> None:
    spec = plugin(tmp_path, answer({"token": "s3cr3t", "expirationTimestamp": "2030-01-02T03:04:05Z"}))
    credential = await run_plugin(spec, timeout=10)
    assert credential.token == "s3cr3t"
    assert credential.expires == 1893553445.0
    assert "s3cr3t" not in repr(credential)


async def test_a_client_certificate_and_key_are_read_from_the_plugins_answer(tmp_path: Path) -> None:
    spec = plugin(tmp_path, answer({"clientCertificateData": "CERT", "clientKeyData": "KEY"}))
    credential = await run_plugin(spec, timeout=10)
    assert (credential.certificate, credential.key, credential.token) == ("CERT", "KEY", None)


async def test_the_plugin_is_told_it_is_not_interactive_and_gets_the_cluster_and_its_env(
    tmp_path: Path,
) -> None:
    seen = tmp_path / "exec-info.json"
    script = plugin(tmp_path, f'printf %s "$KUBERNETES_EXEC_INFO" > {seen}\necho "$REGION" > {seen}.env\n'
                    + answer({"token": "t"}))  # fmt: skip
    spec = ExecSpec(argv=script.argv, api_version=API, env={"REGION": "eu-1"},
                    cluster_info={"server": "https://k8s.example:6443"})  # fmt: skip
    await run_plugin(spec, timeout=10)
    info = json.loads(seen.read_text())
    assert info["spec"] == {"interactive": False, "cluster": {"server": "https://k8s.example:6443"}}
    assert info["apiVersion"] == API
    assert seen.with_suffix(".json.env").read_text().strip() == "eu-1"


async def test_a_hanging_plugin_is_killed_with_its_helpers_when_its_time_is_up(tmp_path: Path) -> None:
    spec = plugin(tmp_path, f"sleep 600 &\necho $! >> {tmp_path}/pids\necho $$ >> {tmp_path}/pids\nwait")
    started = time.monotonic()
    with pytest.raises(PluginFailed, match=r"did not answer within 0\.5s; it was stopped"):
        await run_plugin(spec, timeout=0.5)
    assert time.monotonic() - started < 5
    assert len(pids(tmp_path / "pids")) == 2

    async def all_gone() -> bool:
        return not any(alive(pid) for pid in pids(tmp_path / "pids"))

    await eventually(all_gone, "the plugin and its helper gone", timeout=5)


async def test_a_plugin_whose_helper_keeps_its_output_open_after_it_exits_is_killed_too(
    tmp_path: Path,
) -> None:
    spec = plugin(tmp_path, f"sleep 600 &\necho $! >> {tmp_path}/pids\nexit 0")
    with pytest.raises(PluginFailed, match="did not answer within"):
        await run_plugin(spec, timeout=0.5)

    async def gone() -> bool:
        return not any(alive(pid) for pid in pids(tmp_path / "pids"))

    await eventually(gone, "the helper holding stdout gone", timeout=5)


async def test_a_plugin_running_when_its_caller_is_cancelled_is_killed(tmp_path: Path) -> None:
    spec = plugin(tmp_path, f"echo $$ >> {tmp_path}/pids\nexec sleep 600")
    task = asyncio.create_task(run_plugin(spec, timeout=600))

    async def started() -> bool:
        return bool(pids(tmp_path / "pids"))

    await eventually(started, "the plugin started", timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not any(alive(pid) for pid in pids(tmp_path / "pids"))


FAILURES = {
    "exit status": ("echo 'token expired, run aws sso login' >&2\nexit 3",
                    "exited with status 3: token expired, run aws sso login"),
    "not json": ("echo 'hunter2-secret-token'", "printed something that is not JSON"),
    "not an ExecCredential": ("echo '{\"kind\": \"Pod\"}'", "did not print an ExecCredential"),
    "another apiVersion": (answer({"token": "t"}, "client.authentication.k8s.io/v1beta1"),
                           "answered apiVersion 'client.authentication.k8s.io/v1beta1'"),
    "no credential": (answer({}), "neither a token nor a client certificate and key"),
    "bad expiry": (answer({"token": "t", "expirationTimestamp": "soon"}), "not RFC 3339: 'soon'"),
    "endless output": ("yes hunter2", "printed more than 1048576 bytes"),
    "too much output": ("head -c 2000000 /dev/zero", "printed more than 1048576 bytes"),
}  # fmt: skip


@pytest.mark.parametrize(("body", "message"), FAILURES.values(), ids=FAILURES)
async def test_a_failing_plugin_is_a_clear_error_that_never_quotes_its_output(
    tmp_path: Path, body: str, message: str
) -> None:
    with pytest.raises(PluginFailed) as failed:
        await run_plugin(plugin(tmp_path, body), timeout=2)
    assert message in str(failed.value)
    assert "hunter2" not in str(failed.value)
    assert str(tmp_path / "plugin") in str(failed.value)


async def test_a_missing_plugin_names_the_command_and_the_install_hint(tmp_path: Path) -> None:
    spec = ExecSpec(argv=(str(tmp_path / "nope"),), install_hint="brew install nope")
    with pytest.raises(
        PluginFailed, match=r"cannot run credential plugin .*nope: No such file .*brew install nope"
    ):
        await run_plugin(spec, timeout=2)


async def test_a_plugin_that_insists_on_a_terminal_is_refused_without_running_it(tmp_path: Path) -> None:
    spec = ExecSpec(argv=(str(tmp_path / "never-run"),), interactive_mode="Always")
    with pytest.raises(PluginFailed, match="needs an interactive terminal"):
        await run_plugin(spec, timeout=2)


async def test_a_token_about_to_expire_is_renewed_once_for_concurrent_callers(tmp_path: Path) -> None:
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + REFRESH_MARGIN + 3600))
    spec = plugin(
        tmp_path, f"echo run >> {tmp_path}/runs\n" + answer({"token": "fresh", "expirationTimestamp": soon})
    )
    first = ExecCredential(token="old", expires=time.time() + REFRESH_MARGIN - 1)  # due now
    token = RefreshingToken(spec, first, timeout=10)
    headers = await asyncio.gather(*(token.header() for _ in range(20)))
    assert set(headers) == {"Bearer fresh"}
    assert (tmp_path / "runs").read_text().split() == ["run"]
    assert await token.header() == "Bearer fresh"  # no longer due: not run again
    assert (tmp_path / "runs").read_text().split() == ["run"]


async def test_a_token_without_expiry_is_never_renewed(tmp_path: Path) -> None:
    token = RefreshingToken(
        ExecSpec(argv=(str(tmp_path / "never-run"),)), ExecCredential(token="t"), timeout=1
    )
    assert await token.header() == "Bearer t"
    assert not (tmp_path / "runs").exists()
