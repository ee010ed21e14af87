"""Targets spoken to over HTTP: the signed webhook and the commit-status APIs of the forges.

**Webhook.** A JSON POST of the `Notice` (``Notice.to_json``) with::

    Content-Type: application/json
    X-Fleetd-Event: reconcile.failed
    X-Fleetd-Delivery: <uuid, the same on every retry of one message>
    X-Fleetd-Signature-256: sha256=<hex HMAC-SHA256 of the raw body, keyed by secret_file>

A receiver recomputes the HMAC over the bytes it received and compares in
constant time (the scheme GitHub uses for its own webhooks).

**Commit statuses**, one context per cluster and sync
(`fleetd.notify.statuses`):

* GitHub: ``POST {api_url}/repos/{owner}/{repo}/statuses/{sha}``,
  ``Authorization: Bearer <token>``, states pending/success/failure;
* Gitea and Forgejo: the same path under ``/api/v1``,
  ``Authorization: token <token>``;
* GitLab: ``POST {api_url}/projects/{id or url-encoded path}/statuses/{sha}``,
  ``PRIVATE-TOKEN: <token>``, states pending/success/failed and ``name``
  for the context. GitLab refuses a transition to the state a status
  already has (400); that answer counts as delivered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any
from urllib.parse import quote

from fleetd.inventory import Notification, TargetKind
from fleetd.notify.credentials import Credential
from fleetd.notify.messages import Notice
from fleetd.notify.post import DeliveryError, Poster, host_of
from fleetd.notify.statuses import CommitStatus

SIGNATURE_HEADER = "X-Fleetd-Signature-256"


def signature(key: bytes, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of body>``, as the receiver recomputes it."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


class WebhookTarget:
    """POSTs each notice as signed JSON to one URL."""

    def __init__(self, poster: Poster, url: str, secret: Credential) -> None:
        self._poster, self._url, self._secret = poster, url, secret

    @property
    def label(self) -> str:
        return f"webhook {host_of(self._url)}"

    async def send(self, notice: Notice) -> None:
        body = json.dumps(notice.to_json(), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "fleetd",
            "X-Fleetd-Event": str(notice.event.kind),
            "X-Fleetd-Delivery": notice.id,
            SIGNATURE_HEADER: signature(self._secret.value.encode(), body),
        }
        await self._poster.post(self._url, body, headers)


class CommitStatusTarget:
    """Sets commit statuses on GitHub, GitLab or Gitea/Forgejo."""

    def __init__(self, poster: Poster, rule: Notification, token: Credential) -> None:
        assert rule.api_url is not None, "the inventory sets a default or requires api_url"
        assert rule.repository is not None, "the inventory requires repository"
        self._poster, self._kind, self._token = poster, rule.kind, token
        self._api, self._repository = rule.api_url, rule.repository

    @property
    def label(self) -> str:
        return f"{self._kind} statuses {host_of(self._api)}"

    def request(self, status: CommitStatus) -> tuple[str, dict[str, Any], dict[str, str]]:
        """URL, JSON body and headers for `status` (without sending)."""
        token = self._token.value
        body: dict[str, Any] = {"state": status.state, "description": status.description}
        if status.target_url:
            body["target_url"] = status.target_url
        if self._kind is TargetKind.GITLAB:
            url = f"{self._api}/projects/{quote(self._repository, safe='')}/statuses/{status.sha}"
            body |= {"name": status.context, "state": "failed" if status.state == "failure" else status.state}
            return url, body, {"PRIVATE-TOKEN": token}
        url = f"{self._api}/repos/{self._repository}/statuses/{status.sha}"
        body["context"] = status.context
        if self._kind is TargetKind.GITHUB:
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
                       "X-GitHub-Api-Version": "2022-11-28"}  # fmt: skip
        else:
            headers = {"Authorization": f"token {token}"}
        return url, body, headers

    async def send(self, status: CommitStatus) -> None:
        url, body, headers = self.request(status)
        headers |= {"Content-Type": "application/json", "User-Agent": "fleetd"}
        try:
            await self._poster.post(url, json.dumps(body).encode(), headers)
        except DeliveryError as exc:
            if self._kind is TargetKind.GITLAB and exc.status == 400:
                return  # "Cannot transition status": it already has this state
            raise
