"""Conversation transcripts in SQLite, written as they happen.

Why this shape:

* WAL + ``synchronous=NORMAL``: each write is one short committed transaction
  that readers (the ``/api/conversations`` endpoints) never block on; a killed
  *process* loses nothing committed (WAL survives process death; only an OS crash
  or power loss can drop the last transactions at NORMAL, an accepted trade for
  not fsyncing on every utterance).
* One utterance row per Realtime item, upserted on ``(call_sid, item_id)``: the
  assistant's transcript is stored when it completes, and a later barge-in
  truncation rewrites it to what the caller actually heard. Truncation is sticky:
  once a row is ``truncated``, a late non-truncated write (e.g. a transcript
  ``done`` that raced the truncate) cannot put the unheard words back.
* One connection (``check_same_thread=False``) guarded by a lock: the trio app
  calls in through :class:`AsyncStore`, i.e. worker threads, one at a time.
* A call's row is ``active`` until the bridge records how it ended. A bridge
  killed with ``kill -9`` records nothing, so at start-up it calls
  :meth:`Store.mark_interrupted`: no call of a previous run can still be live
  (one store per bridge process), and "active forever" would be a lie.
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

import trio

__all__ = ["Store", "AsyncStore", "Role"]

Role = Literal["caller", "assistant", "tool"]
_ROLES = ("caller", "assistant", "tool")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    call_sid    TEXT PRIMARY KEY,
    stream_sid  TEXT,
    started_at  TEXT NOT NULL,
    ended_at    TEXT,
    from_number TEXT,
    to_number   TEXT,
    status      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS utterances (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    call_sid     TEXT NOT NULL,
    item_id      TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('caller', 'assistant', 'tool')),
    text         TEXT NOT NULL,
    truncated    INTEGER NOT NULL DEFAULT 0,
    audio_end_ms INTEGER,
    created_at   TEXT NOT NULL,
    UNIQUE (call_sid, item_id)
);
CREATE INDEX IF NOT EXISTS conversations_started ON conversations (started_at);
CREATE TABLE IF NOT EXISTS console_settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL
);
"""

_UPSERT_UTTERANCE = """
INSERT INTO utterances (call_sid, item_id, role, text, truncated, audio_end_ms, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (call_sid, item_id) DO UPDATE SET
    role = excluded.role,
    text = CASE WHEN utterances.truncated AND NOT excluded.truncated
                THEN utterances.text ELSE excluded.text END,
    audio_end_ms = CASE WHEN utterances.truncated AND NOT excluded.truncated
                THEN utterances.audio_end_ms ELSE excluded.audio_end_ms END,
    truncated = MAX(utterances.truncated, excluded.truncated)
"""


#: the most rows one search returns
MAX_SEARCH_LIMIT = 1000


#: the first line of a conversation that contains the searched text (``?`` = the LIKE pattern)
_FIRST_MATCH = ("(SELECT u.text FROM utterances u WHERE u.call_sid = c.call_sid "
                "AND u.text LIKE ? ESCAPE '\\' ORDER BY u.id LIMIT 1)")


def search_filter(*, number: str | None = None, since: str | date | None = None,
                  until: str | date | None = None, text: str | None = None) -> tuple[str, tuple[Any, ...]]:
    """The ``WHERE`` clause (over ``conversations c``) and its arguments for a search."""
    clauses: list[str] = []
    args: list[Any] = []
    if number is not None and number.strip():
        digits = re.sub(r"\D", "", number)
        if not digits:
            raise ValueError(f"number {number!r} has no digits")
        clauses.append("(c.from_number LIKE ? OR c.to_number LIKE ?)")
        args += [f"%{digits}%"] * 2
    if since:
        clauses.append("c.started_at >= ?")
        args.append(_instant(str(since), "since", end_of_day=False))
    if until:
        clauses.append("c.started_at <= ?")
        args.append(_instant(str(until), "until", end_of_day=True))
    if text:
        clauses.append(f"{_FIRST_MATCH} IS NOT NULL")
        args.append(_like_pattern(text))
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)


def _like_pattern(text: str) -> str:
    """``%text%`` with LIKE's own wildcards taken literally (``ESCAPE '\\'``)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _instant(value: str, name: str, *, end_of_day: bool) -> str:
    """An ISO 8601 date or datetime as the store writes ``started_at`` (UTC, milliseconds), so
    that the comparison is a string comparison on the index."""
    v = value.strip()
    try:
        if len(v) == 10:  # a bare date: the day's first (or, for an upper bound, last) millisecond
            day = datetime.fromisoformat(v).replace(tzinfo=UTC)
            t = day + timedelta(days=1, milliseconds=-1) if end_of_day else day
        else:
            t = datetime.fromisoformat(v.replace("Z", "+00:00"))
            t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    except ValueError:
        raise ValueError(f"{name} {value!r} is not an ISO 8601 date or datetime "
                         f"(e.g. 2026-12-06 or 2026-12-06T14:30:00Z)") from None
    return t.isoformat(timespec="milliseconds")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Store:
    """Synchronous, thread-safe transcript store. Every write commits before returning."""

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        """``read_only``: for a reader beside a live bridge (``callsim bridge mcp``): the file must
        exist, nothing is created or migrated, and SQLite refuses every write."""
        self.path = path
        self.read_only = read_only
        self._lock = threading.Lock()
        if read_only:
            if not Path(path).is_file():
                raise FileNotFoundError(f"no transcript store at {path} (DATABASE_PATH): has the bridge run here?")
            uri = Path(path).resolve().as_uri() + "?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None, timeout=10.0)
            self._conn.execute("PRAGMA query_only=ON")
        else:
            if str(path) != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: no implicit transactions; _write() opens and
            # commits each one explicitly.
            self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10.0)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
        self._conn.row_factory = sqlite3.Row
        self._closed = False

    # ----------------------------------------------------------------- internals
    def _write(self, statements: list[tuple[str, tuple[Any, ...]]]) -> int:
        """Run statements in one transaction, committed before returning; the last one's rowcount."""
        rows = 0
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    rows = conn.execute(sql, args).rowcount
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return rows

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._conn.execute(sql, args).fetchall()]

    # ----------------------------------------------------------------- writes
    def start_call(self, call_sid: str, stream_sid: str | None, from_: str | None, to: str | None) -> None:
        """Record a call's start (idempotent: a reconnecting stream updates the row)."""
        self._write([(
            """INSERT INTO conversations (call_sid, stream_sid, started_at, from_number, to_number, status)
               VALUES (?, ?, ?, ?, ?, 'active')
               ON CONFLICT (call_sid) DO UPDATE SET
                   stream_sid = excluded.stream_sid,
                   from_number = COALESCE(excluded.from_number, conversations.from_number),
                   to_number = COALESCE(excluded.to_number, conversations.to_number),
                   ended_at = NULL, status = 'active'""",
            (call_sid, stream_sid, _now(), from_, to),
        )])

    def end_call(self, call_sid: str, status: str) -> None:
        """Mark a call ended with a free-form status (``completed``, ``openai_failed`` …)."""
        self._write([(
            "UPDATE conversations SET ended_at = ?, status = ? WHERE call_sid = ?",
            (_now(), status, call_sid),
        )])

    def mark_interrupted(self) -> int:
        """Calls still ``active`` become ``interrupted``, ended now; returns how many.

        For start-up only: the process that was carrying them is gone.
        """
        return self._write([("UPDATE conversations SET status = 'interrupted', ended_at = ? WHERE status = 'active'",
                             (_now(),))])

    def put_utterance(
        self,
        call_sid: str,
        item_id: str,
        role: Role,
        text: str,
        *,
        truncated: bool = False,
        audio_end_ms: int | None = None,
    ) -> None:
        """Insert or update the utterance for one conversation item.

        A row for an unknown call is created on the fly (status ``active``) so an
        out-of-order write is never lost.
        """
        if role not in _ROLES:
            raise ValueError(f"role must be one of {_ROLES}, got {role!r}")
        now = _now()
        self._write([
            (
                "INSERT OR IGNORE INTO conversations (call_sid, started_at, status) VALUES (?, ?, 'active')",
                (call_sid, now),
            ),
            (_UPSERT_UTTERANCE, (call_sid, item_id, role, text, int(truncated), audio_end_ms, now)),
        ])

    # ----------------------------------------------------------------- reads
    def list_conversations(self, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first, each with an ``utterance_count``."""
        return self._read(
            """SELECT c.*, (SELECT COUNT(*) FROM utterances u WHERE u.call_sid = c.call_sid)
                       AS utterance_count
               FROM conversations c ORDER BY c.started_at DESC, c.rowid DESC LIMIT ?""",
            (max(0, int(limit)),),
        )

    def search_conversations(self, *, number: str | None = None, since: str | date | None = None,
                             until: str | date | None = None, text: str | None = None,
                             limit: int = 50) -> list[dict[str, Any]]:
        """Newest first, as :meth:`list_conversations`, narrowed by every filter given.

        ``number``: its digits appear in the caller's or the called number (``+1 415 555-0100``,
        ``4155550100`` and ``0100`` all find ``+14155550100``). ``since``/``until``: ISO 8601
        dates or datetimes (UTC unless they say otherwise) bounding the start of the call; a bare
        date in ``until`` includes that whole day. ``text``: a case-insensitive substring of
        anything said in the call; the first line that has it comes back as ``match`` (the console
        shows it). ``ValueError`` names a filter that cannot be read.
        """
        where, args = search_filter(number=number, since=since, until=until, text=text)
        match, match_args = (_FIRST_MATCH, (_like_pattern(text),)) if text else ("NULL", ())
        return self._read(
            f"""SELECT c.*, (SELECT COUNT(*) FROM utterances u WHERE u.call_sid = c.call_sid)
                        AS utterance_count, {match} AS match
                FROM conversations c {where} ORDER BY c.started_at DESC, c.rowid DESC LIMIT ?""",
            (*match_args, *args, max(0, min(int(limit), MAX_SEARCH_LIMIT))),
        )

    def get_conversation(self, call_sid: str) -> dict[str, Any] | None:
        """The conversation row plus ``utterances`` in the order they were first stored."""
        rows = self._read("SELECT * FROM conversations WHERE call_sid = ?", (call_sid,))
        if not rows:
            return None
        conv = rows[0]
        utterances = self._read(
            """SELECT id, item_id, role, text, truncated, audio_end_ms, created_at
               FROM utterances WHERE call_sid = ? ORDER BY id""",
            (call_sid,),
        )
        for u in utterances:
            u["truncated"] = bool(u["truncated"])
        conv["utterances"] = utterances
        return conv

    # ----------------------------------------------------------------- console settings
    def console_settings(self) -> dict[str, Any]:
        """The session settings the console changed (name -> value), as stored."""
        rows = self._read("SELECT key, value FROM console_settings")
        return {r["key"]: json.loads(r["value"]) for r in rows}

    def put_console_settings(self, values: dict[str, Any], who: str) -> None:
        """Replace the console's settings with ``values`` (an empty dict resets them all)."""
        now = _now()
        self._write([("DELETE FROM console_settings", ()),
                     *[("INSERT INTO console_settings (key, value, updated_at, updated_by) VALUES (?, ?, ?, ?)",
                        (k, json.dumps(v), now, who)) for k, v in values.items()]])

    def close(self) -> None:
        """Checkpoint and close; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._conn.close()


_P = ParamSpec("_P")
_T = TypeVar("_T")


class AsyncStore:
    """Trio facade: each call runs in a worker thread, one at a time.

    The limiter of 1 keeps SQLite work serialized (and bounded to one thread) so
    a burst of transcript writes from 200 calls never blocks the event loop or
    spawns 200 threads. Calls are not cancellable mid-write: a write that started
    commits.
    """

    def __init__(self, store: Store, limiter: trio.CapacityLimiter | None = None) -> None:
        self.store = store
        self.limiter = limiter or trio.CapacityLimiter(1)

    async def _run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=self.limiter)

    async def start_call(self, call_sid: str, stream_sid: str | None, from_: str | None, to: str | None) -> None:
        await self._run(self.store.start_call, call_sid, stream_sid, from_, to)

    async def end_call(self, call_sid: str, status: str) -> None:
        await self._run(self.store.end_call, call_sid, status)

    async def put_utterance(
        self,
        call_sid: str,
        item_id: str,
        role: Role,
        text: str,
        *,
        truncated: bool = False,
        audio_end_ms: int | None = None,
    ) -> None:
        await self._run(
            self.store.put_utterance, call_sid, item_id, role, text, truncated=truncated, audio_end_ms=audio_end_ms
        )

    async def list_conversations(self, limit: int = 100) -> list[dict[str, Any]]:
        return await self._run(self.store.list_conversations, limit)

    async def search_conversations(self, *, number: str | None = None, since: str | date | None = None,
                                   until: str | date | None = None, text: str | None = None,
                                   limit: int = 50) -> list[dict[str, Any]]:
        return await self._run(self.store.search_conversations, number=number, since=since, until=until,
                               text=text, limit=limit)

    async def get_conversation(self, call_sid: str) -> dict[str, Any] | None:
        return await self._run(self.store.get_conversation, call_sid)

    async def put_console_settings(self, values: dict[str, Any], who: str) -> None:
        await self._run(self.store.put_console_settings, values, who)

    async def aclose(self) -> None:
        await self._run(self.store.close)
