"""The explorer's store: one SQLite file (stdlib ``sqlite3``, WAL mode) holding every job and its result.

A row is a run: its id, the model's name and weight fingerprint
(:func:`circuitlab.models.identity.weight_fingerprint`), the analysis, its canonical arguments
(:func:`circuitlab.serve.analyses.args_key`), its status, and the result's JSON or the error. A finished run
is looked up by (fingerprint, analysis, arguments), so reopening a URL returns it at once; the history page lists
the rows. Every change is committed at once (WAL, ``synchronous=NORMAL``: a committed row survives the process
being killed), and on start rows left ``queued`` or ``running`` by a server that died become ``interrupted``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Optional

from circuitlab.errors import InputError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    analysis TEXT NOT NULL,
    args TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT,
    error TEXT,
    created REAL NOT NULL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS runs_key ON runs (fingerprint, analysis, args, status);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created);
"""

#: the states of a run; the last three are final
STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
FINAL = ("done", "failed", "cancelled", "interrupted")


class Store:
    """The runs of one data folder (``DIR/circuitlab-serve.sqlite3``); safe to share between threads."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"--data {folder}: could not create the folder ({exc.strerror}); choose another "
                             "folder for --data") from None
        self.path = folder / "circuitlab-serve.sqlite3"
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise InputError(f"--data {folder}: {self.path.name} is not a circuitlab database ({exc}); choose "
                             "another folder for --data") from None
        self.interrupted = self._execute(
            "UPDATE runs SET status='interrupted', error='the server stopped before this run finished', "
            "finished=? WHERE status IN ('queued', 'running')", (time.time(),)).rowcount
        self.closed = False

    def _execute(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, params)

    def _rows(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute(sql, params)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def add(self, model: str, fingerprint: str, analysis: str, args: str) -> str:
        """A new queued run; returns its id."""
        run_id = uuid.uuid4().hex[:16]
        self._execute("INSERT INTO runs (id, model, fingerprint, analysis, args, status, created) "
                      "VALUES (?, ?, ?, ?, ?, 'queued', ?)", (run_id, model, fingerprint, analysis, args, time.time()))
        return run_id

    def remove(self, run_id: str) -> None:
        self._execute("DELETE FROM runs WHERE id=?", (run_id,))

    def set_status(self, run_id: str, status: str, *, result: Optional[dict] = None,
                   error: Optional[str] = None) -> None:
        """Move a run to ``status``; a final status records the time, and the result's JSON or the error."""
        assert status in STATUSES, status
        finished = time.time() if status in FINAL else None
        text = None if result is None else json.dumps(result, allow_nan=False, separators=(",", ":"))
        self._execute("UPDATE runs SET status=?, result=COALESCE(?, result), error=?, finished=? WHERE id=?",
                      (status, text, error, finished, run_id))

    def get(self, run_id: str, with_result: bool = True) -> Optional[dict[str, Any]]:
        """The run ``run_id`` (its result parsed when asked), or None."""
        cols = "*" if with_result else "id, model, fingerprint, analysis, args, status, error, created, finished"
        rows = self._rows(f"SELECT {cols} FROM runs WHERE id=?", (run_id,))
        return _parsed(rows[0]) if rows else None

    def find_done(self, fingerprint: str, analysis: str, args: str) -> Optional[dict[str, Any]]:
        """The latest finished run with this key, or None."""
        rows = self._rows("SELECT id FROM runs WHERE fingerprint=? AND analysis=? AND args=? AND status='done' "
                          "ORDER BY finished DESC LIMIT 1", (fingerprint, analysis, args))
        return self.get(rows[0]["id"]) if rows else None

    def history(self, last: int = 100) -> list[dict[str, Any]]:
        """The ``last`` runs, newest first, without their results."""
        rows = self._rows("SELECT id, model, fingerprint, analysis, args, status, error, created, finished FROM runs "
                          "ORDER BY created DESC LIMIT ?", (int(last),))
        return [_parsed(r) for r in rows]

    def close(self) -> None:
        """Checkpoint the WAL into the database file and close it (SIGTERM's clean end)."""
        with self._lock:
            if self.closed:
                return
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._db.close()
                self.closed = True


def _parsed(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    row["args"] = json.loads(row["args"])
    if row.get("result") is not None:
        row["result"] = json.loads(row["result"])
    return row
