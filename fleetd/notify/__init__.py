"""Notifications: telling people and forges what happened, once, naming the cluster.

A view of the event stream (`fleetd.daemon.events`), run as one root task
of the daemon (`Notifications.run`). For every event on the bus, each
``[[notifications]]`` entry (`fleetd.inventory.Notification`) decides:

1. **select** (`rules`): event kind, least severity, cluster and sync
   patterns;
2. **deduplicate** (`dedup`): a failure is sent once per dedup window
   however often it repeats, and its recovery once when it clears;
   commit statuses are sent only when a context's state changes (`statuses`);
3. **rate-limit** (`dedup.RateLimit`): at most N messages per period;
4. **deliver** (`delivery`): each target has its own bounded queue and
   worker that retries with back-off, so a slow or dead receiver delays
   only its own messages and never the reconciles, which only publish.

Messages (`messages`) name the fleet, cluster, sync, revision, what
happened and what to do. Targets: apprise URLs (`chat`), a signed JSON
webhook and commit statuses on GitHub, GitLab and Gitea/Forgejo (`forges`,
over `post`). Credentials are read from files at start (`credentials`) and
never logged or put in a message. Every delivery is counted by result
(sent, failed, suppressed) in the fleet state, where the metrics read it.
"""

from __future__ import annotations

from fleetd.notify.notifier import Notifications

__all__ = ["Notifications"]
