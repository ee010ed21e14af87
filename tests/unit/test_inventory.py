"""The TOML inventory: what loads into a Fleet, and how every mistake is reported."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from textwrap import dedent

import pytest

from fleetd.errors import FleetdError, InventoryError, Problem
from fleetd.inventory import (
    DriftPolicy,
    Fleet,
    RefKind,
    load_fleet,
    loader,
    notifications,
    sharding,
    source,
    syncs,
    web,
)
from fleetd.inventory.locate import LineIndex

REPO = Path(__file__).resolve().parents[2]
FLEET = '[source]\nurl = "https://example.com/fleet.git"\n'
CLUSTER = '[cluster]\nkubeconfig = "kube.yaml"\n'


def write(directory: Path, files: Mapping[str, str]) -> Path:
    """Write `files` (name -> TOML, dedented) under `directory`; return the fleet file."""
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dedent(text))
    return directory / "fleetd.toml"


def load(directory: Path, files: Mapping[str, str]) -> Fleet:
    return load_fleet(write(directory, files))


def problems_of(directory: Path, files: Mapping[str, str]) -> tuple[Problem, ...]:
    with pytest.raises(InventoryError) as info:
        load(directory, files)
    return info.value.problems


def the_problem(problems: tuple[Problem, ...], file: str, key: str) -> Problem:
    """The single problem reported for `key` of `file`."""
    found = [p for p in problems if p.file.name == file and p.key == key]
    assert len(found) == 1, "\n".join(map(str, problems))
    return found[0]


def one_problem(directory: Path, files: Mapping[str, str], file: str, key: str) -> Problem:
    """Load `files`, expecting exactly one problem: at `key` of `file`."""
    problems = problems_of(directory, files)
    assert len(problems) == 1, "\n".join(map(str, problems))
    return the_problem(problems, file, key)


def with_sync(sync_lines: str, *, cluster: str = CLUSTER) -> dict[str, str]:
    """A fleet whose pi5.toml holds one [[syncs]] made of the minimal keys plus `sync_lines`."""
    text = cluster + '[[syncs]]\nname = "apps"\npath = "apps"\n' + dedent(sync_lines)
    return {"fleetd.toml": FLEET, "pi5.toml": text}


# Line numbers in pi5.toml produced by `with_sync`: the first extra sync line is line 6.
SYNC_LINE = 6


class TestSyntaxErrors:
    def test_toml_syntax_error_is_reported_with_file_and_line(self, tmp_path: Path) -> None:
        files = {"fleetd.toml": FLEET, "pi5.toml": '[cluster]\nkubeconfig = "k"\nwave = \n'}
        problem = one_problem(tmp_path, files, "pi5.toml", "")
        assert problem.line == 3
        assert problem.message.startswith("TOML syntax error: Invalid value at column")
        assert str(problem).startswith(f"{tmp_path / 'pi5.toml'}:3: TOML syntax error")

    def test_syntax_error_at_end_of_file_is_placed_on_the_last_line(self, tmp_path: Path) -> None:
        files = {"fleetd.toml": FLEET, "pi5.toml": '[cluster]\nkubeconfig = "k'}
        assert one_problem(tmp_path, files, "pi5.toml", "").line == 2

    def test_duplicate_toml_key_is_a_syntax_error(self, tmp_path: Path) -> None:
        files = {"fleetd.toml": FLEET, "pi5.toml": CLUSTER + 'kubeconfig = "again"\n'}
        assert one_problem(tmp_path, files, "pi5.toml", "").line == 3

    def test_broken_fleet_file_does_not_hide_problems_in_cluster_files(self, tmp_path: Path) -> None:
        files = {"fleetd.toml": "[source\n", "pi5.toml": CLUSTER + "colour = 1\n"}
        problems = problems_of(tmp_path, files)
        assert the_problem(problems, "fleetd.toml", "").line == 1
        assert the_problem(problems, "pi5.toml", "cluster.colour").line == 3

    def test_broken_fleet_file_still_leads_to_its_clusters_dir(self, tmp_path: Path) -> None:
        files = {
            "fleetd.toml": '[fleet]\nclusters_dir = "clusters"\n[source\n',
            "pyproject.toml": "[project]\n",
            "clusters/pi5.toml": CLUSTER + "wave = -1\n",
        }
        problems = problems_of(tmp_path, files)
        assert [(p.file.name, p.line) for p in problems] == [("fleetd.toml", 3), ("pi5.toml", 3)]


class TestUnknownKeys:
    def test_unknown_key_in_sync_is_reported_with_file_line_and_suggestion(self, tmp_path: Path) -> None:
        problem = one_problem(tmp_path, with_sync('intervall = "5m"\n'), "pi5.toml", "syncs[0].intervall")
        assert problem.line == SYNC_LINE
        assert problem.message == "unknown key 'intervall' (did you mean 'interval'?)"
        assert str(problem) == f"{tmp_path / 'pi5.toml'}:6: syncs[0].intervall: {problem.message}"

    @pytest.mark.parametrize(
        ("file", "text", "key", "line"),
        [
            ("fleetd.toml", FLEET + "[sources]\n", "sources", 3),
            ("fleetd.toml", "[fleet]\nconcurency = 2\n" + FLEET, "fleet.concurency", 2),
            ("fleetd.toml", FLEET + 'brnch = "main"\n', "source.brnch", 3),
            ("fleetd.toml", FLEET + '[source.auth]\ntoken = "t"\n', "source.auth.token", 4),
            ("fleetd.toml", FLEET + '[decryption]\nage_keys = ["k"]\n', "decryption.age_keys", 4),
            ("fleetd.toml", FLEET + "[defaults]\nprun = false\n", "defaults.prun", 4),
            (
                "fleetd.toml",
                FLEET + '[[syncs]]\nname = "a"\npath = "a"\nselectors = {}\n',
                "syncs[0].selectors",
                6,
            ),
            ("pi5.toml", CLUSTER + 'contxt = "x"\n', "cluster.contxt", 3),
            ("pi5.toml", CLUSTER + '[variable]\nx = "y"\n', "variable", 3),
            (
                "pi5.toml",
                CLUSTER
                + '[[syncs]]\nname = "a"\npath = "a"\n[[syncs.ignore]]\npaths = ["/x"]\nkinds = "K"\n',
                "syncs[0].ignore[0].kinds",
                8,
            ),
        ],
    )
    def test_unknown_key_at_every_level_is_reported(
        self, tmp_path: Path, file: str, text: str, key: str, line: int
    ) -> None:
        files = {"fleetd.toml": FLEET, "pi5.toml": CLUSTER, file: text}
        problem = one_problem(tmp_path, files, file, key)
        assert problem.line == line
        assert problem.message.startswith("unknown key")

    def test_selector_on_a_cluster_sync_is_reported_as_fleet_wide_only(self, tmp_path: Path) -> None:
        problem = one_problem(
            tmp_path, with_sync('selector = { a = "b" }\n'), "pi5.toml", "syncs[0].selector"
        )
        assert problem.line == SYNC_LINE
        assert problem.message.startswith("only fleet-wide syncs (in the fleet file) have a selector")

    def test_unknown_key_without_a_close_match_lists_the_known_keys(self, tmp_path: Path) -> None:
        problem = one_problem(tmp_path, with_sync("zzz = 1\n"), "pi5.toml", "syncs[0].zzz")
        known = (
            "allow_empty, depends_on, drift, force, health_checks, ignore, interval, max_prune, name, "
            "namespace, path, prune, suspend, timeout, wait"
        )
        assert problem.message == f"unknown key 'zzz' (expected one of: {known})"


class TestTypes:
    @pytest.mark.parametrize(
        ("text", "key", "message"),
        [
            ('prune = "yes"', "syncs[0].prune", 'expected a boolean (true or false), got a string "yes"'),
            ("namespace = 3", "syncs[0].namespace", "expected a string, got an integer (3)"),
            ('depends_on = "infra"', "syncs[0].depends_on", 'expected an array, got a string "infra"'),
            ("depends_on = [1]", "syncs[0].depends_on[0]", "expected a string, got an integer (1)"),
            (
                "interval = 300",
                "syncs[0].interval",
                'expected a duration string such as "5m", got an integer (300)',
            ),
            (
                "ignore = 1",
                "syncs[0].ignore",
                "expected an array of tables ([[ignore]] sections), got an integer",
            ),
        ],
    )
    def test_wrong_type_in_a_sync_is_reported(
        self, tmp_path: Path, text: str, key: str, message: str
    ) -> None:
        problem = one_problem(tmp_path, with_sync(text + "\n"), "pi5.toml", key)
        assert problem.line == SYNC_LINE
        assert problem.message.startswith(message)

    @pytest.mark.parametrize(
        ("extra", "key", "line", "message"),
        [
            ("context = 3", "cluster.context", 3, "expected a string, got an integer (3)"),
            ('labels = ["a"]', "cluster.labels", 3, "expected a table, got an array"),
            ("wave = true", "cluster.wave", 3, "expected an integer, got a boolean (true)"),
            ("wave = 1.5", "cluster.wave", 3, "expected an integer, got a float (1.5)"),
            ('suspend = "no"', "cluster.suspend", 3, 'expected a boolean (true or false), got a string "no"'),
            (
                "labels = { role = 1 }",
                "cluster.labels.role",
                3,
                'expected a string, got an integer (1) (quote it: "1")',
            ),
        ],
    )
    def test_wrong_type_in_a_cluster_is_reported(
        self, tmp_path: Path, extra: str, key: str, line: int, message: str
    ) -> None:
        files = {"fleetd.toml": FLEET, "pi5.toml": CLUSTER + extra + "\n"}
        problem = one_problem(tmp_path, files, "pi5.toml", key)
        assert (problem.line, problem.message) == (line, message)

    def test_syncs_written_as_a_single_table_are_reported(self, tmp_path: Path) -> None:
        files = {"fleetd.toml": FLEET, "pi5.toml": CLUSTER + '[syncs]\nname = "a"\n'}
        problem = one_problem(tmp_path, files, "pi5.toml", "syncs")
        assert problem.line == 3
        assert "expected an array of tables ([[syncs]] sections), got a table" in problem.message

    def test_source_written_as_a_string_is_reported(self, tmp_path: Path) -> None:
        problems = problems_of(tmp_path, {"fleetd.toml": 'source = "https://x/y.git"\n'})
        assert the_problem(problems, "fleetd.toml", "source").message.startswith(
            "expected a table, got a string"
        )


class TestValues:
    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("5 minutes", "invalid duration '5 minutes' (use a number with a unit: 500ms, 30s, 5m, 1h)"),
            ("", "invalid duration '' (use a number with a unit: 500ms, 30s, 5m, 1h)"),
            ("-5m", "invalid duration '-5m' (must not be negative)"),
            ("10", "invalid duration '10' (use a number with a unit: 500ms, 30s, 5m, 1h)"),
            ("1d", "invalid duration '1d' (there is no day unit; write hours, e.g. 24h)"),
            ("0", "must be greater than zero (e.g. 30s)"),
        ],
    )
    def test_invalid_duration_is_reported(self, tmp_path: Path, value: str, message: str) -> None:
        problem = one_problem(tmp_path, with_sync(f'interval = "{value}"\n'), "pi5.toml", "syncs[0].interval")
        assert (problem.line, problem.message) == (SYNC_LINE, message)

    def test_invalid_source_duration_is_reported(self, tmp_path: Path) -> None:
        files = {"fleetd.toml": FLEET + 'timeout = "1 hour"\n'}
        problem = one_problem(tmp_path, files, "fleetd.toml", "source.timeout")
        assert problem.line == 3

    def test_unknown_drift_policy_lists_the_choices(self, tmp_path: Path) -> None:
        problem = one_problem(tmp_path, with_sync('drift = "fix"\n'), "pi5.toml", "syncs[0].drift")
        assert problem.message == "unknown drift policy 'fix' (expected one of: correct, report, ignore)"
        assert problem.line == SYNC_LINE

    def test_bad_value_in_defaults_is_reported(self, tmp_path: Path) -> None:
        files = {"fleetd.toml": FLEET + '[defaults]\ndrift = "always"\n'}
        assert one_problem(tmp_path, files, "fleetd.toml", "defaults.drift").line == 4

    @pytest.mark.parametrize("name", ["Apps", "apps_1", "-apps", "a" * 64])
    def test_invalid_sync_name_is_reported(self, tmp_path: Path, name: str) -> None:
        files = {"fleetd.toml": FLEET, "pi5.toml": CLUSTER + f'[[syncs]]\nname = "{name}"\npath = "a"\n'}
        problem = one_problem(tmp_path, files, "pi5.toml", "syncs[0].name")
        assert problem.line == 4
        assert "is not a valid sync name" in problem.message

    def test_invalid_cluster_name_is_reported(self, tmp_path: Path) -> None:
        files = {"fleetd.toml": FLEET, "pi5.toml": '[cluster]\nname = "Mac_Mini"\nkubeconfig = "k"\n'}
        problem = one_problem(tmp_path, files, "pi5.toml", "cluster.name")
        assert problem.line == 2
        assert "'Mac_Mini' is not a valid cluster name" in problem.message

    def test_file_name_that_is_not_a_cluster_name_asks_to_rename_or_set_a_name(self, tmp_path: Path) -> None:
        files = {"fleetd.toml": FLEET, "Pi_5.toml": CLUSTER}
        problem = one_problem(tmp_path, files, "Pi_5.toml", "cluster.name")
        assert problem.line == 1
        assert "rename the file or set name" in problem.message

    def test_invalid_namespace_is_reported(self, tmp_path: Path) -> None:
        problem = one_problem(
            tmp_path, with_sync('namespace = "Demo Apps"\n'), "pi5.toml", "syncs[0].namespace"
        )
        assert "not a valid namespace name" in problem.message

    @pytest.mark.parametrize(
        ("path", "message"),
        [
            ("/apps", "'/apps' is absolute; give a path relative to the repository root"),
            ("../apps", "'../apps' leaves the repository; remove the '..'"),
            ("apps/../../etc", "'apps/../../etc' leaves the repository"),
            ("", 'the path is empty; use "." for the repository root'),
        ],
    )
    def test_sync_path_outside_the_repository_is_rejected(
        self, tmp_path: Path, path: str, message: str
    ) -> None:
        files = {"fleetd.toml": FLEET, "pi5.toml": CLUSTER + f'[[syncs]]\nname = "a"\npath = "{path}"\n'}
        problem = one_problem(tmp_path, files, "pi5.toml", "syncs[0].path")
        assert problem.line == 5
        assert problem.message.startswith(message)

    @pytest.mark.parametrize(
        ("pointer", "message"),
        [
            ("spec/replicas", "it must start with '/'"),
            ("/metadata/annotations/a~2b", "write '~' as '~0'"),
        ],
    )
    def test_invalid_json_pointer_is_rejected(self, tmp_path: Path, pointer: str, message: str) -> None:
        rule = f'[[syncs.ignore]]\nkind = "Deployment"\npaths = ["/ok", "{pointer}"]\n'
        problem = one_problem(tmp_path, with_sync(rule), "pi5.toml", "syncs[0].ignore[0].paths[1]")
        assert problem.line == SYNC_LINE + 2
        assert message in problem.message

    def test_ignore_rule_without_paths_is_reported(self, tmp_path: Path) -> None:
        rule = '[[syncs.ignore]]\nkind = "Deployment"\n'
        problem = one_problem(tmp_path, with_sync(rule), "pi5.toml", "syncs[0].ignore[0]")
        assert problem.line == SYNC_LINE
        assert "missing required key 'paths'" in problem.message

    def test_invalid_variable_name_and_non_string_value_are_reported(self, tmp_path: Path) -> None:
        text = CLUSTER + '[variables]\n"cluster-name" = "x"\nreplicas = 3\nok = "fine"\n'
        problems = problems_of(tmp_path, {"fleetd.toml": FLEET, "pi5.toml": text})
        assert len(problems) == 2
        bad_name = the_problem(problems, "pi5.toml", "variables.cluster-name")
        assert (bad_name.line, "not a valid variable name" in bad_name.message) == (4, True)
        bad_value = the_problem(problems, "pi5.toml", "variables.replicas")
        assert (bad_value.line, bad_value.message) == (
            5,
            'expected a string, got an integer (3) (quote it: "3")',
        )

    def test_invalid_label_key_and_value_are_reported(self, tmp_path: Path) -> None:
        text = CLUSTER + '[cluster.labels]\n"-role" = "hub"\nzone = "eu west"\n"example.com/ok" = "a.b_c-d"\n'
        text += '"example.com/bad key" = "x"\n'
        problems = problems_of(tmp_path, {"fleetd.toml": FLEET, "pi5.toml": text})
        assert len(problems) == 3
        assert "not a valid label key" in the_problem(problems, "pi5.toml", "cluster.labels.-role").message
        assert the_problem(problems, "pi5.toml", "cluster.labels.zone").line == 5
        assert the_problem(problems, "pi5.toml", 'cluster.labels."example.com/bad key"').line == 7

    def test_negative_wave_is_reported(self, tmp_path: Path) -> None:
        files = {"fleetd.toml": FLEET, "pi5.toml": CLUSTER + "wave = -1\n"}
        problem = one_problem(tmp_path, files, "pi5.toml", "cluster.wave")
        assert (problem.line, problem.message) == (3, "must be at least 0, got -1")

    def test_concurrency_below_one_is_reported(self, tmp_path: Path) -> None:
        files = {"fleetd.toml": "[fleet]\nconcurrency = 0\n" + FLEET}
        problem = one_problem(tmp_path, files, "fleetd.toml", "fleet.concurrency")
        assert (problem.line, problem.message) == (2, "must be at least 1, got 0")

    @pytest.mark.parametrize(
        ("listen", "message"),
        [
            ("localhost", "use host:port"),
            ("127.0.0.1:0", "port must be 1..65535"),
            ("127.0.0.1:70000", "port must be 1..65535"),
            ("::1:9480", "use host:port"),
            ("[::1]", "use host:port"),
            ("[127.0.0.1]:9480", "is not an IP address or host name"),
            (":9480", "use host:port"),
            ("bad_host:80", "is not an IP address or host name"),
        ],
    )
    def test_invalid_listen_address_is_reported(self, tmp_path: Path, listen: str, message: str) -> None:
        files = {"fleetd.toml": f'[fleet]\nlisten = "{listen}"\n' + FLEET}
        problem = one_problem(tmp_path, files, "fleetd.toml", "fleet.listen")
        assert problem.line == 2
        assert message in problem.message


class TestSource:
    @pytest.mark.parametrize(
        ("text", "key", "line"),
        [
            ("[fleet]\n", "source", None),
            ('[source]\nbranch = "main"\n', "source", 1),
        ],
    )
    def test_missing_source_url_is_reported(
        self, tmp_path: Path, text: str, key: str, line: int | None
    ) -> None:
        problem = one_problem(tmp_path, {"fleetd.toml": text}, "fleetd.toml", key)
        assert problem.line == line
        assert (
            problem.message
            == "missing required key 'url' (add e.g. url = \"https://github.com/me/fleet.git\")"
        )

    def test_unsupported_url_scheme_is_reported(self, tmp_path: Path) -> None:
        problem = one_problem(
            tmp_path, {"fleetd.toml": '[source]\nurl = "ftp://x/y"\n'}, "fleetd.toml", "source.url"
        )
        assert "use https://, ssh://, git@host:path, file:// or a local path" in problem.message

    def test_more_than_one_git_ref_kind_is_reported(self, tmp_path: Path) -> None:
        files = {"fleetd.toml": FLEET + 'branch = "main"\ntag = "v1.0.0"\n'}
        problem = one_problem(tmp_path, files, "fleetd.toml", "source.tag")
        assert problem.line == 4
        assert problem.message == "set only one of branch, tag, semver, commit (found branch and tag)"

    def test_invalid_semver_range_is_reported(self, tmp_path: Path) -> None:
        files = {"fleetd.toml": FLEET + 'semver = ">=1.x.y"\n'}
        problem = one_problem(tmp_path, files, "fleetd.toml", "source.semver")
        assert problem.line == 3
        assert problem.message == "invalid semver range '>=1.x.y': '1.x.y' is not a version"

    @pytest.mark.parametrize("commit", ["abc12", "xyz1234", "a" * 41])
    def test_invalid_commit_hash_is_reported(self, tmp_path: Path, commit: str) -> None:
        files = {"fleetd.toml": FLEET + f'commit = "{commit}"\n'}
        problem = one_problem(tmp_path, files, "fleetd.toml", "source.commit")
        assert problem.message == f"'{commit}' is not a commit hash (expected 7 to 40 hexadecimal digits)"

    def test_invalid_branch_name_is_reported(self, tmp_path: Path) -> None:
        files = {"fleetd.toml": FLEET + 'branch = "my branch"\n'}
        assert (
            "not a valid git branch name"
            in one_problem(tmp_path, files, "fleetd.toml", "source.branch").message
        )

    def test_ssh_key_without_known_hosts_is_reported(self, tmp_path: Path) -> None:
        text = '[source]\nurl = "git@github.com:me/fleet.git"\n[source.auth]\nssh_key_file = "id_ed25519"\n'
        problem = one_problem(tmp_path, {"fleetd.toml": text}, "fleetd.toml", "source.auth.ssh_key_file")
        assert problem.line == 4
        assert problem.message.startswith("known_hosts_file is required with ssh_key_file")

    def test_ssh_key_and_token_together_are_reported(self, tmp_path: Path) -> None:
        text = (
            '[source]\nurl = "ssh://git@example.com/fleet.git"\n'
            '[source.auth]\nssh_key_file = "k"\nknown_hosts_file = "kh"\ntoken_file = "t"\n'
        )
        problems = problems_of(tmp_path, {"fleetd.toml": text})
        problem = [p for p in problems if "set one way to authenticate" in p.message]
        assert [(p.key, p.line) for p in problem] == [("source.auth.token_file", 6)]
        assert problem[0].message == "set one way to authenticate, not ssh_key_file and token_file"

    def test_credentials_that_do_not_fit_the_url_are_reported(self, tmp_path: Path) -> None:
        text = FLEET + '[source.auth]\nssh_key_file = "k"\nknown_hosts_file = "kh"\n'
        problem = one_problem(tmp_path, {"fleetd.toml": text}, "fleetd.toml", "source.auth.ssh_key_file")
        assert "an SSH key needs an ssh:// or git@host:path url" in problem.message

    def test_a_github_app_with_a_passphrase_ca_depth_and_upkeep_loads(self, tmp_path: Path) -> None:
        text = (
            '[source]\nurl = "https://ghe.example/org/fleet.git"\ndepth = 1\nupkeep_interval = "6h"\n'
            '[source.auth]\ngithub_app_id = 12\ninstallation_id = 34\nprivate_key_file = "/run/app.pem"\n'
            'github_api_url = "https://ghe.example/api/v3/"\nca_file = "ca.pem"\n'
        )
        source = load(tmp_path, {"fleetd.toml": text}).source
        assert (source.depth, source.upkeep_interval) == (1, 6 * 3600.0)
        assert source.auth is not None
        assert source.auth.ca_file == tmp_path / "ca.pem"
        app = source.auth.github_app
        assert app is not None
        assert (app.app_id, app.installation_id, app.private_key_file) == (12, 34, Path("/run/app.pem"))
        assert app.api_url == "https://ghe.example/api/v3"

    def test_an_incomplete_github_app_names_what_is_missing(self, tmp_path: Path) -> None:
        text = FLEET + "[source.auth]\ngithub_app_id = 12\n"
        problem = one_problem(tmp_path, {"fleetd.toml": text}, "fleetd.toml", "source.auth.github_app_id")
        assert "(installation_id, private_key_file missing)" in problem.message

    def test_a_github_app_and_a_token_together_are_reported(self, tmp_path: Path) -> None:
        app = 'github_app_id = 1\ninstallation_id = 2\nprivate_key_file = "k"\n'
        text = FLEET + '[source.auth]\ntoken_file = "t"\n' + app
        problem = one_problem(tmp_path, {"fleetd.toml": text}, "fleetd.toml", "source.auth.token_file")
        assert problem.message == "set one way to authenticate, not token_file and a GitHub App"

    @pytest.mark.parametrize(
        ("auth", "key", "message"),
        [
            ('passphrase_file = "p"\n', "passphrase_file", "set ssh_key_file too"),
            ('token_file = "t"\nca_file = "c"\n', "ca_file", "ca_file is for https:// urls"),
        ],
    )
    def test_settings_that_go_with_something_else_are_reported(
        self, tmp_path: Path, auth: str, key: str, message: str
    ) -> None:
        text = '[source]\nurl = "ssh://git@example.com/fleet.git"\n[source.auth]\n' + auth
        problems = problems_of(tmp_path, {"fleetd.toml": text})
        assert message in the_problem(problems, "fleetd.toml", f"source.auth.{key}").message

    def test_a_shallow_fetch_from_a_local_path_is_reported(self, tmp_path: Path) -> None:
        text = '[source]\nurl = "/srv/git/fleet.git"\ndepth = 1\n'
        problem = one_problem(tmp_path, {"fleetd.toml": text}, "fleetd.toml", "source.depth")
        assert "cannot fetch shallow from a local path" in problem.message

    def test_a_gitlab_webhook_token_file_enables_its_receiver(self, tmp_path: Path) -> None:
        text = FLEET + '[webhooks]\ngitlab_token_file = "gitlab-token"\n'
        assert load(tmp_path, {"fleetd.toml": text}).webhooks.gitlab_token_file == tmp_path / "gitlab-token"


class TestAcrossFiles:
    def test_two_files_declaring_the_same_cluster_name_are_reported(self, tmp_path: Path) -> None:
        files = {
            "fleetd.toml": FLEET,
            "a.toml": CLUSTER,
            "b.toml": '[cluster]\nname = "a"\nkubeconfig = "k"\n',
        }
        problem = one_problem(tmp_path, files, "b.toml", "cluster.name")
        assert problem.line == 2
        assert problem.message.startswith(f"cluster name 'a' is already used by {tmp_path / 'a.toml'}")

    def test_duplicate_sync_names_in_one_cluster_are_reported_with_the_first_line(
        self, tmp_path: Path
    ) -> None:
        text = CLUSTER + '[[syncs]]\nname = "apps"\npath = "a"\n[[syncs]]\nname = "apps"\npath = "b"\n'
        problem = one_problem(tmp_path, {"fleetd.toml": FLEET, "pi5.toml": text}, "pi5.toml", "syncs[1].name")
        assert problem.line == 7
        assert f"first declared at {tmp_path / 'pi5.toml'}:4" in problem.message

    def test_duplicate_fleet_wide_sync_names_are_reported(self, tmp_path: Path) -> None:
        text = FLEET + '[[syncs]]\nname = "x"\npath = "a"\n[[syncs]]\nname = "x"\npath = "b"\n'
        problem = one_problem(tmp_path, {"fleetd.toml": text}, "fleetd.toml", "syncs[1].name")
        assert problem.line == 7

    def test_fleet_wide_sync_clashing_with_a_cluster_sync_names_both_files(self, tmp_path: Path) -> None:
        fleet = FLEET + '[[syncs]]\nname = "infra"\npath = "infrastructure"\n'
        cluster = CLUSTER + '[[syncs]]\nname = "infra"\npath = "other"\n'
        problem = one_problem(
            tmp_path, {"fleetd.toml": fleet, "pi5.toml": cluster}, "pi5.toml", "syncs[0].name"
        )
        assert problem.line == 4
        assert f"fleet-wide sync at {tmp_path / 'fleetd.toml'}:4" in problem.message

    def test_fleet_wide_sync_whose_selector_misses_the_cluster_does_not_clash(self, tmp_path: Path) -> None:
        fleet = FLEET + '[[syncs]]\nname = "infra"\npath = "infrastructure"\nselector = { role = "hub" }\n'
        cluster = CLUSTER + '[[syncs]]\nname = "infra"\npath = "other"\n'
        fleet_ = load(tmp_path, {"fleetd.toml": fleet, "pi5.toml": cluster})
        assert [s.path for s in fleet_.cluster("pi5").syncs] == [PurePosixPath("other")]

    def test_depends_on_an_unknown_sync_is_reported(self, tmp_path: Path) -> None:
        problem = one_problem(
            tmp_path, with_sync('depends_on = ["infra"]\n'), "pi5.toml", "syncs[0].depends_on"
        )
        assert problem.line == SYNC_LINE
        assert (
            problem.message
            == "depends on 'infra', but cluster 'pi5' has no sync of that name (its syncs: apps)"
        )

    def test_dependency_cycle_is_reported_with_the_whole_cycle(self, tmp_path: Path) -> None:
        text = (
            CLUSTER
            + '[[syncs]]\nname = "a"\npath = "a"\ndepends_on = ["b"]\n'
            + '[[syncs]]\nname = "b"\npath = "b"\ndepends_on = ["c"]\n'
            + '[[syncs]]\nname = "c"\npath = "c"\ndepends_on = ["a"]\n'
        )
        problem = one_problem(
            tmp_path, {"fleetd.toml": FLEET, "pi5.toml": text}, "pi5.toml", "syncs[0].depends_on"
        )
        assert problem.line == 6
        assert problem.message == "dependency cycle: a -> b -> c -> a; remove one of these depends_on entries"

    def test_cycle_through_a_fleet_wide_sync_is_reported_in_the_cluster_file(self, tmp_path: Path) -> None:
        fleet = FLEET + '[[syncs]]\nname = "infra"\npath = "i"\ndepends_on = ["apps"]\n'
        cluster = CLUSTER + '[[syncs]]\nname = "apps"\npath = "a"\ndepends_on = ["infra"]\n'
        problem = one_problem(
            tmp_path, {"fleetd.toml": fleet, "pi5.toml": cluster}, "pi5.toml", "syncs[0].depends_on"
        )
        assert "apps -> infra -> apps" in problem.message

    def test_self_dependency_is_reported(self, tmp_path: Path) -> None:
        problem = one_problem(
            tmp_path, with_sync('depends_on = ["apps"]\n'), "pi5.toml", "syncs[0].depends_on"
        )
        assert problem.message == "sync 'apps' depends on itself; remove 'apps' from depends_on"
        assert problem.line == SYNC_LINE

    @pytest.mark.parametrize(
        ("text", "key", "line", "hint"),
        [
            ("[cluster]\n", "cluster", 1, 'kubeconfig = "~/.kube/pi5.yaml"'),
            ("wave = 1\n", "cluster", None, 'kubeconfig = "~/.kube/pi5.yaml"'),
            (CLUSTER + '[[syncs]]\npath = "a"\n', "syncs[0]", 3, 'name = "apps"'),
            (CLUSTER + '[[syncs]]\nname = "a"\n', "syncs[0]", 3, 'path = "apps/base"'),
        ],
    )
    def test_missing_required_key_is_reported(
        self, tmp_path: Path, text: str, key: str, line: int | None, hint: str
    ) -> None:
        problems = problems_of(tmp_path, {"fleetd.toml": FLEET, "pi5.toml": text})
        problem = [p for p in problems if p.key == key and "missing required key" in p.message]
        assert [(p.line, hint in p.message) for p in problem] == [(line, True)], problems

    def test_missing_clusters_dir_is_reported(self, tmp_path: Path) -> None:
        files = {"fleetd.toml": '[fleet]\nclusters_dir = "nowhere"\n' + FLEET}
        problem = one_problem(tmp_path, files, "fleetd.toml", "fleet.clusters_dir")
        assert problem.line == 2
        assert "does not exist; create it or fix clusters_dir" in problem.message


class TestReporting:
    def test_all_problems_of_one_load_are_reported_together(self, tmp_path: Path) -> None:
        files = {
            "fleetd.toml": '[fleet]\nconcurrency = 0\n[source]\nbranch = "main"\n',
            "a.toml": CLUSTER + 'wave = -2\n[[syncs]]\nname = "x"\npath = "/abs"\ninterval = "soon"\n',
            "b.toml": "[cluster\n",
            "c.toml": '[cluster]\nkubeconfig = "k"\nlabel = {}\n',
        }
        problems = problems_of(tmp_path, files)
        located = [(p.file.name, p.key, p.line) for p in problems]
        assert located == [
            ("fleetd.toml", "fleet.concurrency", 2),
            ("fleetd.toml", "source", 3),
            ("a.toml", "cluster.wave", 3),
            ("a.toml", "syncs[0].path", 6),
            ("a.toml", "syncs[0].interval", 7),
            ("b.toml", "", 1),
            ("c.toml", "cluster.label", 3),
        ]

    def test_inventory_error_message_lists_one_problem_per_line(self, tmp_path: Path) -> None:
        with pytest.raises(InventoryError) as info:
            load(tmp_path, with_sync('interval = "5 minutes"\ndrift = "fix"\n'))
        assert isinstance(info.value, FleetdError)
        lines = str(info.value).splitlines()
        assert lines == [
            f"{tmp_path / 'pi5.toml'}:6: syncs[0].interval: invalid duration '5 minutes' "
            "(use a number with a unit: 500ms, 30s, 5m, 1h)",
            f"{tmp_path / 'pi5.toml'}:7: syncs[0].drift: unknown drift policy 'fix' "
            "(expected one of: correct, report, ignore)",
        ]

    def test_problem_without_line_or_key_still_names_the_file(self) -> None:
        assert str(Problem(file=Path("a.toml"), key="", line=None, message="m")) == "a.toml: m"
        assert str(Problem(file=Path("a.toml"), key="k", line=None, message="m")) == "a.toml: k: m"

    def test_problems_name_files_as_the_user_named_the_fleet_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        write(tmp_path / "clusters", {"fleetd.toml": FLEET, "pi5.toml": CLUSTER + "wave = -1\n"})
        monkeypatch.chdir(tmp_path)
        with pytest.raises(InventoryError) as info:
            load_fleet(Path("clusters/fleetd.toml"))
        assert str(info.value).startswith("clusters/pi5.toml:3: cluster.wave: ")

    def test_unreadable_fleet_file_is_reported(self, tmp_path: Path) -> None:
        with pytest.raises(InventoryError) as info:
            load_fleet(tmp_path / "missing.toml")
        assert "cannot read the file" in info.value.problems[0].message


class TestValidFleets:
    def test_shipped_example_inventory_loads(self) -> None:
        fleet = load_fleet(REPO / "clusters" / "fleetd.toml")
        assert fleet.name == "home-lab"
        assert [c.name for c in fleet.clusters] == ["mac-mini", "pi5"]
        assert fleet.source.local_path == Path.home() / ".local" / "state" / "fleetd-demo" / "fleet-repo.git"
        assert fleet.warnings == ()
        for cluster in fleet.clusters:
            assert [s.name for s in cluster.syncs] == ["infrastructure", "apps"]
            assert cluster.sync("apps").depends_on == ("infrastructure",)
            assert cluster.variables["cluster_name"] == cluster.name
            assert (REPO / "examples" / "fleet-repo" / str(cluster.sync("apps").path)).is_dir()

    def test_minimal_fleet_uses_the_documented_defaults(self, tmp_path: Path) -> None:
        fleet = load(
            tmp_path, {"fleetd.toml": FLEET, "pi5.toml": CLUSTER + '[[syncs]]\nname = "a"\npath = "."\n'}
        )
        assert (fleet.name, fleet.listen_host, fleet.listen_port, fleet.concurrency) == (
            "fleetd",
            "127.0.0.1",
            9480,
            8,
        )
        assert fleet.state_dir == Path("~/.local/state/fleetd").expanduser()
        assert (fleet.source.ref.kind, fleet.source.ref.value) == (RefKind.BRANCH, "main")
        assert (fleet.source.interval, fleet.source.timeout, fleet.source.auth) == (60.0, 60.0, None)
        assert fleet.decryption.sops_binary == "sops"
        cluster = fleet.cluster("pi5")
        assert (cluster.wave, cluster.suspend, cluster.context, dict(cluster.labels)) == (0, False, None, {})
        sync = cluster.sync("a")
        assert (sync.prune, sync.interval, sync.wait, sync.timeout) == (True, 600.0, False, 300.0)
        assert (sync.drift, sync.namespace, sync.suspend, sync.path) == (
            DriftPolicy.CORRECT,
            None,
            False,
            PurePosixPath("."),
        )

    def test_fleet_wide_syncs_reach_only_clusters_their_selector_matches(self, tmp_path: Path) -> None:
        fleet_text = (
            FLEET
            + '[[syncs]]\nname = "everywhere"\npath = "all"\n'
            + '[[syncs]]\nname = "hubs"\npath = "hub"\nselector = { role = "hub", env = "home" }\n'
        )
        files = {
            "fleetd.toml": fleet_text,
            "mac-mini.toml": CLUSTER
            + 'labels = { role = "hub", env = "home" }\n[[syncs]]\nname = "own"\npath = "o"\n',
            "pi5.toml": CLUSTER + 'labels = { role = "edge", env = "home" }\n',
        }
        fleet = load(tmp_path, files)
        assert [s.name for s in fleet.cluster("mac-mini").syncs] == ["everywhere", "hubs", "own"]
        assert [s.name for s in fleet.cluster("pi5").syncs] == ["everywhere"]
        assert [s.name for s in fleet.fleet_syncs] == ["everywhere", "hubs"]
        assert fleet.cluster("mac-mini").sync("hubs").fleet_wide
        assert not fleet.cluster("mac-mini").sync("own").fleet_wide

    def test_defaults_apply_to_fleet_and_cluster_syncs_unless_overridden(self, tmp_path: Path) -> None:
        fleet_text = (
            FLEET
            + '[defaults]\nprune = false\ninterval = "1h"\ndrift = "report"\n'
            + 'namespace = "team"\nwait = true\n'
            + '[[syncs]]\nname = "infra"\npath = "i"\n'
        )
        cluster_text = CLUSTER + '[[syncs]]\nname = "apps"\npath = "a"\ninterval = "90s"\ndrift = "ignore"\n'
        fleet = load(tmp_path, {"fleetd.toml": fleet_text, "pi5.toml": cluster_text})
        infra, apps = fleet.cluster("pi5").syncs
        assert (infra.prune, infra.interval, infra.drift, infra.namespace, infra.wait) == (
            False,
            3600.0,
            DriftPolicy.REPORT,
            "team",
            True,
        )
        assert (apps.prune, apps.interval, apps.drift, apps.namespace, apps.timeout) == (
            False,
            90.0,
            DriftPolicy.IGNORE,
            "team",
            300.0,
        )

    def test_relative_paths_resolve_against_the_declaring_file(self, tmp_path: Path) -> None:
        fleet_text = (
            '[fleet]\nclusters_dir = "clusters"\nstate_dir = "state"\n'
            '[source]\nurl = "../repo"\n'
            '[decryption]\nage_key_files = ["keys/age.txt"]\ngnupg_home = "gpg"\nsops_binary = "bin/sops"\n'
        )
        files = {"conf/fleetd.toml": fleet_text, "conf/clusters/pi5.toml": CLUSTER}
        fleet = load_fleet(write(tmp_path, files).parent / "conf" / "fleetd.toml")
        conf = tmp_path / "conf"
        assert fleet.clusters_dir == conf / "clusters"
        assert fleet.state_dir == conf / "state"
        assert fleet.source.url == str(tmp_path / "repo")
        assert fleet.decryption.age_key_files == (conf / "keys" / "age.txt",)
        assert (fleet.decryption.gnupg_home, fleet.decryption.sops_binary) == (
            conf / "gpg",
            str(conf / "bin" / "sops"),
        )
        assert fleet.cluster("pi5").kubeconfig == conf / "clusters" / "kube.yaml"
        assert fleet.cluster("pi5").file == conf / "clusters" / "pi5.toml"

    def test_home_directory_is_expanded_in_paths(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        files = {"fleetd.toml": FLEET, "pi5.toml": '[cluster]\nkubeconfig = "~/.kube/pi5.yaml"\n'}
        fleet = load(tmp_path, files)
        assert fleet.cluster("pi5").kubeconfig == tmp_path / "home" / ".kube" / "pi5.yaml"
        assert fleet.state_dir == tmp_path / "home" / ".local" / "state" / "fleetd"

    def test_remote_urls_and_credentials_are_kept(self, tmp_path: Path) -> None:
        text = (
            '[source]\nurl = "https://example.com/fleet.git"\nsemver = "^1.2"\n'
            '[source.auth]\ntoken_file = "/run/secrets/token"\n'
        )
        source = load(tmp_path, {"fleetd.toml": text}).source
        assert (source.url, source.local_path) == ("https://example.com/fleet.git", None)
        assert (source.ref.kind, source.ref.value) == (RefKind.SEMVER, "^1.2")
        assert source.auth is not None
        assert (source.auth.token_file, source.auth.username) == (Path("/run/secrets/token"), "git")

    def test_commit_is_normalised_to_lowercase(self, tmp_path: Path) -> None:
        fleet = load(tmp_path, {"fleetd.toml": FLEET + 'commit = "ABCDEF1"\n'})
        assert str(fleet.source.ref) == "commit abcdef1"

    def test_ipv6_listen_address_is_accepted_without_brackets(self, tmp_path: Path) -> None:
        fleet = load(tmp_path, {"fleetd.toml": '[fleet]\nlisten = "[::1]:9000"\n' + FLEET})
        assert (fleet.listen_host, fleet.listen_port) == ("::1", 9000)

    def test_empty_cluster_directory_is_a_valid_fleet_with_a_warning(self, tmp_path: Path) -> None:
        fleet = load(tmp_path, {"fleetd.toml": FLEET})
        assert fleet.clusters == ()
        assert [w.key for w in fleet.warnings] == ["fleet.clusters_dir"]
        assert "the fleet has no clusters" in fleet.warnings[0].message

    def test_fleet_wide_sync_that_selects_no_cluster_is_a_warning(self, tmp_path: Path) -> None:
        fleet_text = FLEET + '[[syncs]]\nname = "gpu"\npath = "gpu"\nselector = { gpu = "yes" }\n'
        fleet = load(tmp_path, {"fleetd.toml": fleet_text, "pi5.toml": CLUSTER})
        assert [(w.key, w.line) for w in fleet.warnings] == [("syncs[0].selector", 6)]

    def test_fleet_file_and_hidden_or_underscore_files_are_not_clusters(self, tmp_path: Path) -> None:
        files = {
            "fleetd.toml": FLEET,
            "pi5.toml": CLUSTER,
            ".draft.toml": "not toml at all [",
            "_template.toml": "[cluster]\n",
            "notes.txt": "x",
            "sub/other.toml": CLUSTER,
        }
        assert [c.name for c in load(tmp_path, files).clusters] == ["pi5"]

    def test_clusters_are_sorted_by_name_and_grouped_into_waves(self, tmp_path: Path) -> None:
        files = {
            "fleetd.toml": FLEET,
            "zeta.toml": CLUSTER,
            "alpha.toml": CLUSTER + "wave = 2\n",
            "mid.toml": '[cluster]\nname = "beta"\nkubeconfig = "k"\nwave = 2\n',
        }
        fleet = load(tmp_path, files)
        assert [c.name for c in fleet.clusters] == ["alpha", "beta", "zeta"]
        assert [[c.name for c in wave] for wave in fleet.waves()] == [["zeta"], ["alpha", "beta"]]

    def test_ignore_rules_are_parsed_and_scoped(self, tmp_path: Path) -> None:
        rule = '[[syncs.ignore]]\ngroup = "apps"\nkind = "Deployment"\npaths = ["/spec/replicas"]\n'
        rule += '[[syncs.ignore]]\npaths = ["/metadata/annotations/a~1b"]\n'
        first, second = load(tmp_path, with_sync(rule)).cluster("pi5").sync("apps").ignore
        assert first.paths == ("/spec/replicas",)
        assert first.applies_to(group="apps", kind="Deployment", name="x", namespace="n")
        assert not first.applies_to(group="apps", kind="StatefulSet", name="x", namespace="n")
        assert second.applies_to(group="", kind="ConfigMap", name="c", namespace=None)

    def test_sync_paths_are_normalised(self, tmp_path: Path) -> None:
        files = {
            "fleetd.toml": FLEET,
            "pi5.toml": CLUSTER + '[[syncs]]\nname = "a"\npath = "./apps//base/"\n',
        }
        fleet = load(tmp_path, files)
        assert fleet.cluster("pi5").sync("a").path == PurePosixPath("apps/base")

    def test_inventory_objects_are_immutable(self, tmp_path: Path) -> None:
        fleet = load(tmp_path, {"fleetd.toml": FLEET, "pi5.toml": CLUSTER + 'labels = { a = "b" }\n'})
        with pytest.raises(dataclasses.FrozenInstanceError):
            fleet.name = "other"  # type: ignore[misc]
        with pytest.raises(TypeError):
            fleet.cluster("pi5").labels["a"] = "c"  # type: ignore[index]


class TestLineLocator:
    SOURCE = dedent(
        '''\
        top = 1
        [source]
        url = "u"  # [not.a.table]
        auth.token_file = "t"
        [[syncs]]
        name = "a"
        depends_on = [
          "[not-a-header]",
        ]
        note = """
        [fake]
        x = 1
        """
        [[syncs.ignore]]
        paths = ["/x"]
        [[syncs]]
        name = "b"
        [[syncs.ignore]]
        kind = "K"
        [[syncs.ignore]]
        kind = "L"
        [cluster.labels]
        "example.com/role" = "hub"
        '''
    )

    @pytest.mark.parametrize(
        ("path", "line"),
        [
            (("top",), 1),
            (("source", "url"), 3),
            (("source", "auth", "token_file"), 4),
            (("syncs", 0, "depends_on", 0), 7),
            (("syncs", 0, "ignore", 0, "paths"), 15),
            (("syncs", 1, "name"), 17),
            (("syncs", 1, "ignore", 1, "kind"), 21),
            (("syncs", 1, "missing"), 16),
            (("cluster", "labels", "example.com/role"), 23),
            (("fake",), None),
            (("x",), None),
        ],
    )
    def test_keys_are_placed_on_the_line_that_defines_them(
        self, path: tuple[str | int, ...], line: int | None
    ) -> None:
        assert LineIndex(self.SOURCE).line_of(path) == line


class TestReference:
    DOC = (REPO / "README.md").read_text()

    def test_full_example_of_the_configuration_reference_loads(self, tmp_path: Path) -> None:
        example = self.DOC[self.DOC.index("## Full example") :]
        fleet_text, cluster_text = re.findall(r"```toml\n(.*?)```", example, re.DOTALL)
        fleet = load(tmp_path, {"fleetd.toml": fleet_text, "pi5.toml": cluster_text})
        assert [s.name for s in fleet.cluster("pi5").syncs] == ["infrastructure", "apps"]

    @pytest.mark.parametrize(
        "keys",
        [
            loader.FLEET_FILE_KEYS,
            loader.FLEET_KEYS,
            source.SOURCE_KEYS,
            source.AUTH_KEYS,
            source.WEBHOOK_KEYS,
            web.WEB_KEYS,
            loader.DECRYPTION_KEYS,
            loader.CLUSTER_FILE_KEYS,
            loader.CLUSTER_KEYS,
            sharding.SHARDING_KEYS,
            syncs.FLEET_SYNC_KEYS,
            syncs.IGNORE_KEYS,
            notifications.NOTIFICATION_KEYS,
        ],
    )
    def test_every_key_is_documented(self, keys: frozenset[str]) -> None:
        forms = ("| `{}` |", "### `[{}]`", "### `[[{}]]`", ".{}]`", ".{}]]`")
        undocumented = [k for k in sorted(keys) if not any(form.format(k) in self.DOC for form in forms)]
        assert undocumented == []


class TestHostileFiles:
    """Cluster files that are not files: each one a problem naming it, never a hang or a silent removal."""

    def test_a_dangling_symlink_cluster_file_is_a_problem_naming_its_target(self, tmp_path: Path) -> None:
        write(tmp_path, {"fleetd.toml": FLEET, "pi5.toml": CLUSTER})
        (tmp_path / "gone.toml").symlink_to("moved-away.toml")
        problem = one_problem(tmp_path, {}, "gone.toml", "")
        assert problem.message == "is a symlink to 'moved-away.toml', which does not exist; fix or remove it"

    def test_a_looping_symlink_cluster_file_is_a_problem(self, tmp_path: Path) -> None:
        write(tmp_path, {"fleetd.toml": FLEET, "pi5.toml": CLUSTER})
        (tmp_path / "a.toml").symlink_to("b.toml")
        (tmp_path / "b.toml").symlink_to("a.toml")
        problems = problems_of(tmp_path, {})
        assert sorted(p.file.name for p in problems) == ["a.toml", "b.toml"]
        assert all("symlink loop" in p.message for p in problems)

    def test_a_fifo_or_a_directory_named_like_a_cluster_file_is_a_problem_not_a_hang(
        self, tmp_path: Path
    ) -> None:
        write(tmp_path, {"fleetd.toml": FLEET, "pi5.toml": CLUSTER})
        os.mkfifo(tmp_path / "pipe.toml")
        (tmp_path / "dir.toml").mkdir()
        problems = problems_of(tmp_path, {})
        assert sorted(p.file.name for p in problems) == ["dir.toml", "pipe.toml"]
        assert all("is not a regular file" in p.message for p in problems)

    def test_a_fleet_file_that_is_a_fifo_is_a_problem_not_a_hang(self, tmp_path: Path) -> None:
        os.mkfifo(tmp_path / "fleetd.toml")
        with pytest.raises(InventoryError, match="not a regular file"):
            load_fleet(tmp_path / "fleetd.toml")

    def test_a_symlink_to_a_cluster_file_elsewhere_is_a_cluster(self, tmp_path: Path) -> None:
        (tmp_path / "elsewhere").mkdir()
        write(tmp_path / "elsewhere", {"real.toml": CLUSTER})
        write(tmp_path, {"fleetd.toml": FLEET})
        (tmp_path / "pi5.toml").symlink_to(tmp_path / "elsewhere" / "real.toml")
        assert [c.name for c in load_fleet(tmp_path / "fleetd.toml").clusters] == ["pi5"]


class TestDuplicateClusterNames:
    def test_the_file_that_introduced_a_duplicate_name_is_blamed_naming_the_first(
        self, tmp_path: Path
    ) -> None:
        write(tmp_path, {"fleetd.toml": FLEET, "zeta.toml": CLUSTER})
        old = tmp_path / "zeta.toml"
        os.utime(old, ns=(old.stat().st_atime_ns, old.stat().st_mtime_ns - 10**9))
        problem = one_problem(tmp_path, {"added.toml": '[cluster]\nname = "zeta"\nkubeconfig = "k"\n'},
                              "added.toml", "cluster.name")  # fmt: skip
        assert problem.line == 2
        assert problem.message.startswith(
            f"cluster name 'zeta' is already used by {old} (named after the file)"
        )

    def test_a_duplicate_names_the_line_where_the_name_was_set_first(self, tmp_path: Path) -> None:
        write(tmp_path, {"fleetd.toml": FLEET, "one.toml": '[cluster]\nkubeconfig = "k"\nname = "x"\n'})
        first = tmp_path / "one.toml"
        os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns - 10**9))
        problem = one_problem(tmp_path, {"two.toml": '[cluster]\nname = "x"\nkubeconfig = "k"\n'},
                              "two.toml", "cluster.name")  # fmt: skip
        assert f"is already used by {first}:3;" in problem.message


class TestWeb:
    def test_without_a_web_section_the_ui_is_read_only_without_a_token(self, tmp_path: Path) -> None:
        settings = load(tmp_path, {"fleetd.toml": FLEET, "pi5.toml": CLUSTER}).web
        assert (settings.actions, settings.token_file, settings.allow_unauthenticated) == (False, None, False)

    def test_the_token_file_is_resolved_next_to_the_fleet_file(self, tmp_path: Path) -> None:
        text = FLEET + '[web]\nactions = true\ntoken_file = "web.tokens"\n'
        settings = load(tmp_path, {"fleetd.toml": text, "pi5.toml": CLUSTER}).web
        assert (settings.actions, settings.token_file) == (True, tmp_path / "web.tokens")

    def test_actions_without_a_token_file_are_refused_with_the_fix(self, tmp_path: Path) -> None:
        text = FLEET + "[web]\nactions = true\n"
        problem = one_problem(
            tmp_path, {"fleetd.toml": text, "pi5.toml": CLUSTER}, "fleetd.toml", "web.actions"
        )
        assert "token_file" in problem.message

    @pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "[::]", "hub.example"])  # noqa: S104 - the address under test
    def test_a_non_loopback_listen_without_a_token_is_refused(self, tmp_path: Path, host: str) -> None:
        text = f'[fleet]\nlisten = "{host}:9480"\n' + FLEET
        problem = one_problem(
            tmp_path, {"fleetd.toml": text, "pi5.toml": CLUSTER}, "fleetd.toml", "fleet.listen"
        )
        assert problem.line == 2
        assert "not a loopback address" in problem.message
        assert "allow_unauthenticated" in problem.message

    @pytest.mark.parametrize(
        "web_lines", ['token_file = "web.tokens"', "allow_unauthenticated = true"], ids=["token", "explicit"]
    )
    def test_a_non_loopback_listen_is_allowed_with_a_token_or_when_explicitly_asked(
        self, tmp_path: Path, web_lines: str
    ) -> None:
        text = '[fleet]\nlisten = "0.0.0.0:9480"\n' + FLEET + f"[web]\n{web_lines}\n"
        assert load(tmp_path, {"fleetd.toml": text, "pi5.toml": CLUSTER}).listen_host == "0.0.0.0"  # noqa: S104 - the address under test

    @pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "localhost", "[::1]"])
    def test_loopback_listens_need_no_token(self, tmp_path: Path, host: str) -> None:
        text = f'[fleet]\nlisten = "{host}:9480"\n' + FLEET
        assert load(tmp_path, {"fleetd.toml": text, "pi5.toml": CLUSTER}).web.token_file is None

    def test_unknown_web_keys_are_reported(self, tmp_path: Path) -> None:
        text = FLEET + '[web]\ntoken = "x"\n'
        problem = one_problem(
            tmp_path, {"fleetd.toml": text, "pi5.toml": CLUSTER}, "fleetd.toml", "web.token"
        )
        assert "did you mean 'token_file'" in problem.message
