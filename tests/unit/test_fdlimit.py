"""The open-file budget: the soft limit is raised towards the hard one at start, never failing the start."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from fleetd.util.fdlimit import TARGET

pytestmark = pytest.mark.timeout(30)

RAISE = """
import resource, sys
from fleetd.util.fdlimit import raise_open_files_limit
print(raise_open_files_limit(int(sys.argv[1])), *resource.getrlimit(resource.RLIMIT_NOFILE))
"""


def limits_after_start(soft: int, hard: int, target: int = TARGET) -> list[int]:
    """Run the raise in a process started with these limits; its result and the limits then."""

    def start_with() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    argv = [sys.executable, "-c", RAISE, str(target)]
    out = subprocess.run(argv, preexec_fn=start_with, capture_output=True, text=True, check=True).stdout
    return [int(word) for word in out.split()]


def test_a_low_soft_limit_is_raised_to_the_hard_limit() -> None:
    assert limits_after_start(256, 4096) == [4096, 4096, 4096]


def test_the_soft_limit_is_raised_no_further_than_the_target() -> None:
    assert limits_after_start(256, 4096, target=1000) == [1000, 1000, 4096]


def test_a_soft_limit_already_at_the_hard_limit_stays_and_nothing_fails() -> None:
    assert limits_after_start(512, 512) == [512, 512, 512]
