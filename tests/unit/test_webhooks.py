"""Webhook verification without a server: signatures, events, and secret files."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from fleetd.api.webhooks import (
    GENERIC_SIGNATURE,
    GITHUB_EVENT,
    GITHUB_SIGNATURE,
    GITLAB_EVENT,
    GITLAB_TOKEN,
    RECEIVERS,
    Result,
    Secret,
    Verdict,
    WebhookSecretError,
    for_source,
    pushed_ref,
    sign,
    signature_valid,
    verify_generic,
    verify_github,
    verify_gitlab,
)
from fleetd.inventory.model import GitRef, RefKind

pytestmark = pytest.mark.timeout(10)

SECRET = Secret(b"s3cr3t-for-tests")
BODY = b'{"ref": "refs/heads/main"}'


def github(event: str | None, body: bytes = BODY, secret: Secret = SECRET) -> dict[str, str]:
    headers = {GITHUB_SIGNATURE: sign(secret, body)}
    return headers | ({GITHUB_EVENT: event} if event else {})


# -- signatures ------------------------------------------------------------------


def test_signatures_match_githubs_documented_example() -> None:
    # https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
    signature = sign(Secret(b"It's a Secret to Everybody"), b"Hello, World!")
    assert signature == "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_a_signature_is_valid_only_for_the_same_body_and_secret() -> None:
    assert signature_valid(SECRET, BODY, sign(SECRET, BODY))
    assert not signature_valid(SECRET, BODY + b" ", sign(SECRET, BODY))
    assert not signature_valid(Secret(b"other"), BODY, sign(SECRET, BODY))


def test_uppercase_hex_is_as_good_as_lowercase() -> None:
    assert signature_valid(SECRET, BODY, "sha256=" + sign(SECRET, BODY).removeprefix("sha256=").upper())


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha1=" + hmac.new(SECRET.value, BODY, hashlib.sha1).hexdigest(),
        "sha256=" + "zz" * 32,
        "sha256=" + "ab" * 31,
        sign(SECRET, BODY) + "00",
        " " + sign(SECRET, BODY),
        "sha256=" + "é" * 64,
    ],
)
def test_malformed_or_foreign_signatures_are_invalid_without_raising(header: str | None) -> None:
    assert not signature_valid(SECRET, BODY, header)


# -- GitHub ----------------------------------------------------------------------


def test_a_signed_github_push_fetches() -> None:
    verdict = verify_github(SECRET, github("push"), BODY)
    assert (verdict.result, verdict.fetch) == (Result.ACCEPTED, True)


def test_a_signed_github_ping_is_accepted_without_a_fetch() -> None:
    verdict = verify_github(SECRET, github("ping"), BODY)
    assert (verdict.result, verdict.fetch) == (Result.ACCEPTED, False)


def test_other_github_events_are_ignored_and_named_safely() -> None:
    verdict = verify_github(SECRET, github("pull_request\n<script>"), BODY)
    assert (verdict.result, verdict.fetch) == (Result.IGNORED, False)
    assert verdict.message == "pull_request??script? event ignored"


def test_a_signed_github_call_without_an_event_is_a_bad_request() -> None:
    verdict = verify_github(SECRET, github(None), BODY)
    assert (verdict.result, verdict.fetch) == (Result.BAD_REQUEST, False)
    assert GITHUB_EVENT in verdict.message


@pytest.mark.parametrize(
    "headers",
    [
        {GITHUB_EVENT: "push"},
        github("push", secret=Secret(b"wrong")),
        github("push", body=b"another body"),
        {GITHUB_EVENT: "ping"},
        {GENERIC_SIGNATURE: sign(SECRET, BODY), GITHUB_EVENT: "push"},
    ],
    ids=["missing", "wrong-secret", "other-body", "unsigned-ping", "generic-header"],
)
def test_github_calls_without_a_valid_signature_are_unauthorized_before_anything_else(
    headers: dict[str, str],
) -> None:
    verdict = verify_github(SECRET, headers, BODY)
    assert (verdict.result, verdict.fetch) == (Result.UNAUTHORIZED, False)
    assert GITHUB_SIGNATURE in verdict.message


# -- generic ---------------------------------------------------------------------


def test_a_signed_generic_call_fetches_whatever_the_body() -> None:
    verdict = verify_generic(SECRET, {GENERIC_SIGNATURE: sign(SECRET, b"")}, b"")
    assert (verdict.result, verdict.fetch) == (Result.ACCEPTED, True)


@pytest.mark.parametrize(
    "headers",
    [{}, {GENERIC_SIGNATURE: sign(Secret(b"wrong"), BODY)}, {GITHUB_SIGNATURE: sign(SECRET, BODY)}],
    ids=["missing", "wrong-secret", "github-header"],
)
def test_generic_calls_without_a_valid_signature_are_unauthorized(headers: dict[str, str]) -> None:
    verdict = verify_generic(SECRET, headers, BODY)
    assert (verdict.result, verdict.fetch) == (Result.UNAUTHORIZED, False)


def test_no_verdict_message_repeats_the_received_or_expected_signature() -> None:
    wrong = sign(Secret(b"wrong"), BODY)
    for verdict in (
        verify_github(SECRET, {GITHUB_SIGNATURE: wrong, GITHUB_EVENT: "push"}, BODY),
        verify_generic(SECRET, {GENERIC_SIGNATURE: wrong}, BODY),
    ):
        assert wrong[7:] not in verdict.message
        assert sign(SECRET, BODY)[7:] not in verdict.message


# -- GitLab ----------------------------------------------------------------------


def gitlab(event: str | None, token: bytes = SECRET.value) -> dict[str, str]:
    return {GITLAB_TOKEN: token.decode()} | ({GITLAB_EVENT: event} if event else {})


@pytest.mark.parametrize("event", ["Push Hook", "Tag Push Hook"])
def test_a_gitlab_push_or_tag_push_with_the_right_token_fetches(event: str) -> None:
    verdict = verify_gitlab(SECRET, gitlab(event), BODY)
    assert (verdict.result, verdict.fetch, verdict.ref) == (Result.ACCEPTED, True, "refs/heads/main")


@pytest.mark.parametrize(
    "headers",
    [
        {GITLAB_EVENT: "Push Hook"},
        gitlab("Push Hook", b"bogus-token"),
        gitlab("Push Hook", SECRET.value + b"x"),
    ],
    ids=["missing", "wrong", "longer"],
)
def test_gitlab_calls_without_the_right_token_are_unauthorized_and_do_not_echo_it(
    headers: dict[str, str],
) -> None:
    verdict = verify_gitlab(SECRET, headers, BODY)
    assert (verdict.result, verdict.fetch) == (Result.UNAUTHORIZED, False)
    assert GITLAB_TOKEN in verdict.message
    assert "bogus" not in verdict.message
    assert SECRET.value.decode() not in verdict.message


def test_other_gitlab_events_are_ignored_and_a_missing_event_is_a_bad_request() -> None:
    assert verify_gitlab(SECRET, gitlab("Merge Request Hook"), BODY).result is Result.IGNORED
    assert verify_gitlab(SECRET, gitlab(None), BODY).result is Result.BAD_REQUEST


def test_every_receiver_has_a_route_name() -> None:
    assert set(RECEIVERS) == {"github", "gitlab", "generic"}


# -- refs ------------------------------------------------------------------------


def push(ref: str | None) -> Verdict:
    body = json.dumps({"ref": ref} if ref else {"zen": "hi"}).encode()
    return verify_github(SECRET, github("push", body), body)


BRANCH_MAIN = GitRef(kind=RefKind.BRANCH, value="main")


def test_a_push_to_the_followed_branch_fetches() -> None:
    assert for_source(push("refs/heads/main"), BRANCH_MAIN).fetch


def test_a_push_to_another_branch_is_acknowledged_and_ignored_with_the_reason() -> None:
    verdict = for_source(push("refs/heads/feature/x"), BRANCH_MAIN)
    assert (verdict.result, verdict.fetch) == (Result.IGNORED, False)
    assert verdict.message == "push ignored: refs/heads/feature/x is not refs/heads/main, the branch followed"


def test_a_push_to_a_tag_of_the_same_name_is_not_the_branch() -> None:
    assert not for_source(push("refs/tags/main"), BRANCH_MAIN).fetch


@pytest.mark.parametrize(
    ("ref", "fetch"),
    [("refs/tags/v1.4.0", True), ("refs/tags/1.9.9", True), ("refs/tags/v2.0.0", False),
     ("refs/tags/nightly", False), ("refs/heads/main", False)],
)  # fmt: skip
def test_tag_pushes_count_when_the_source_follows_a_semver_range_they_are_in(ref: str, fetch: bool) -> None:
    verdict = for_source(push(ref), GitRef(kind=RefKind.SEMVER, value="^1.2"))
    assert verdict.fetch is fetch
    assert fetch or "semver range ^1.2" in verdict.message


def test_a_source_pinned_to_a_tag_or_commit_follows_only_that_tag_or_nothing() -> None:
    tag = GitRef(kind=RefKind.TAG, value="v1.0.0")
    assert for_source(push("refs/tags/v1.0.0"), tag).fetch
    assert not for_source(push("refs/tags/v1.0.1"), tag).fetch
    commit = GitRef(kind=RefKind.COMMIT, value="0123456789ab")
    assert "pinned to commit" in for_source(push("refs/heads/main"), commit).message


def test_a_push_without_a_ref_still_fetches_and_ping_is_left_alone() -> None:
    assert for_source(push(None), BRANCH_MAIN).fetch
    ping = verify_github(SECRET, github("ping"), BODY)
    assert for_source(ping, BRANCH_MAIN) is ping


def test_a_generic_call_with_a_json_ref_is_filtered_like_the_others() -> None:
    body = b'{"ref": "refs/heads/dev"}'
    verdict = verify_generic(SECRET, {GENERIC_SIGNATURE: sign(SECRET, body)}, body)
    assert verdict.ref == "refs/heads/dev"
    assert not for_source(verdict, BRANCH_MAIN).fetch


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"ref": 7}',
        b'{"ref": "main"}',
        b"[" * 100_000,
        b'{"ref": "refs/' + b"x" * 2000 + b'"}',
    ],
    ids=["empty", "text", "list", "number", "short-name", "deep", "huge"],
)
def test_odd_bodies_have_no_ref_and_never_raise(body: bytes) -> None:
    assert pushed_ref(body) is None


def test_a_hostile_ref_is_printed_plainly() -> None:
    verdict = for_source(push("refs/heads/\x1b[31mred\nline"), BRANCH_MAIN)
    assert "\n" not in verdict.message
    assert "\x1b" not in verdict.message


# -- secret files ----------------------------------------------------------------


def test_a_secret_file_is_read_without_surrounding_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("  s3cr3t\n")
    assert Secret.read(path).value == b"s3cr3t"


@pytest.mark.parametrize("content", ["", "\n", "  \t\n"])
def test_an_empty_secret_file_is_a_configuration_error_naming_the_file_and_the_fix(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "secret"
    path.write_text(content)
    with pytest.raises(WebhookSecretError, match="is empty") as info:
        Secret.read(path)
    assert str(path) in str(info.value)
    assert "openssl rand -hex 32" in str(info.value)


def test_a_missing_secret_file_is_a_configuration_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(WebhookSecretError, match="cannot be read") as info:
        Secret.read(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)


def test_a_secret_never_shows_in_its_repr() -> None:
    assert "s3cr3t" not in repr(SECRET)
    assert "s3cr3t" not in str(SECRET)
