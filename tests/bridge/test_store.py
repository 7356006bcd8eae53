"""callsim.bridge.store: WAL SQLite transcripts, upserts, truncation, crash safety, thread/trio use."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import trio
from callsim.bridge.store import AsyncStore, Store

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "t.sqlite3")
    yield s
    s.close()


def test_wal_mode_and_schema(store, tmp_path):
    conn = sqlite3.connect(tmp_path / "t.sqlite3")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"conversations", "utterances"} <= tables
    cols = [r[1] for r in conn.execute("PRAGMA table_info(utterances)")]
    assert cols == ["id", "call_sid", "item_id", "role", "text", "truncated", "audio_end_ms", "created_at"]
    conn.close()
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_call_lifecycle_and_order(store):
    store.start_call("CA1", "MZ1", "+15550001", "+15550002")
    store.put_utterance("CA1", "item_a", "assistant", "Hello, how can I help?")
    store.put_utterance("CA1", "item_b", "caller", "What's the weather?")
    store.put_utterance("CA1", "call_1", "tool", '{"city": "Paris"}')
    store.end_call("CA1", "completed")
    conv = store.get_conversation("CA1")
    assert conv["stream_sid"] == "MZ1" and conv["from_number"] == "+15550001" and conv["to_number"] == "+15550002"
    assert conv["status"] == "completed" and conv["ended_at"] >= conv["started_at"]
    assert [(u["item_id"], u["role"]) for u in conv["utterances"]] == [
        ("item_a", "assistant"), ("item_b", "caller"), ("call_1", "tool")]
    assert conv["utterances"][0]["truncated"] is False
    assert conv["utterances"][0]["audio_end_ms"] is None
    assert store.get_conversation("CA-missing") is None


def test_truncation_upsert_keeps_position_and_is_sticky(store):
    store.start_call("CA1", "MZ1", None, None)
    store.put_utterance("CA1", "item_a", "assistant", "One two three four five six.")
    store.put_utterance("CA1", "item_b", "caller", "Stop")
    store.put_utterance("CA1", "item_a", "assistant", "One two", truncated=True, audio_end_ms=840)
    # A late full transcript (raced the truncate) must not restore unheard words.
    store.put_utterance("CA1", "item_a", "assistant", "One two three four five six.")
    u = store.get_conversation("CA1")["utterances"]
    assert [x["item_id"] for x in u] == ["item_a", "item_b"]
    assert u[0]["text"] == "One two" and u[0]["truncated"] is True and u[0]["audio_end_ms"] == 840
    # A second truncation (earlier cut) still applies.
    store.put_utterance("CA1", "item_a", "assistant", "One", truncated=True, audio_end_ms=300)
    u0 = store.get_conversation("CA1")["utterances"][0]
    assert (u0["text"], u0["audio_end_ms"]) == ("One", 300)


def test_same_item_id_in_two_calls_is_two_rows(store):
    store.put_utterance("CA1", "item_x", "caller", "a")
    store.put_utterance("CA2", "item_x", "caller", "b")
    assert store.get_conversation("CA1")["utterances"][0]["text"] == "a"
    assert store.get_conversation("CA2")["utterances"][0]["text"] == "b"


def test_utterance_before_start_creates_the_conversation(store):
    store.put_utterance("CA9", "i1", "caller", "early")
    store.start_call("CA9", "MZ9", "+1", "+2")
    conv = store.get_conversation("CA9")
    assert conv["stream_sid"] == "MZ9" and conv["status"] == "active"
    assert [u["text"] for u in conv["utterances"]] == ["early"]


def test_bad_role_rejected(store):
    with pytest.raises(ValueError):
        store.put_utterance("CA1", "i", "system", "x")  # type: ignore[arg-type]


def test_list_conversations_newest_first_with_limit(store):
    for i in range(5):
        store.start_call(f"CA{i}", f"MZ{i}", None, None)
        store.put_utterance(f"CA{i}", "i", "caller", "x")
    convs = store.list_conversations(limit=3)
    assert [c["call_sid"] for c in convs] == ["CA4", "CA3", "CA2"]
    assert convs[0]["utterance_count"] == 1
    assert len(store.list_conversations()) == 5


def test_close_is_idempotent(tmp_path):
    s = Store(tmp_path / "sub" / "dir" / "db.sqlite3")  # parent dirs created
    s.close()
    s.close()


def test_threads(store):
    def worker(n: int) -> None:
        for j in range(50):
            store.put_utterance(f"CA{n}", f"i{j}", "caller", f"{n}-{j}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(c["utterance_count"] for c in store.list_conversations()) == 400


CHILD = textwrap.dedent("""
    import sys, time
    from callsim.bridge.store import Store
    s = Store(sys.argv[1])
    s.start_call("CAkill", "MZkill", "+1", "+2")
    for i in range(20):
        s.put_utterance("CAkill", f"item{i}", "caller" if i % 2 else "assistant", f"text {i}")
    s.put_utterance("CAkill", "item0", "assistant", "te", truncated=True, audio_end_ms=120)
    print("committed", flush=True)
    time.sleep(60)
""")


def test_sigkill_loses_nothing_committed(tmp_path):
    db = tmp_path / "kill.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout.readline().strip() == "committed"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    assert Path(str(db) + "-wal").exists()  # the data lives in the un-checkpointed WAL
    s = Store(db)
    try:
        conv = s.get_conversation("CAkill")
        assert conv["status"] == "active" and conv["ended_at"] is None
        assert len(conv["utterances"]) == 20
        assert conv["utterances"][0]["text"] == "te" and conv["utterances"][0]["truncated"]
        assert conv["utterances"][19]["text"] == "text 19"
    finally:
        s.close()


def test_calls_a_killed_process_left_active_are_marked_interrupted(tmp_path):
    """After kill -9 a call's row says ``active`` forever unless the next start-up says otherwise."""
    db = tmp_path / "k.sqlite3"
    s = Store(db)
    s.start_call("CA1", "MZ1", "+1", "+2")
    s.put_utterance("CA1", "i1", "caller", "hi")
    s.start_call("CA2", "MZ2", None, None)
    s.end_call("CA2", "completed")
    s.close()  # (a kill leaves the same rows: see test_sigkill_loses_nothing_committed)
    s = Store(db)
    try:
        assert s.get_conversation("CA1")["status"] == "active"  # opening alone changes nothing
        assert s.mark_interrupted() == 1
        conv = s.get_conversation("CA1")
        assert conv["status"] == "interrupted" and conv["ended_at"] >= conv["started_at"]
        assert [u["text"] for u in conv["utterances"]] == ["hi"]
        assert s.get_conversation("CA2")["status"] == "completed"
        assert s.mark_interrupted() == 0
    finally:
        s.close()


async def test_async_store(tmp_path):
    a = AsyncStore(Store(tmp_path / "a.sqlite3"))
    assert a.limiter.total_tokens == 1
    await a.start_call("CA1", "MZ1", "+1", "+2")

    async def writer(n: int) -> None:
        for j in range(10):
            await a.put_utterance("CA1", f"i{n}-{j}", "assistant", "x", truncated=j == 0, audio_end_ms=j)

    async with trio.open_nursery() as nursery:
        for n in range(5):
            nursery.start_soon(writer, n)
    await a.end_call("CA1", "completed")
    conv = await a.get_conversation("CA1")
    assert len(conv["utterances"]) == 50 and conv["status"] == "completed"
    assert [c["call_sid"] for c in await a.list_conversations()] == ["CA1"]
    await a.aclose()
