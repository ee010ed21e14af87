"""The systemd unit, the launchd plist and the installers say what the daemon's code relies on.

The unit is read as systemd reads it — sections of ``Key=value`` lines where a
key may repeat — and checked against the daemon's own constants (its stop
bound) and the notify protocol it speaks. Where ``systemd-analyze`` is
installed, systemd itself verifies the unit and scores its sandbox.
"""

from __future__ import annotations

import plistlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fleetd.api.http import MAX_CONNECTIONS
from fleetd.daemon.root import SHUTDOWN_TIMEOUT

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "systemd"
UNIT = SYSTEMD / "fleetd.service"
PLIST = SYSTEMD / "com.fleetd.daemon.plist"
INSTALLED_FLEETD = "/opt/fleetd/venv/bin/fleetd"
MAX_EXPOSURE = 2.0  # systemd-analyze security: 0 is a perfect sandbox, 10 none at all


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of (key, value) pairs in order; keys may repeat, as in systemd."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{line!r} is outside a section"
        assert "=" in line, f"unexpected line {line!r}"
        assert not line.endswith("\\"), f"continuation lines are not expected: {line!r}"
        key, value = line.split("=", 1)
        current.append((key.strip(), value.strip()))
    return sections


def seconds(span: str) -> float:
    """A systemd time span ("20s", "10min", "1min 30s") in seconds."""
    units = {"ms": 0.001, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "": 1.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span)
    assert parts, f"not a time span: {span!r}"
    return sum(float(n) * units[u] for n, u in parts)


@pytest.fixture(scope="module")
def unit() -> dict[str, list[tuple[str, str]]]:
    return parse_unit(UNIT.read_text())


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def value(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    found = values(unit, section, key)
    assert found, f"[{section}] {key}= is missing from {UNIT.name}"
    return found[-1]


@pytest.fixture(scope="module")
def plist() -> dict[str, Any]:
    with PLIST.open("rb") as f:
        loaded: dict[str, Any] = plistlib.load(f)
    return loaded


# -- the systemd unit --------------------------------------------------------------------------


def test_the_unit_has_the_three_sections_systemd_expects(unit: dict[str, list[tuple[str, str]]]) -> None:
    assert list(unit) == ["Unit", "Service", "Install"]
    assert value(unit, "Install", "WantedBy") == "multi-user.target"


def test_the_unit_is_a_notify_service_only_the_main_process_may_notify(
    unit: dict[str, list[tuple[str, str]]],
) -> None:
    assert value(unit, "Service", "Type") == "notify"  # systemd 252 has no notify-reload
    assert value(unit, "Service", "NotifyAccess") == "main"


def test_the_unit_runs_fleetd_run_with_the_inventory_in_etc(unit: dict[str, list[tuple[str, str]]]) -> None:
    assert value(unit, "Service", "ExecStart").split() == [
        INSTALLED_FLEETD, "run", "--config", "/etc/fleetd/fleetd.toml"
    ]  # fmt: skip


def test_reload_sends_sighup_to_the_main_process(unit: dict[str, list[tuple[str, str]]]) -> None:
    assert value(unit, "Service", "ExecReload") == "/bin/kill -HUP $MAINPID"


def test_the_stop_timeout_leaves_room_after_the_daemons_own_shutdown_bound(
    unit: dict[str, list[tuple[str, str]]],
) -> None:
    assert seconds(value(unit, "Service", "TimeoutStopSec")) > SHUTDOWN_TIMEOUT
    assert value(unit, "Service", "KillMode") == "mixed"


def test_the_watchdog_is_armed_and_a_hung_daemon_is_restarted(unit: dict[str, list[tuple[str, str]]]) -> None:
    assert seconds(value(unit, "Service", "WatchdogSec")) >= 10
    assert value(unit, "Service", "Restart") == "on-failure"
    assert seconds(value(unit, "Service", "RestartSec")) > 0


def test_restarts_are_limited_and_an_invalid_inventory_is_not_retried(
    unit: dict[str, list[tuple[str, str]]],
) -> None:
    assert seconds(value(unit, "Unit", "StartLimitIntervalSec")) > 0
    assert int(value(unit, "Unit", "StartLimitBurst")) > 1
    assert value(unit, "Service", "RestartPreventExitStatus") == "2"  # fleetd.cli.main.EXIT_ERROR


def test_the_unit_runs_as_the_fleetd_user_with_a_private_state_directory(
    unit: dict[str, list[tuple[str, str]]],
) -> None:
    expected = {
        "User": "fleetd", "Group": "fleetd", "DynamicUser": "no",
        "StateDirectory": "fleetd", "StateDirectoryMode": "0700",
        "ConfigurationDirectory": "fleetd", "UMask": "0077", "LimitNOFILE": "65536",
    }  # fmt: skip
    assert {key: value(unit, "Service", key) for key in expected} == expected


def test_no_path_but_the_state_directory_is_writable(unit: dict[str, list[tuple[str, str]]]) -> None:
    assert values(unit, "Service", "ReadWritePaths") == []
    assert value(unit, "Service", "ProtectSystem") == "strict"


def test_logs_are_json_lines(unit: dict[str, list[tuple[str, str]]]) -> None:
    assert "FLEETD_LOG_FORMAT=json" in values(unit, "Service", "Environment")


SANDBOX = {
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "SystemCallArchitectures": "native",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "ProtectProc": "invisible",
    "ProcSubset": "pid",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
}


@pytest.mark.parametrize(("key", "expected"), SANDBOX.items())
def test_the_sandbox_setting_is_present(
    unit: dict[str, list[tuple[str, str]]], key: str, expected: str
) -> None:
    assert value(unit, "Service", key) == expected


def test_system_calls_are_the_service_set_minus_privileged_and_resource_calls(
    unit: dict[str, list[tuple[str, str]]],
) -> None:
    assert values(unit, "Service", "SystemCallFilter") == ["@system-service", "~@privileged @resources"]


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    """systemd's own parser; ExecStart must exist, so the copy points at this venv's fleetd."""
    fleetd = Path(sys.executable).with_name("fleetd")
    copy = tmp_path / "fleetd.service"
    copy.write_text(UNIT.read_text().replace(INSTALLED_FLEETD, str(fleetd)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=30, check=False
    )
    assert (result.returncode, result.stderr) == (0, "")


def test_the_sandbox_exposure_stays_low() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(UNIT)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    match = re.search(r"Overall exposure level for fleetd\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE


# -- the launchd plist -------------------------------------------------------------------------


def test_the_plist_runs_fleetd_run_with_the_inventory_in_usr_local(plist: dict[str, Any]) -> None:
    assert plist["Label"] == "com.fleetd.daemon"
    assert plist["ProgramArguments"] == [
        "/usr/local/opt/fleetd/venv/bin/fleetd", "run", "--config", "/usr/local/etc/fleetd/fleetd.toml"
    ]  # fmt: skip


def test_launchd_starts_fleetd_at_boot_and_restarts_it_only_after_a_failure(plist: dict[str, Any]) -> None:
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ThrottleInterval"] >= 5


def test_launchd_waits_longer_than_the_daemon_needs_to_stop(plist: dict[str, Any]) -> None:
    assert plist["ExitTimeOut"] > SHUTDOWN_TIMEOUT


def test_launchd_runs_fleetd_as_its_own_user_with_a_private_umask(plist: dict[str, Any]) -> None:
    assert (plist["UserName"], plist["GroupName"]) == ("_fleetd", "_fleetd")
    assert plist["Umask"] == 0o077
    assert plist["ProcessType"] == "Background"


def test_launchd_logs_json_lines_to_files_under_usr_local_var_log(plist: dict[str, Any]) -> None:
    assert plist["EnvironmentVariables"]["FLEETD_LOG_FORMAT"] == "json"
    for key in ("StandardOutPath", "StandardErrorPath"):
        assert Path(plist[key]).parent == Path("/usr/local/var/log/fleetd")


def test_both_service_files_run_the_same_command(
    unit: dict[str, list[tuple[str, str]]], plist: dict[str, Any]
) -> None:
    systemd_args = value(unit, "Service", "ExecStart").split()[1:]
    launchd_args = plist["ProgramArguments"][1:]
    assert systemd_args[:-1] == launchd_args[:-1]
    assert Path(systemd_args[-1]).name == Path(launchd_args[-1]).name


# -- what the daemon's own user needs: open files, a private writable state, readable configuration -----


def test_the_unit_documents_its_open_file_limit_and_leaves_the_http_cap_whole(
    unit: dict[str, list[tuple[str, str]]],
) -> None:
    limit = int(value(unit, "Service", "LimitNOFILE"))
    assert limit // 4 >= MAX_CONNECTIONS  # connection_limit(): a quarter of the limit, at most the cap
    text = UNIT.read_text()
    comment = text[: text.index("LimitNOFILE=")].rsplit("\n\n", 1)[-1]
    assert "Open files" in comment
    assert "HTTP server" in comment


def test_launchd_gives_fleetd_enough_open_files_for_its_whole_http_cap(plist: dict[str, Any]) -> None:
    assert plist["SoftResourceLimits"]["NumberOfFiles"] // 4 >= MAX_CONNECTIONS


def _install_lines(text: str) -> list[list[str]]:
    """``install -d`` commands in a shell text, as argument lists (``sudo`` dropped, variables kept)."""
    found = []
    for line in text.splitlines():
        words = line.strip().split()
        if words[:1] == ["sudo"]:
            words = words[1:]
        if words[:2] == ["install", "-d"]:
            found.append(words)
    return found


def _directory(lines: list[list[str]], path: str) -> dict[str, str]:
    """Owner, group and mode an ``install -d`` line gives ``path``."""
    for words in lines:
        if path in words:
            return {flag: words[words.index(flag) + 1] for flag in ("-o", "-g", "-m") if flag in words}
    raise AssertionError(f"no install -d creates {path}")


def test_the_arm64_installer_gives_the_units_user_a_private_state_directory_and_its_configuration(
    unit: dict[str, list[tuple[str, str]]],
) -> None:
    installer = (REPO / "arm64" / "install.sh").read_text()
    user, group = value(unit, "Service", "User"), value(unit, "Service", "Group")
    assert re.search(rf"useradd .*--home-dir \"\$STATE\" .* {user}\b", installer)
    lines = _install_lines(installer)
    state = _directory(lines, '"$STATE"')
    assert state == {"-o": user, "-g": group, "-m": value(unit, "Service", "StateDirectoryMode")}
    etc = _directory(lines, '"$ETC"')
    assert etc["-g"] == group
    assert int(etc["-m"], 8) & 0o050 == 0o050  # the group may list and read it
    assert int(etc["-m"], 8) & 0o007 == 0  # nobody else may
    assert "umask 022" in installer  # the venv it creates is readable by the unit's user


def test_the_macos_install_steps_give_launchds_user_its_state_and_configuration(
    plist: dict[str, Any],
) -> None:
    readme = (SYSTEMD / "README.md").read_text()
    macos = readme[readme.index("## macOS: launchd") :]
    lines = _install_lines(macos)
    state = plist["WorkingDirectory"]
    assert plist["EnvironmentVariables"]["HOME"] == state
    config_dir = str(Path(plist["ProgramArguments"][-1]).parent)
    for path in (state, config_dir):
        assert _directory(lines, path) == {"-o": plist["UserName"], "-g": plist["GroupName"], "-m": "0700"}
    assert f"NFSHomeDirectory {state}" in macos
