"""The command line itself: version, help, usage errors (commands needing clusters are integration tests)."""

from __future__ import annotations

import pytest

from fleetd import __version__
from fleetd.cli.main import main


def test_version_subcommand_and_flag_print_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"fleetd {__version__}"
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"fleetd {__version__}"


@pytest.mark.parametrize(
    "command", ["check", "run", "status", "diff", "reconcile", "suspend", "resume", "rollout", "reload"]
)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert "--config" in capsys.readouterr().out


def test_an_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["frobnicate"])
    assert exited.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
