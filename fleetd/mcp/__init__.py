"""The MCP server: agents read the fleet through a safe interface instead of running kubectl.

``fleetd mcp --config FILE`` serves the Model Context Protocol over stdio,
built on the official ``mcp`` SDK (`server`, the only module that imports
it). It is **read-only by default**: fleet status, a cluster, a sync
(objects, health, drift, last error), events with filters, a diff by
server-side dry run, a sync's rendered manifests, revisions and the
rollout, and an explanation of why a sync is not ready (`tools`, with the
answers shaped in `views`, `explain` and `manifests`). With
``--read-write`` it also offers reconcile, suspend, resume and rollout
hold/resume/promote, which are commands to the running daemon, each
recorded by it as an event.

Where the data comes from is `access`: the running daemon's control socket
for live state and commands, the state directory (read only) for events,
ledgers and, when the daemon is down, the recorded state.

No secret value ever leaves: the status, events and ledgers hold none; the
diff and the rendered manifests mask Secret data and scrub messages; every
answer passes a last guard that masks any Secret manifest in it.
"""
