"""The daemon's memory across restarts: sync status and a local copy of ledgers (SQLite).

A restart must neither re-apply everything nor forget what was applied.
Status rows say, per cluster and sync, which revision was last reconciled,
how it ended and when — so a restarted daemon waits for the next interval
instead of reconciling at once, and ``fleetd status`` works without a
running daemon. Ledgers are primarily kept in the spokes (see
:mod:`fleetd.reconcile.ledger`); this copy serves status and recovery.

Nothing secret is stored: object identities, revisions, counts and error
messages (which never contain values; see the render and secrets stages).
SQLite runs in WAL mode so ``fleetd status`` can read while the daemon
writes.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from fleetd.kube.objects import Entry
from fleetd.reconcile.ledger import Ledger

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sync_status (
    cluster TEXT NOT NULL,
    sync TEXT NOT NULL,
    revision TEXT NOT NULL,
    result TEXT NOT NULL,
    objects INTEGER NOT NULL,
    changed INTEGER NOT NULL,
    pruned INTEGER NOT NULL,
    error TEXT,
    attempted_at REAL NOT NULL,
    succeeded_at REAL,
    duration REAL NOT NULL,
    PRIMARY KEY (cluster, sync)
);
CREATE TABLE IF NOT EXISTS rollout (
    wave INTEGER PRIMARY KEY,
    revision TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS suspensions (
    cluster TEXT NOT NULL,
    sync TEXT NOT NULL,  -- '' suspends the whole cluster
    PRIMARY KEY (cluster, sync)
);
CREATE TABLE IF NOT EXISTS flags (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger (
    cluster TEXT NOT NULL,
    sync TEXT NOT NULL,
    revision TEXT NOT NULL,
    prune INTEGER NOT NULL,
    entries TEXT NOT NULL,
    PRIMARY KEY (cluster, sync)
);
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncStatus:
    """How the last reconcile of one sync on one cluster ended."""

    cluster: str
    sync: str
    revision: str
    result: str  # "ready" | "failed" | "waiting" | "suspended"
    objects: int = 0
    changed: int = 0
    pruned: int = 0
    error: str | None = None
    attempted_at: float = 0.0
    succeeded_at: float | None = None
    duration: float = 0.0


class StateStore:
    """SQLite file ``<state_dir>/fleetd.db``; one short transaction per call."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = state_dir / "fleetd.db"
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=5.0)) as db, db:
            yield db

    def save_status(self, s: SyncStatus) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO sync_status VALUES (?,?,?,?,?,?,?,?,?,"
                " COALESCE(?, (SELECT succeeded_at FROM sync_status WHERE cluster=? AND sync=?)),?)",
                (
                    s.cluster, s.sync, s.revision, s.result, s.objects, s.changed, s.pruned, s.error,
                    s.attempted_at or time.time(), s.succeeded_at, s.cluster, s.sync, s.duration,
                ),
            )  # fmt: skip

    def statuses(self) -> list[SyncStatus]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT cluster, sync, revision, result, objects, changed, pruned, error, attempted_at,"
                " succeeded_at, duration FROM sync_status ORDER BY cluster, sync"
            ).fetchall()
        return [SyncStatus(**dict(zip(SyncStatus.__slots__, row, strict=True))) for row in rows]

    def forget_status(self, cluster: str, sync: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM sync_status WHERE cluster=? AND sync=?", (cluster, sync))

    def save_ledger(self, cluster: str, ledger: Ledger) -> None:
        entries = "\n".join(sorted(e.encode() for e in ledger.entries))
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO ledger VALUES (?,?,?,?,?)",
                (cluster, ledger.sync, ledger.revision, int(ledger.prune), entries),
            )

    def ledger(self, cluster: str, sync: str) -> Ledger | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT revision, prune, entries FROM ledger WHERE cluster=? AND sync=?", (cluster, sync)
            ).fetchone()
        if row is None:
            return None
        lines = [ln for ln in str(row[2]).splitlines() if ln]
        return Ledger(
            sync=sync, revision=row[0], prune=bool(row[1]), entries=frozenset(map(Entry.decode, lines))
        )

    def forget_ledger(self, cluster: str, sync: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM ledger WHERE cluster=? AND sync=?", (cluster, sync))

    def rollout(self) -> dict[int, str]:
        """The revision each rollout wave may apply."""
        with self._connect() as db:
            return {int(w): str(r) for w, r in db.execute("SELECT wave, revision FROM rollout").fetchall()}

    def save_rollout(self, wave: int, revision: str) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO rollout VALUES (?, ?)", (wave, revision))

    def flag(self, name: str) -> bool:
        with self._connect() as db:
            row = db.execute("SELECT value FROM flags WHERE name=?", (name,)).fetchone()
        return bool(row and row[0])

    def set_flag(self, name: str, value: bool) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO flags VALUES (?, ?)", (name, int(value)))

    def suspensions(self, cluster: str) -> set[str]:
        """Syncs of ``cluster`` suspended by command (``""``: the whole cluster)."""
        with self._connect() as db:
            rows = db.execute("SELECT sync FROM suspensions WHERE cluster=?", (cluster,)).fetchall()
        return {str(r[0]) for r in rows}

    def set_suspended(self, cluster: str, sync: str, suspended: bool) -> None:
        with self._connect() as db:
            if suspended:
                db.execute("INSERT OR REPLACE INTO suspensions VALUES (?, ?)", (cluster, sync))
            else:
                db.execute("DELETE FROM suspensions WHERE cluster=? AND sync=?", (cluster, sync))
