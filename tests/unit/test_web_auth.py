"""Access tokens, browser sessions, the access policy and the web's small pure helpers."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from fleetd.api.auth import SESSION_SECONDS, Access, Failures, TokenFileError, Tokens, parse_tokens
from fleetd.api.graph import layers
from fleetd.api.html import ago, esc
from fleetd.api.v1 import Problem, expand_kinds, parse_since
from fleetd.inventory import WebSettings

ALICE = "0123456789abcdef0123"
BOB = "fedcba9876543210fedc"


def tokens_file(tmp_path: Path, text: str) -> Tokens:
    path = tmp_path / "web.tokens"
    path.write_text(text)
    return Tokens(path)


def test_named_and_bare_tokens_are_read_and_comments_skipped() -> None:
    found = parse_tokens(f"# operators\n\nalice:{ALICE}\n  {BOB}  \n", "web.tokens")
    assert [(t.name, t.value) for t in found] == [("alice", ALICE.encode()), ("operator", BOB.encode())]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("alice:short\n", "web.tokens:1: the token of 'alice' is shorter than 16 characters"),
        (f"alice:{ALICE}\nalice:{BOB}\n", "web.tokens:2: 'alice' has a token already"),
        (f"al ice:{ALICE}\n", "web.tokens:1: the name before ':'"),
        ("# nothing\n", "holds no token"),
    ],
)
def test_a_bad_token_file_is_refused_naming_the_line(text: str, words: str) -> None:
    with pytest.raises(TokenFileError, match=words):
        parse_tokens(text, "web.tokens")


def test_a_token_never_appears_in_a_repr(tmp_path: Path) -> None:
    tokens = tokens_file(tmp_path, f"alice:{ALICE}\n")
    assert ALICE not in repr(parse_tokens(f"alice:{ALICE}", "f")) + repr(tokens)


def test_a_token_matches_its_name_and_nothing_else_does(tmp_path: Path) -> None:
    tokens = tokens_file(tmp_path, f"alice:{ALICE}\nbob:{BOB}\n")
    assert (tokens.match(ALICE), tokens.match(BOB)) == ("alice", "bob")
    for wrong in ("", ALICE[:-1], ALICE + "x", ALICE.upper(), f"alice:{ALICE}"):
        assert tokens.match(wrong) is None


def test_a_changed_file_is_read_again_and_a_broken_one_keeps_the_last_good_tokens(tmp_path: Path) -> None:
    tokens = tokens_file(tmp_path, f"alice:{ALICE}\n")
    tokens.path.write_text(f"bob:{BOB}\n")
    os.utime(tokens.path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert (tokens.match(ALICE), tokens.match(BOB)) == (None, "bob")
    tokens.path.write_text("bob:short\n")
    os.utime(tokens.path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    assert tokens.match(BOB) == "bob"


def test_a_missing_token_file_stops_the_start_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match=r"cannot read the token file .*web.tokens"):
        Tokens(tmp_path / "web.tokens")


def test_a_session_names_its_holder_until_it_expires_or_the_token_changes(tmp_path: Path) -> None:
    tokens = tokens_file(tmp_path, f"alice:{ALICE}\n")
    now = time.time()
    cookie = tokens.session("alice", now)
    assert ALICE not in cookie
    assert tokens.session_name(cookie, now + 60) == "alice"
    assert tokens.session_name(cookie, now + SESSION_SECONDS + 1) is None
    _, issued, mac = cookie.split("|")
    for forged in (
        f"bob|{issued}|{mac}",
        f"alice|{int(issued) + 1}|{mac}",
        f"alice|{issued}|{'0' * 64}",
        "x",
        "",
    ):
        assert tokens.session_name(forged, now) is None
    tokens.path.write_text(f"alice:{BOB}\n")
    os.utime(tokens.path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert tokens.session_name(cookie, now + 60) is None  # rotating the token ends its sessions


def test_actions_need_the_inventory_to_enable_them_and_a_token_file(tmp_path: Path) -> None:
    tokens = tokens_file(tmp_path, f"alice:{ALICE}\n")

    def access(settings: WebSettings, with_tokens: bool = True) -> Access:
        return Access(
            settings=lambda: settings, tokens=lambda: tokens if with_tokens else None, loopback=True
        )

    assert "actions = true" in (access(WebSettings(actions=False)).actions_refused() or "")
    assert "token_file" in (access(WebSettings(actions=True), with_tokens=False).actions_refused() or "")
    assert access(WebSettings(actions=True)).actions_refused() is None
    assert access(WebSettings()).who(bearer=ALICE, cookie=None) == "alice"


@pytest.mark.parametrize(
    ("loopback", "allow", "has_tokens", "needed"),
    [
        (True, False, True, False),
        (False, False, True, True),
        (False, False, False, True),  # the token file cannot be read: closed, not open
        (False, True, True, False),
        (False, True, False, False),
    ],
)
def test_reads_need_a_token_only_beyond_loopback_unless_explicitly_open(
    tmp_path: Path, loopback: bool, allow: bool, has_tokens: bool, needed: bool
) -> None:
    tokens = tokens_file(tmp_path, f"alice:{ALICE}\n")
    settings = WebSettings(allow_unauthenticated=allow)
    access = Access(
        settings=lambda: settings, tokens=lambda: tokens if has_tokens else None, loopback=loopback
    )
    assert access.reads_need_token is needed


def test_failed_attempts_block_a_client_for_the_window_only() -> None:
    failures = Failures(limit=3, window=60.0)
    for i in range(3):
        failures.failed("10.0.0.1", now=100.0 + i)
    assert failures.blocked("10.0.0.1", now=103.0)
    assert not failures.blocked("10.0.0.2", now=103.0)
    assert not failures.blocked("10.0.0.1", now=163.0)


def test_failed_attempts_are_remembered_for_a_bounded_number_of_clients() -> None:
    failures = Failures(limit=1, size=10)
    for i in range(1000):
        failures.failed(f"client-{i}")
    assert len(failures._seen) <= 10


def test_dependency_layers_put_each_sync_right_of_its_deepest_dependency() -> None:
    nodes = [
        {"name": "apps", "depends_on": ["infra", "crds"]},
        {"name": "infra", "depends_on": ["crds"]},
        {"name": "crds", "depends_on": []},
        {"name": "loop", "depends_on": ["loop"]},
    ]
    assert layers(nodes) == {"apps": 2, "infra": 1, "crds": 0, "loop": 0}


def test_event_kinds_may_be_named_by_group() -> None:
    assert expand_kinds(["drift"]) == ("drift.detected", "drift.corrected", "drift.reported")
    with pytest.raises(Problem, match="unknown event kind"):
        expand_kinds(["drifts"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1700000000", 1700000000.0), ("15m", 1000.0 - 900), ("2023-11-14T22:13:20Z", 1700000000.0)],
)
def test_since_takes_unix_seconds_durations_and_iso_times(text: str, expected: float) -> None:
    assert parse_since(text, now=1000.0) == expected


def test_markup_is_escaped_and_ages_read_like_people_say_them() -> None:
    assert esc('<a href="x">&') == "&lt;a href=&quot;x&quot;&gt;&amp;"
    assert [ago(s) for s in (1, 42, 180, 7200, 200000)] == [
        "just now",
        "42s ago",
        "3m ago",
        "2h ago",
        "2d ago",
    ]
