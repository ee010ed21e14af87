"""Webhook verification without a server: signatures, events, and secret files."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from fleetd.api.webhooks import (
    GENERIC_SIGNATURE,
    GITHUB_EVENT,
    GITHUB_SIGNATURE,
    Result,
    Secret,
    WebhookSecretError,
    sign,
    signature_valid,
    verify_generic,
    verify_github,
)

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
