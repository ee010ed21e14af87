"""Semantic versions and ranges, as used to follow a repository by tag."""

from __future__ import annotations

import itertools

import pytest

from fleetd.util.semver import Range, SemverError, Version, best_match


class TestVersions:
    def test_versions_parse_with_or_without_a_v_prefix(self) -> None:
        version = Version.parse("v1.2.3-rc.1+build.7")
        assert (version.major, version.minor, version.patch) == (1, 2, 3)
        assert version.prerelease == ("rc", "1")
        assert version.build == ("build", "7")
        assert str(version) == "1.2.3-rc.1+build.7"
        assert Version.parse("1.2.3") == Version.parse("v1.2.3")

    @pytest.mark.parametrize(
        "text", ["1.2", "1", "01.2.3", "1.2.3-01", "1.2.3-", "v", "latest", "1.2.3.4", ""]
    )
    def test_non_versions_are_refused(self, text: str) -> None:
        with pytest.raises(SemverError, match="not a semantic version"):
            Version.parse(text)

    def test_precedence_follows_the_semver_specification(self) -> None:
        ordered = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.1.0",
            "2.0.0",
            "10.0.0",
        ]
        versions = [Version.parse(text) for text in ordered]
        assert all(low < high for low, high in itertools.pairwise(versions))
        shuffled = versions[1::2] + versions[::2]
        assert sorted(shuffled) == versions

    def test_build_metadata_does_not_affect_precedence(self) -> None:
        assert Version.parse("1.0.0+a") == Version.parse("1.0.0+b")
        assert not Version.parse("1.0.0+a") < Version.parse("1.0.0+b")


RANGE_CASES = [
    (">=1.2.0 <2.0.0", ["1.2.0", "1.9.9"], ["1.1.9", "2.0.0", "2.0.0-rc.1"]),
    (">=1.2.0, <2.0.0", ["1.5.0"], ["2.1.0"]),
    (">= 1.2.0 < 2.0.0", ["1.5.0"], ["2.1.0"]),
    ("^1.2", ["1.2.0", "1.99.0"], ["1.1.9", "2.0.0"]),
    ("^1.2.3", ["1.2.3", "1.3.0"], ["1.2.2", "2.0.0"]),
    ("^0.2.3", ["0.2.3", "0.2.9"], ["0.3.0", "0.2.2"]),
    ("^0.0.3", ["0.0.3"], ["0.0.4", "0.0.2"]),
    ("^0.x", ["0.0.1", "0.9.0"], ["1.0.0"]),
    ("~1.2.3", ["1.2.3", "1.2.9"], ["1.3.0", "1.2.2"]),
    ("~1.2", ["1.2.0", "1.2.7"], ["1.3.0"]),
    ("~1", ["1.0.0", "1.9.0"], ["2.0.0"]),
    ("1.x", ["1.0.0", "1.9.9"], ["0.9.9", "2.0.0"]),
    ("1.2.*", ["1.2.0", "1.2.5"], ["1.3.0"]),
    ("1.2", ["1.2.0", "1.2.5"], ["1.3.0"]),
    ("*", ["0.0.1", "99.0.0"], ["1.0.0-rc.1"]),
    ("x", ["1.0.0"], []),
    ("1.2.3", ["1.2.3", "v1.2.3"], ["1.2.4"]),
    ("=1.2.3", ["1.2.3"], ["1.2.4"]),
    ("!=1.2.3", ["1.2.4"], ["1.2.3"]),
    (">1.2", ["1.3.0"], ["1.2.9"]),
    ("<=1.2", ["1.2.9"], ["1.3.0"]),
    ("<1.2", ["1.1.9"], ["1.2.0"]),
    (">*", [], ["1.0.0"]),
    ("1.2.3 - 2.3.4", ["1.2.3", "2.3.4"], ["2.3.5"]),
    ("1.2 - 2.3", ["1.2.0", "2.3.9"], ["2.4.0", "1.1.9"]),
    ("^1.0.0 || ^3.0.0", ["1.5.0", "3.1.0"], ["2.0.0"]),
    (">=2.0.0-rc.1 <3.0.0", ["2.0.0-rc.2", "2.0.0", "2.5.0"], ["2.0.0-rc.0", "2.1.0-rc.1"]),
    ("^v1.2", ["1.3.0"], []),
]


@pytest.mark.parametrize(("text", "inside", "outside"), RANGE_CASES)
def test_ranges_accept_what_npm_and_flux_users_expect(
    text: str, inside: list[str], outside: list[str]
) -> None:
    range_ = Range.parse(text)
    assert [v for v in inside if not range_.matches(v)] == []
    assert [v for v in outside if range_.matches(v)] == []


def test_pre_releases_are_only_candidates_when_the_range_names_one() -> None:
    assert not Range.parse("^1.0").matches("1.5.0-rc.1")
    assert Range.parse(">=1.5.0-rc.0").matches("1.5.0-rc.1")
    assert not Range.parse(">=1.5.0-rc.0").matches("1.6.0-rc.1")


def test_strings_that_are_not_versions_never_match() -> None:
    assert not Range.parse("*").matches("latest")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty semver range"),
        ("   ", "empty semver range"),
        (">=1.x.y", "is not a version"),
        ("^latest", "is not a version"),
        ("1.2.3 ||", "empty alternative"),
        ("!=1.2", "!= needs a full version"),
        (">=1.2-rc.1", "pre-release needs a full version"),
        (">>1.2.3", "is not a version"),
    ],
)
def test_malformed_ranges_are_refused_with_a_reason(text: str, fragment: str) -> None:
    with pytest.raises(SemverError, match=fragment):
        Range.parse(text)


class TestBestMatch:
    TAGS = ("v1.0.0", "v1.2.0", "v1.10.0", "v2.0.0-rc.1", "v2.0.0", "latest", "release-3", "v1.11.0-beta.1")

    def test_the_highest_matching_tag_wins_by_version_not_by_name(self) -> None:
        assert best_match(Range.parse("^1.0"), self.TAGS) == "v1.10.0"

    def test_a_range_may_be_given_as_text(self) -> None:
        assert best_match(">=2.0.0-rc.0", self.TAGS) == "v2.0.0"

    def test_no_matching_tag_gives_none(self) -> None:
        assert best_match("^3", self.TAGS) is None
        assert best_match("*", []) is None

    def test_tags_for_the_same_version_are_chosen_stably(self) -> None:
        assert best_match("*", ["1.2.3", "v1.2.3"]) == best_match("*", ["v1.2.3", "1.2.3"])
