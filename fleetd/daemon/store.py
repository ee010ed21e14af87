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
writes. The event journal (`fleetd.daemon.events`) is kept here too,
bounded to the newest `JOURNAL_SIZE` events.

Failure is contained: every SQLite or file-system error is raised as
`StoreError`, which the fleet state turns into "cannot record" (an event
and a failing ``/readyz``) while reconciling goes on. A database that is
not a database (corrupt, truncated, overwritten — or a directory, or a file
fleetd's user cannot read and write) is moved aside at open as
``fleetd.db.corrupt-<time>`` and a fresh one is created: everything in it
is rebuilt from the spokes' ledgers and the next reconciles. The schema
carries a version (``PRAGMA user_version``) and is migrated forward at open.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from fleetd.daemon.events import Event
from fleetd.errors import FleetdError
from fleetd.kube.objects import Entry
from fleetd.reconcile.ledger import Ledger
from fleetd.reconcile.outcome import Result

log = logging.getLogger(__name__)

#: Events kept in the journal; older ones are dropped.
JOURNAL_SIZE = 10_000
#: Seconds a write waits for a lock held by another process (``fleetd status`` reading): short, because
#: writes run on the daemon's event loop.
BUSY_TIMEOUT = 1.0
#: The schema version this code writes (``PRAGMA user_version``).
SCHEMA_VERSION = 3


class StoreError(FleetdError):
    """The state directory cannot be read or written (full, read-only, corrupt, gone)."""

    temporary = True


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
#: Migrations from version N-1 to N, in order (version 1 is the schema above, unversioned before).
_MIGRATIONS = {
    2: """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    cluster TEXT,
    sync TEXT,
    revision TEXT,
    message TEXT NOT NULL,
    objects TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_cluster ON events (cluster, sync, id);
""",
    3: """
CREATE TABLE IF NOT EXISTS identities (
    cluster TEXT PRIMARY KEY,
    uid TEXT NOT NULL
);
""",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncStatus:
    """How the last reconcile of one sync on one cluster ended."""

    cluster: str
    sync: str
    revision: str
    result: Result
    objects: int = 0
    changed: int = 0
    pruned: int = 0
    error: str | None = None
    attempted_at: float = 0.0
    succeeded_at: float | None = None
    duration: float = 0.0
    written: tuple[str, ...] = ()
    """Objects a failed reconcile wrote before failing (kept until the sync converges)."""


_STATUS_COLUMNS = (
    "cluster", "sync", "revision", "result", "objects", "changed", "pruned", "error", "attempted_at",
    "succeeded_at", "duration",
)  # fmt: skip


class StateStore:
    """SQLite file ``<state_dir>/fleetd.db``; one short transaction per call.

    ``recover``: move a corrupt database aside and start a fresh one (the
    daemon); without it a corrupt database raises `StoreError` (read-only
    commands such as ``fleetd status``, which must not destroy anything).
    """

    def __init__(self, state_dir: Path, *, recover: bool = False) -> None:
        self.path = state_dir / "fleetd.db"
        try:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._open()
        except sqlite3.DatabaseError as exc:
            unusable = _corrupt(exc) or _not_our_file(self.path)  # garbage, or a directory, or unreadable
            if not recover or (isinstance(exc, sqlite3.OperationalError) and not unusable):
                raise StoreError(_describe(self.path, exc)) from exc
            self._move_aside(exc)
            try:
                self._open()
            except (sqlite3.Error, OSError) as again:
                raise StoreError(_describe(self.path, again)) from again
        except OSError as exc:
            raise StoreError(_describe(self.path, exc)) from exc

    def _open(self) -> None:
        with self._connect(raw=True) as db:
            db.execute("PRAGMA journal_mode=WAL")
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} was written by a newer fleetd (schema {version}, this one knows "
                    f"{SCHEMA_VERSION}); upgrade fleetd or move the file aside"
                )
            db.executescript(_SCHEMA)
            for target in range(max(version, 1) + 1, SCHEMA_VERSION + 1):
                db.executescript(_MIGRATIONS[target])
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("SELECT count(*) FROM sync_status").fetchone()  # reads a page: corrupt files fail here

    def _move_aside(self, exc: BaseException) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        log.error(
            "state database %s is unusable (%s); moved aside to %s and starting a fresh one: statuses "
            "are rebuilt from the spokes' ledgers and the next reconciles",
            self.path, exc, aside.name,
        )  # fmt: skip
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.is_symlink() or source.exists():
                source.replace(Path(f"{aside}{suffix}"))

    @contextmanager
    def _connect(self, *, raw: bool = False) -> Iterator[sqlite3.Connection]:
        if raw:
            with closing(sqlite3.connect(self.path, timeout=5.0)) as db, db:
                yield db
            return
        try:
            with closing(sqlite3.connect(self.path, timeout=BUSY_TIMEOUT)) as db, db:
                yield db
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(_describe(self.path, exc)) from exc

    def save_status(self, s: SyncStatus) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO sync_status VALUES (?,?,?,?,?,?,?,?,?,"
                " COALESCE(?, (SELECT succeeded_at FROM sync_status WHERE cluster=? AND sync=?)),?)",
                (
                    s.cluster, s.sync, s.revision, str(s.result), s.objects, s.changed, s.pruned, s.error,
                    s.attempted_at or time.time(), s.succeeded_at, s.cluster, s.sync, s.duration,
                ),
            )  # fmt: skip

    def statuses(self) -> list[SyncStatus]:
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {', '.join(_STATUS_COLUMNS)} FROM sync_status ORDER BY cluster, sync"  # noqa: S608
            ).fetchall()
        return [_status(row) for row in rows]

    # -- the event journal -------------------------------------------------------

    def append_event(self, event: Event) -> Event:
        """Record ``event`` and return it with its journal id; the journal keeps `JOURNAL_SIZE` events."""
        with self._connect() as db:
            cursor = db.execute(
                "INSERT INTO events (time, kind, severity, cluster, sync, revision, message, objects)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (
                    event.time, str(event.kind), str(event.severity), event.cluster, event.sync,
                    event.revision, event.message, json.dumps(list(event.objects)),
                ),
            )  # fmt: skip
            id_ = int(cursor.lastrowid or 0)
            if id_ % 100 == 0:
                db.execute("DELETE FROM events WHERE id <= ?", (id_ - JOURNAL_SIZE,))
        return event.numbered(id_)

    def events(
        self,
        *,
        cluster: str | None = None,
        sync: str | None = None,
        kinds: tuple[str, ...] = (),
        since: float | None = None,
        after_id: int | None = None,
        limit: int = 100,
    ) -> list[Event]:
        """Journal events matching every given filter, oldest first, at most ``limit`` (the newest)."""
        where: list[str] = ["1=1"]
        args: list[object] = []
        for column, value in (("cluster", cluster), ("sync", sync)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if kinds:
            where.append(f"kind IN ({','.join('?' * len(kinds))})")
            args += list(kinds)
        if since is not None:
            where.append("time >= ?")
            args.append(since)
        if after_id is not None:
            where.append("id > ?")
            args.append(after_id)
        columns = "id, time, kind, severity, cluster, sync, revision, message, objects"
        query = f"SELECT {columns} FROM events WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?"  # noqa: S608
        with self._connect() as db:
            rows = db.execute(query, (*args, max(1, min(limit, JOURNAL_SIZE)))).fetchall()
        return [_event(row) for row in reversed(rows)]

    def identities(self) -> dict[str, str]:
        """Cluster name -> the UID of its kube-system namespace, as first recorded."""
        with self._connect() as db:
            return {str(c): str(u) for c, u in db.execute("SELECT cluster, uid FROM identities").fetchall()}

    def save_identity(self, cluster: str, uid: str) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO identities VALUES (?, ?)", (cluster, uid))

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
            sync=sync, revision=row[0], prune=bool(row[1]), entries=frozenset(map(Entry.decode, lines)),
            cluster=cluster,
        )  # fmt: skip

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


def _status(row: tuple[object, ...]) -> SyncStatus:
    values = dict(zip(_STATUS_COLUMNS, row, strict=True))
    try:
        result = Result(str(values.pop("result")))
    except ValueError:
        result = Result.PENDING
    return SyncStatus(result=result, **values)  # type: ignore[arg-type]


def _event(row: tuple[object, ...]) -> Event:
    id_, time_, kind, severity, cluster, sync, revision, message, objects = row
    return Event.from_json(
        {
            "id": id_, "time": time_, "kind": kind, "severity": severity, "cluster": cluster,
            "sync": sync, "revision": revision, "message": message, "objects": json.loads(str(objects)),
        }
    )  # fmt: skip


def _not_our_file(path: Path) -> bool:
    """The database path exists but is not a regular file this process may read and write."""
    try:
        info = path.lstat()
    except OSError:
        return False
    return not stat.S_ISREG(info.st_mode) or not os.access(path, os.R_OK | os.W_OK)


def _corrupt(exc: sqlite3.DatabaseError) -> bool:
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text or "disk image" in text


def _describe(path: Path, exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    hint = ""
    lowered = text.lower()
    if "full" in lowered or "no space" in lowered:
        hint = "; free space on the file system of the state directory"
    elif "readonly" in lowered or "read-only" in lowered or "permission" in lowered:
        hint = "; make the state directory writable by fleetd's user"
    return f"cannot record state in {path}: {text}{hint}"
