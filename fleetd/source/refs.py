"""What the source follows: resolving its ref on the remote, and which pushes can move it.

Pure logic over ref names, shared by the fetcher (which resolves the ref
against the refs a remote advertises) and the webhook receivers (which ask
whether a push can change what the source deploys, so that a push to some
other branch costs no fetch). ``GitRef`` kinds:

* ``branch X`` follows ``refs/heads/X``;
* ``tag X`` deploys ``refs/tags/X`` (a tag moved by force is followed too);
* ``semver R`` deploys the highest tag whose version is in R: a push, a move
  or a deletion of any tag in R can change it, a tag outside R cannot;
* ``commit H`` is pinned: no push changes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fleetd.inventory.model import GitRef, RefKind
from fleetd.util.semver import Range, SemverError, best_match

HEADS, TAGS = "refs/heads/", "refs/tags/"


class Unresolved(Exception):
    """The ref cannot be resolved on the remote; the message lists what is there and what to do."""


@dataclass(frozen=True, slots=True)
class Target:
    """What the ref resolved to: the ref to download (None: all) and the object it names."""

    refname: str | None
    oid: str
    label: str
    """How it was chosen, for status: "branch main", "semver ^1 -> v1.4.2", "commit abc1234"."""


def pinned(ref: GitRef) -> Target:
    """The target of a pinned commit, known without asking the remote."""
    return Target(refname=None, oid=ref.value, label=str(ref))


def resolve(ref: GitRef, advertised: Mapping[str, str]) -> Target:
    """Resolve a branch, tag or semver range against the remote's refs (name -> object id)."""
    if ref.kind is RefKind.COMMIT:
        return pinned(ref)
    if ref.kind is RefKind.SEMVER:
        return _resolve_semver(ref, advertised)
    refname = (HEADS if ref.kind is RefKind.BRANCH else TAGS) + ref.value
    if refname not in advertised:
        raise Unresolved(_missing(ref.kind, advertised))
    return Target(refname=refname, oid=advertised[refname], label=str(ref))


def follows(ref: GitRef, pushed: str) -> str | None:
    """None if a push to `pushed` (a full ref name) can change what `ref` deploys; else the reason not."""
    if ref.kind is RefKind.COMMIT:
        return f"the source is pinned to commit {ref.value}; no push changes it"
    if ref.kind is RefKind.BRANCH:
        wanted = HEADS + ref.value
        return None if pushed == wanted else f"{_printable(pushed)} is not {wanted}, the branch followed"
    if ref.kind is RefKind.TAG:
        wanted = TAGS + ref.value
        return None if pushed == wanted else f"{_printable(pushed)} is not {wanted}, the tag deployed"
    if not pushed.startswith(TAGS):
        return f"{_printable(pushed)} is not a tag; the source follows tags in semver range {ref.value}"
    try:
        in_range = Range.parse(ref.value).matches(pushed.removeprefix(TAGS))
    except SemverError:
        return None  # a broken range is reported by the fetch; let it run
    return None if in_range else f"tag {_printable(pushed)} is outside semver range {ref.value}"


def _resolve_semver(ref: GitRef, advertised: Mapping[str, str]) -> Target:
    tags = [name.removeprefix(TAGS) for name in advertised if name.startswith(TAGS)]
    try:
        tag = best_match(Range.parse(ref.value), tags)
    except SemverError as error:
        raise Unresolved(f"{error}; fix the semver range") from None
    if tag is None:
        raise Unresolved(_missing(RefKind.SEMVER, advertised))
    return Target(refname=TAGS + tag, oid=advertised[TAGS + tag], label=f"{ref} -> {tag}")


def _missing(kind: RefKind, advertised: Mapping[str, str]) -> str:
    prefix = HEADS if kind is RefKind.BRANCH else TAGS
    names = sorted(n.removeprefix(prefix) for n in advertised if n.startswith(prefix))
    seen = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") if names else "none"
    what = {RefKind.BRANCH: "no such branch", RefKind.TAG: "no such tag"}.get(
        kind, "no tag matches the semver range"
    )
    plural = "branches" if kind is RefKind.BRANCH else "tags"
    return f"{what} on the remote ({plural} there: {seen}); push it or fix the source ref"


def _printable(text: str) -> str:
    # Ref names come from webhook payloads, i.e. from the caller: keep them short and plain.
    return "".join(c if c.isprintable() and not c.isspace() else "?" for c in text[:120])
