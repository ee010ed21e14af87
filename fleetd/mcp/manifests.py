"""Read-only looks at a cluster for the MCP tools: a sync's rendered manifests, and its objects' health.

**Manifests.** The source is fetched into a throw-away directory and the
sync rendered for the cluster by the daemon's own code
(`ClusterReconciler.desired`: the shared renderer, the cluster's variables,
SOPS decryption, the ownership labels), as ``fleetd diff`` does, at the head
of the source's ref. Nothing is written anywhere. Before anything leaves:

* every value of a Secret's ``data`` and ``stringData`` (and a kubectl
  last-applied annotation) is ``***`` (`fleetd.reconcile.diff.masked`);
* any other object rendered from a SOPS-encrypted file, or by a
  kustomization that reads one, keeps only its identity: ``data``, ``stringData``,
  ``binaryData`` and ``spec`` become ``***`` whatever its kind, since
  decrypted plaintext may sit in a ConfigMap too;
* every other string is scrubbed of the sync's Secret values (a password
  copied into a ConfigMap or an annotation shows as ``***``).

**Health.** The objects of the sync's ledger are read with one GET each (at
most `MAX_HEALTH_OBJECTS`) and assessed by `fleetd.reconcile.health.assess`.
Only the verdicts leave, never the objects.
"""

from __future__ import annotations

import asyncio
import copy
import tempfile
from pathlib import Path
from typing import Any

from fleetd.errors import FleetdError
from fleetd.inventory import Cluster, Fleet, Sync
from fleetd.kube.client import NotFound, connect
from fleetd.kube.discovery import Discovery
from fleetd.mcp.access import ToolFailure
from fleetd.reconcile.diff import LAST_APPLIED, MASK, masked, scrub
from fleetd.reconcile.health import assess
from fleetd.reconcile.ledger import Ledger
from fleetd.reconcile.reconciler import ClusterReconciler
from fleetd.render import RenderCache, RenderError
from fleetd.secrets.decryptor import decryptor
from fleetd.secrets.sops import is_sops_encrypted
from fleetd.source import GitSourceFetcher, remove_tree

MAX_HEALTH_OBJECTS = 200
HIDDEN = ("data", "stringData", "binaryData", "spec")


async def rendered(fleet: Fleet, cluster: Cluster, sync: Sync, *, timeout: float = 60.0) -> dict[str, Any]:
    """The sync's objects as the daemon would apply them to `cluster` now, secrets masked."""
    scratch = Path(tempfile.mkdtemp(prefix="fleetd-mcp-"))
    try:
        async with asyncio.timeout(timeout):
            snapshot = await GitSourceFetcher(fleet.source, scratch).fetch()
            async with ClusterReconciler.open(
                fleet=fleet.name, cluster=cluster, renders=RenderCache(), decrypt=decryptor(fleet.decryption)
            ) as reconciler:
                try:
                    desired = await reconciler.desired(sync, snapshot)
                except RenderError as exc:
                    raise ToolFailure(f"sync {sync.name} does not render: {exc}") from exc
            secrets = [d.obj for d in desired if d.obj.get("kind") == "Secret"]
            objects = [scrubbed(shown_object(d.obj, d.origin, snapshot.root), secrets) for d in desired]
    except TimeoutError:
        raise ToolFailure(f"rendering {cluster.name}/{sync.name} took longer than {timeout:g}s") from None
    except FleetdError as exc:
        if isinstance(exc, ToolFailure):
            raise
        raise ToolFailure(f"cannot render {cluster.name}/{sync.name}: {exc}") from exc
    finally:
        await asyncio.to_thread(remove_tree, scratch)
    return {
        "cluster": cluster.name,
        "sync": sync.name,
        "revision": snapshot.revision,
        "ref": snapshot.ref,
        "count": len(objects),
        "objects": objects,
    }


def shown_object(obj: dict[str, Any], origin: str, root: Path) -> dict[str, Any]:
    shown = masked({}, obj)[1] if obj.get("kind") == "Secret" else copy.deepcopy(obj)
    annotations = (shown.get("metadata") or {}).get("annotations") or {}
    if LAST_APPLIED in annotations:
        annotations[LAST_APPLIED] = MASK
    if obj.get("kind") != "Secret" and _from_encrypted(root, origin.split("#", 1)[0]):
        for key in HIDDEN:
            if key in shown:
                shown[key] = MASK
    return {"origin": origin, "manifest": shown}


def scrubbed(value: Any, secrets: list[dict[str, Any]]) -> Any:
    """Every string in `value` with the sync's Secret values (and their base64) replaced by ``***``."""
    if isinstance(value, dict):
        return {k: scrubbed(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [scrubbed(v, secrets) for v in value]
    return scrub(value, secrets) if isinstance(value, str) else value


def _from_encrypted(root: Path, file: str) -> bool:
    """Whether `file` (repository-relative) is SOPS-encrypted, or is a kustomization beside one."""
    path = root / file
    try:
        if path.name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
            return any(p.is_file() and is_sops_encrypted(p.read_bytes()) for p in path.parent.rglob("*"))
        return path.is_file() and is_sops_encrypted(path.read_bytes())
    except OSError:
        return True  # cannot tell: hide


async def health(
    cluster: Cluster, ledger: Ledger, *, timeout: float = 20.0
) -> tuple[dict[str, dict[str, str]], str | None]:
    """Health of the ledger's objects, read live: ``{object: {status, message}}`` and a note."""
    entries = sorted(ledger.entries)[:MAX_HEALTH_OBJECTS]
    note = (
        None
        if len(ledger.entries) <= MAX_HEALTH_OBJECTS
        else f"health of the first {MAX_HEALTH_OBJECTS} objects"
    )
    found: dict[str, dict[str, str]] = {}
    try:
        async with (
            asyncio.timeout(timeout),
            await connect(cluster.name, cluster.kubeconfig, cluster.context) as client,
        ):
            discovery = Discovery(client)
            for entry in entries:
                try:
                    resource = await discovery.resolve(entry.api_version, entry.ref.kind)
                    live = await client.request("GET", resource.path(entry.ref.namespace, entry.ref.name))
                except NotFound:
                    found[str(entry.ref)] = {"status": "missing", "message": "not found on the cluster"}
                    continue
                verdict = assess(live)
                found[str(entry.ref)] = {"status": verdict.status, "message": verdict.message}
    except TimeoutError:
        return found, f"the cluster did not answer within {timeout:g}s; health is partial"
    except FleetdError as exc:
        return found, f"health not read: {exc}"
    return found, note
