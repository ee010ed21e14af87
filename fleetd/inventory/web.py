"""The fleet file's ``[web]`` section, and the rule that keeps the HTTP API off the network without a token.

Read into `WebSettings`. Only the shape is checked here; the token file is
read by the HTTP server when it starts (`fleetd.api.auth`), so a missing
file is named there, before the server listens.

Two rules span sections, and both make an unsafe inventory a load error:

* ``actions = true`` needs ``token_file``: nobody acts without a token;
* a ``listen`` address that is not loopback needs ``token_file`` (the API
  then asks for the token), unless ``allow_unauthenticated = true`` says
  explicitly that the fleet's status may be read by anyone who reaches it.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from fleetd.inventory import syntax
from fleetd.inventory.fields import Table
from fleetd.inventory.model import WebSettings

WEB_KEYS = frozenset({"actions", "token_file", "allow_unauthenticated"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP address or ``localhost``) is reachable only from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name may resolve to anything


def read_web(table: Table | None, base: Path) -> WebSettings:
    """The ``[web]`` section (defaults when absent)."""
    if table is None:
        return WebSettings()
    token = table.text("token_file", syntax.nonempty)
    settings = WebSettings(
        actions=table.boolean("actions", False),
        token_file=syntax.resolve_path(base, token) if token else None,
        allow_unauthenticated=table.boolean("allow_unauthenticated", False),
    )
    if settings.actions and settings.token_file is None:
        table.report(
            "actions",
            'actions need an access token: set token_file = "/etc/fleetd/web.tokens" '
            "(lines of name:token), or set actions = false",
        )
    return settings


def check_exposure(fleet: Table, web: WebSettings, host: str) -> None:
    """Report a non-loopback ``listen`` that would serve the API to the network without a token."""
    if is_loopback(host) or web.token_file is not None or web.allow_unauthenticated:
        return
    fleet.report(
        "listen",
        f"{host!r} is not a loopback address, and the status API and web UI would be open to anyone "
        "who reaches it: set [web] token_file (the API then asks for a token), or set [web] "
        "allow_unauthenticated = true to serve it without one",
    )
