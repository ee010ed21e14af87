"""The fleet file's ``[source]``, ``[source.auth]`` and ``[webhooks]`` sections.

Read into `GitSource` and `Webhooks`. Only the shape is checked here (types,
which keys go together, which go with which kind of URL); the files named
(keys, tokens, known_hosts, CA bundles) are read when a fetch needs them, so
a missing key fails the source at run time with a message, not the whole
inventory load. One way of authenticating is allowed at a time: an SSH key,
a token file or a GitHub App.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fleetd.inventory import syntax
from fleetd.inventory.fields import Table
from fleetd.inventory.model import (
    DEFAULT_BRANCH,
    DEFAULT_GIT_USERNAME,
    DEFAULT_GITHUB_API_URL,
    DEFAULT_SOURCE_INTERVAL,
    DEFAULT_SOURCE_TIMEOUT,
    DEFAULT_UPKEEP_INTERVAL,
    GitAuth,
    GitHubApp,
    GitRef,
    GitSource,
    RefKind,
    Webhooks,
)

SOURCE_KEYS = frozenset(
    {"url", "branch", "tag", "semver", "commit", "interval", "timeout", "auth", "depth", "upkeep_interval"}
)
AUTH_KEYS = frozenset(
    {
        "ssh_key_file",
        "passphrase_file",
        "known_hosts_file",
        "token_file",
        "ca_file",
        "username",
        "github_app_id",
        "installation_id",
        "private_key_file",
        "github_api_url",
    }
)
WEBHOOK_KEYS = frozenset({"github_secret_file", "generic_secret_file", "gitlab_token_file"})
_FILE_KEYS = (
    "ssh_key_file",
    "passphrase_file",
    "known_hosts_file",
    "token_file",
    "ca_file",
    "private_key_file",
)
_APP_KEYS = ("github_app_id", "installation_id", "private_key_file")
_REF_CHECKS = {
    RefKind.BRANCH: syntax.git_ref_name("branch"),
    RefKind.TAG: syntax.git_ref_name("tag"),
    RefKind.SEMVER: syntax.semver_range,
    RefKind.COMMIT: syntax.commit_hash,
}
MAX_DEPTH = 1_000_000


def read_source(table: Table, base: Path) -> GitSource:
    """The ``[source]`` section; problems are recorded on `table`'s document."""
    url = table.text("url", syntax.source_url, required='url = "https://github.com/me/fleet.git"') or ""
    if syntax.url_kind(url) == "local":
        url = str(syntax.resolve_path(base, url))
    return GitSource(
        url=url,
        ref=_read_ref(table),
        interval=table.duration("interval", DEFAULT_SOURCE_INTERVAL),
        timeout=table.duration("timeout", DEFAULT_SOURCE_TIMEOUT),
        auth=_read_auth(table.table("auth", AUTH_KEYS), base, url),
        depth=_read_depth(table, syntax.url_kind(url)),
        upkeep_interval=table.duration("upkeep_interval", DEFAULT_UPKEEP_INTERVAL),
    )


def read_webhooks(table: Table | None, base: Path) -> Webhooks:
    """The ``[webhooks]`` section: one secret file per receiver to enable."""
    if table is None:
        return Webhooks()
    files = {key: table.text(key, syntax.nonempty) for key in sorted(WEBHOOK_KEYS)}
    paths = {key: syntax.resolve_path(base, value) if value else None for key, value in files.items()}
    return Webhooks(**paths)


def _read_ref(table: Table) -> GitRef:
    given = [kind for kind in RefKind if kind.value in table.data]
    values = [table.text(kind.value, _REF_CHECKS[kind]) for kind in given]
    if len(given) > 1:
        found = " and ".join(kind.value for kind in given)
        table.report(given[1].value, f"set only one of branch, tag, semver, commit (found {found})")
    if not given or values[0] is None:
        return GitRef(kind=RefKind.BRANCH, value=DEFAULT_BRANCH)
    value = values[0].lower() if given[0] is RefKind.COMMIT else values[0]
    return GitRef(kind=given[0], value=value)


def _read_depth(table: Table, kind: str | None) -> int:
    depth = table.integer("depth", 0, minimum=0)
    if depth and kind in ("local", "file"):
        table.report("depth", "libgit2 cannot fetch shallow from a local path; drop depth")
        return 0
    if depth > MAX_DEPTH:
        table.report("depth", f"{depth} is more history than any repository has; use 0 for all of it")
        return 0
    if depth and table.data.get("commit"):
        table.report("depth", "a pinned commit may lie deeper than the shallow history; drop depth")
    return depth


def _read_auth(table: Table | None, base: Path, url: str) -> GitAuth | None:
    if table is None:
        return None
    files = {key: table.text(key, syntax.nonempty) for key in _FILE_KEYS}
    app_id = _positive(table, "github_app_id")
    installation = _positive(table, "installation_id")
    api_url = table.text("github_api_url", _api_url)
    _check_auth(table, files, syntax.url_kind(url))
    if not any(files.values()) and app_id is None and installation is None:
        return None
    paths = {key: syntax.resolve_path(base, value) if value else None for key, value in files.items()}
    app = None
    if app_id is not None and installation is not None and paths["private_key_file"] is not None:
        app = GitHubApp(
            app_id=app_id,
            installation_id=installation,
            private_key_file=paths["private_key_file"],
            api_url=(api_url or DEFAULT_GITHUB_API_URL).rstrip("/"),
        )
    return GitAuth(
        ssh_key_file=paths["ssh_key_file"],
        passphrase_file=paths["passphrase_file"],
        known_hosts_file=paths["known_hosts_file"],
        token_file=paths["token_file"],
        ca_file=paths["ca_file"],
        github_app=app,
        username=table.text("username", syntax.nonempty) or DEFAULT_GIT_USERNAME,
    )


def _positive(table: Table, key: str) -> int | None:
    if key not in table.data:
        return None
    value = table.integer(key, 0, minimum=1)
    return value or None


def _api_url(value: str) -> str | None:
    if value.startswith(("https://", "http://")) and "@" not in value:
        return None
    return f"{value!r} is not an API URL; use https://api.github.com or https://HOST/api/v3"


def _check_auth(table: Table, files: Mapping[str, str | None], kind: str | None) -> None:
    ssh, known, token = files["ssh_key_file"], files["known_hosts_file"], files["token_file"]
    app = [key for key in _APP_KEYS if key in table.data]
    given = (("ssh_key_file", ssh), ("token_file", token), ("a GitHub App", app))
    methods = [name for name, on in given if on]
    if len(methods) > 1:
        table.report(
            "token_file" if token else "github_app_id",
            f"set one way to authenticate, not {' and '.join(methods)}",
        )
    if app and len(app) < len(_APP_KEYS):
        missing = ", ".join(key for key in _APP_KEYS if key not in app)
        table.report(
            app[0],
            f"a GitHub App needs github_app_id, installation_id and private_key_file ({missing} missing)",
        )
    if files["passphrase_file"] and not ssh:
        table.report(
            "passphrase_file", "passphrase_file is the passphrase of ssh_key_file; set ssh_key_file too"
        )
    if ssh and not known:
        table.report(
            "ssh_key_file",
            "known_hosts_file is required with ssh_key_file, so the server's host key can be verified "
            "(create one with: ssh-keyscan <host> > known_hosts)",
        )
    if ssh and kind == "http":
        table.report(
            "ssh_key_file", "an SSH key needs an ssh:// or git@host:path url; use token_file for https"
        )
    if (token or app) and kind == "ssh":
        table.report(
            "token_file" if token else app[0],
            "a token or GitHub App needs an https:// url; use ssh_key_file for ssh",
        )
    if files["ca_file"] and kind == "ssh":
        table.report(
            "ca_file", "ca_file is for https:// urls; an ssh server is trusted through known_hosts_file"
        )
