"""The sqlite store's accuracy tables: per model version the totals of its scores, and a
score log a write appends to in its own transaction (one INSERT: reading, merging and
rewriting the totals on every write cost as much again as the stream's own write,
measured), folded into the totals every so often and trimmed to the newest rows, whose
residual chunks give online intervals.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from statecast.service.accuracy import (
    RESIDUAL_WRITES,
    Totals,
    add_totals,
    decode_totals,
    encode_totals,
    residual_chunk,
)
from statecast.service.scoring import WriteScores
from statecast.service.stores.base import StreamRecord

#: Per model version: when its first score was added, and its totals (row names, float64)
#: folded in from the score log.
ACCURACY = """
CREATE TABLE IF NOT EXISTS accuracy (
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    since REAL NOT NULL,
    names TEXT NOT NULL,
    totals BLOB NOT NULL,
    PRIMARY KEY (model, version)
)
"""
#: The score log: one row per write transaction that scored, its totals (NULL once folded
#: into ``accuracy``) and its residual chunk (kept for the newest RESIDUAL_WRITES rows).
#: Appending a row is one INSERT; reading, merging and rewriting the totals on every
#: write cost as much again as the stream's own write (measured). No index: the log is
#: trimmed to a few hundred rows per version, and an index would add a page to every
#: write's commit.
SCORES = ("CREATE TABLE IF NOT EXISTS scores (model TEXT NOT NULL, version TEXT NOT NULL, "
          "at REAL NOT NULL, names TEXT, totals BLOB, chunk BLOB NOT NULL)")
#: Fold a version's logged totals into ``accuracy`` and trim its log every this many rows.
FOLD_EVERY = 64

#: A score log row's values after model and version: time, totals' names and blob, chunk.
LogRow = tuple[float, str, bytes, bytes]


def log_row(scores: WriteScores | None, results: Sequence[bool]) -> LogRow | None:
    """What the writes that succeeded scored, as a score log row (None: nothing)."""
    added = None if scores is None else scores.select(results)
    if added is None:
        return None
    names, blob = encode_totals(added.totals)
    return time.time(), names, blob, residual_chunk(added)


def add_scores(connection: sqlite3.Connection,
                writes: Sequence[tuple[StreamRecord, int | None]], results: Sequence[bool],
                scores: WriteScores | None, prepared: LogRow | None) -> None:
    """Inside the writes' transaction: log what the writes that succeeded scored (one row;
    the writes are of one model version). ``prepared``: the row if every write succeeds,
    computed before the writers' lock was taken, so that it is held for less time."""
    row = prepared if all(results) else log_row(scores, results)
    if row is None:
        return
    model, version = writes[0][0].model, writes[0][0].version
    cursor = connection.execute(
        "INSERT INTO scores (model, version, at, names, totals, chunk) VALUES "
        "(?, ?, ?, ?, ?, ?)", (model, version, *row))
    if (cursor.lastrowid or 0) % FOLD_EVERY == 0:
        for folded in connection.execute("SELECT DISTINCT model, version FROM scores "
                                         "WHERE totals IS NOT NULL").fetchall():
            fold(connection, *folded)


def read_totals(connection: sqlite3.Connection, model: str, version: str
            ) -> tuple[float | None, Totals, float | None, Totals, int]:
    """A version's folded totals (since, totals) and its log's unfolded ones (earliest
    time, totals, newest row)."""
    row = connection.execute("SELECT since, names, totals FROM accuracy WHERE model = ? AND "
                             "version = ?", (model, version)).fetchone()
    since, folded = (None, {}) if row is None else (row[0], decode_totals(row[1], row[2]))
    logged: Totals = {}
    first, last = None, 0
    for rowid, at, names, blob in connection.execute(
            "SELECT rowid, at, names, totals FROM scores WHERE model = ? AND version = ? AND "
            "totals IS NOT NULL ORDER BY rowid", (model, version)):
        add_totals(logged, decode_totals(names, blob))
        first = at if first is None else first
        last = rowid
    return since, folded, first, logged, last


def fold(connection: sqlite3.Connection, model: str, version: str) -> None:
    """Move a version's logged totals into ``accuracy`` and keep only its newest
    RESIDUAL_WRITES log rows (inside the caller's transaction)."""
    since, totals, first, logged, last = read_totals(connection, model, version)
    if last:
        names, blob = encode_totals(add_totals(totals, logged))
        connection.execute("INSERT OR REPLACE INTO accuracy (model, version, since, names, "
                           "totals) VALUES (?, ?, ?, ?, ?)",
                           (model, version, since if since is not None else first, names,
                            blob))
        connection.execute("UPDATE scores SET names = NULL, totals = NULL WHERE model = ? AND "
                           "version = ? AND rowid <= ?", (model, version, last))
    connection.execute(
        "DELETE FROM scores WHERE model = ? AND version = ? AND rowid <= (SELECT rowid FROM "
        "scores WHERE model = ? AND version = ? ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
        (model, version, model, version, RESIDUAL_WRITES))
