"""Semantic versions and version ranges, to follow a git repository by tag.

A source may track ``semver = ">=1.2.0 <2.0.0"``: fleetd lists the
repository's tags, keeps those that are semantic versions (an optional "v"
prefix is allowed, as almost every project tags "v1.2.3"), and deploys the
highest one the range accepts (`best_match`).

The range grammar is the one npm and Flux users know:

* comparators ``=``, ``!=``, ``>``, ``>=``, ``<``, ``<=`` joined by spaces or
  commas (all must hold), alternatives joined by ``||``;
* ``^1.2.3`` (same major; for 0.x the same minor), ``~1.2.3`` (same minor);
* wildcards ``1.x``, ``1.2.*``, ``*`` and partial versions (``1.2`` = ``1.2.x``);
* hyphen ranges ``1.2 - 1.4.5``.

Pre-releases follow npm's rule: ``2.0.0-rc.1`` is only a candidate when a
comparator of the same alternative names a pre-release of 2.0.0 itself, so
``^1.0`` never jumps to an rc, while ``>=2.0.0-rc.0`` opts in to them.
Build metadata (``+build``) is ignored when ordering, as the spec says.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

_NUM = r"0|[1-9]\d*"
_IDENT = r"[0-9A-Za-z-]+"
_DOTTED = rf"{_IDENT}(?:\.{_IDENT})*"
_VERSION = re.compile(
    rf"[vV]?(?P<major>{_NUM})\.(?P<minor>{_NUM})\.(?P<patch>{_NUM})"
    rf"(?:-(?P<pre>{_DOTTED}))?(?:\+(?P<build>{_DOTTED}))?"
)
_WILD = r"\d+|[xX*]"
_PARTIAL = re.compile(
    rf"[vV]?(?P<major>{_WILD})(?:\.(?P<minor>{_WILD}))?(?:\.(?P<patch>{_WILD}))?"
    rf"(?:-(?P<pre>{_DOTTED}))?(?:\+(?P<build>{_DOTTED}))?"
)
_OPERATOR = re.compile(r"(?P<op>!=|<=|>=|<|>|=|\^|~)?\s*(?P<version>.*)")
_HYPHEN = re.compile(r"(?P<low>\S+)\s+-\s+(?P<high>\S+)")

_CompareKey = tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]


class SemverError(ValueError):
    """A version or range that cannot be read; the message says what is wrong."""


@functools.total_ordering
@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Version:
    """A semantic version (semver.org 2.0.0). Equality and order ignore `build`."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    """Dot-separated pre-release identifiers (``rc.1`` -> ("rc", "1")); empty for a release."""
    build: tuple[str, ...] = ()
    """Build metadata identifiers; kept for display only."""

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``1.2.3``, ``v1.2.3-rc.1+build.5``; raise SemverError otherwise."""
        match = _VERSION.fullmatch(text.strip())
        if match is None or _has_leading_zero(match["pre"]):
            raise SemverError(f"{text!r} is not a semantic version (expected e.g. 1.2.3 or v1.2.3-rc.1)")
        return cls(
            major=int(match["major"]),
            minor=int(match["minor"]),
            patch=int(match["patch"]),
            prerelease=_split(match["pre"]),
            build=_split(match["build"]),
        )

    @property
    def core(self) -> tuple[int, int, int]:
        """(major, minor, patch)."""
        return (self.major, self.minor, self.patch)

    def _key(self) -> _CompareKey:
        # A release sorts after all of its pre-releases; numeric identifiers
        # sort numerically and before alphanumeric ones.
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        return (*self.core, 0 if self.prerelease else 1, pre)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def __str__(self) -> str:
        text = ".".join(map(str, self.core))
        text += f"-{'.'.join(self.prerelease)}" if self.prerelease else ""
        return text + (f"+{'.'.join(self.build)}" if self.build else "")


def _split(dotted: str | None) -> tuple[str, ...]:
    return tuple(dotted.split(".")) if dotted else ()


def _has_leading_zero(dotted: str | None) -> bool:
    return any(p.isdigit() and len(p) > 1 and p[0] == "0" for p in _split(dotted))


_OPS: dict[str, Callable[[Version, Version], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparator:
    """One primitive test, such as ``>= 1.2.0``."""

    op: str
    """One of =, !=, <, <=, >, >=."""
    version: Version

    def test(self, version: Version) -> bool:
        """Whether `version` passes this comparator (ignoring the pre-release rule)."""
        return _OPS[self.op](version, self.version)

    def __str__(self) -> str:
        return f"{self.op}{self.version}"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Partial:
    """A version with possibly missing or wildcard parts (None), as ranges allow."""

    major: int | None
    minor: int | None
    patch: int | None
    prerelease: tuple[str, ...] = ()

    def floor(self) -> Version:
        """The lowest version the partial covers (missing parts become 0)."""
        return Version(
            major=self.major or 0, minor=self.minor or 0, patch=self.patch or 0, prerelease=self.prerelease
        )

    def ceiling(self) -> Version:
        """The first version above everything the partial covers (only when a part is missing)."""
        if self.minor is None:
            return _v(self.floor().major + 1, 0, 0)
        return _v(self.floor().major, self.minor + 1, 0)

    @property
    def complete(self) -> bool:
        return self.patch is not None


def _v(major: int, minor: int, patch: int) -> Version:
    return Version(major=major, minor=minor, patch=patch)


def _parse_partial(text: str, whole: str) -> _Partial:
    match = _PARTIAL.fullmatch(text)
    if match is None or _has_leading_zero(match["pre"]):
        raise SemverError(f"invalid semver range {whole!r}: {text!r} is not a version")
    parts = [None if p is None or p in "xX*" else int(p) for p in match.group("major", "minor", "patch")]
    # Once a part is a wildcard, the parts after it are wildcards too: "1.x.3" means "1.x".
    for i in range(1, 3):
        parts[i] = None if parts[i - 1] is None else parts[i]
    if match["pre"] and parts[2] is None:
        raise SemverError(f"invalid semver range {whole!r}: a pre-release needs a full version in {text!r}")
    return _Partial(major=parts[0], minor=parts[1], patch=parts[2], prerelease=_split(match["pre"]))


def _c(op: str, version: Version) -> Comparator:
    return Comparator(op=op, version=version)


_NOTHING = (_c("<", _v(0, 0, 0)),)  # no version is below 0.0.0


def _desugar(op: str, p: _Partial, whole: str) -> tuple[Comparator, ...]:
    """Turn one operator + partial version into primitive comparators."""
    if op in {"", "="}:
        return (_c("=", p.floor()),) if p.complete else _between(p)
    if op == "!=":
        if not p.complete:
            raise SemverError(f"invalid semver range {whole!r}: != needs a full version such as 1.2.3")
        return (_c("!=", p.floor()),)
    if op in {">", "<="} and not p.complete:
        if p.major is None:
            return _NOTHING if op == ">" else ()
        return (_c(">=", p.ceiling()),) if op == ">" else (_c("<", p.ceiling()),)
    if op in {">=", "<"}:
        return () if p.major is None and op == ">=" else (_c(op, p.floor()),)
    if op in {">", "<="}:
        return (_c(op, p.floor()),)
    return _tilde(p) if op == "~" else _caret(p)


def _between(p: _Partial) -> tuple[Comparator, ...]:
    if p.major is None:
        return ()
    return (_c(">=", p.floor()), _c("<", p.ceiling()))


def _tilde(p: _Partial) -> tuple[Comparator, ...]:
    if not p.complete:
        return _between(p)
    low = p.floor()
    return (_c(">=", low), _c("<", _v(low.major, low.minor + 1, 0)))


def _caret(p: _Partial) -> tuple[Comparator, ...]:
    if p.major is None:
        return ()
    low = p.floor()
    if low.major > 0 or p.minor is None:
        high = _v(low.major + 1, 0, 0)
    elif low.minor > 0 or p.patch is None:
        high = _v(0, low.minor + 1, 0)
    else:
        high = _v(0, 0, low.patch + 1)
    return (_c(">=", low), _c("<", high))


def _parse_alternative(text: str, whole: str) -> tuple[Comparator, ...]:
    hyphen = _HYPHEN.fullmatch(text)
    if hyphen is not None:
        low = _parse_partial(hyphen["low"], whole)
        high = _parse_partial(hyphen["high"], whole)
        return _desugar(">=", low, whole) + _desugar("<=", high, whole)
    tokens = re.sub(r"(!=|<=|>=|<|>|=|\^|~)\s+", r"\1", text).replace(",", " ").split()
    if not tokens:
        raise SemverError(f"invalid semver range {whole!r}: empty alternative around '||'")
    comparators: tuple[Comparator, ...] = ()
    for token in tokens:
        match = _OPERATOR.fullmatch(token)
        assert match is not None  # the pattern accepts any token
        comparators += _desugar(match["op"] or "", _parse_partial(match["version"], whole), whole)
    return comparators


@dataclass(frozen=True, slots=True, kw_only=True)
class Range:
    """A set of versions: any alternative whose comparators all hold."""

    text: str
    """The range as written."""
    alternatives: tuple[tuple[Comparator, ...], ...]
    """OR of ANDs; an empty inner tuple accepts every release."""

    @classmethod
    def parse(cls, text: str) -> Range:
        """Parse a range such as ">=1.2.0 <2.0.0", "^1.2", "~1.2.3", "1.x", "*"."""
        if not text.strip():
            raise SemverError('empty semver range (write e.g. "^1.2" or ">=1.0.0 <2.0.0"; "*" for any)')
        alternatives = tuple(_parse_alternative(part.strip(), text) for part in text.split("||"))
        return cls(text=text, alternatives=alternatives)

    def matches(self, version: Version | str) -> bool:
        """Whether `version` is in the range; strings that are not versions never match."""
        if isinstance(version, str):
            try:
                version = Version.parse(version)
            except SemverError:
                return False
        return any(_alternative_matches(alt, version) for alt in self.alternatives)

    def __str__(self) -> str:
        return self.text


def _alternative_matches(comparators: tuple[Comparator, ...], version: Version) -> bool:
    if not all(c.test(version) for c in comparators):
        return False
    if not version.prerelease:
        return True
    return any(c.version.prerelease and c.version.core == version.core for c in comparators)


def best_match(range_: Range | str, tags: Iterable[str]) -> str | None:
    """Return the tag holding the highest version in `range_`, or None.

    Tags that are not semantic versions are skipped. When two tags hold the
    same version ("v1.2.3" and "1.2.3"), the choice is stable: the larger name.
    """
    wanted = Range.parse(range_) if isinstance(range_, str) else range_
    best: tuple[Version, str] | None = None
    for tag in tags:
        try:
            version = Version.parse(tag)
        except SemverError:
            continue
        if wanted.matches(version) and (best is None or (version, tag) > best):
            best = (version, tag)
    return None if best is None else best[1]
