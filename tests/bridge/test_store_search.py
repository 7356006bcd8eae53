"""callsim.bridge.store: searching conversations (number, dates, text) and the read-only store."""

from __future__ import annotations

import sqlite3
from datetime import date

import pytest
import trio
from callsim.bridge.store import AsyncStore, Store


@pytest.fixture
def filled(tmp_path):
    """Three calls on three days, with known numbers and words."""
    path = tmp_path / "s.sqlite3"
    s = Store(path)
    s.start_call("CA1", "MZ1", "+14155550100", "+15005550001")
    s.put_utterance("CA1", "i1", "caller", "What's the weather in Paris?")
    s.put_utterance("CA1", "i2", "assistant", "Sunny, 20 degrees.")
    s.end_call("CA1", "completed")
    s.start_call("CA2", "MZ2", "+442071838750", "+15005550001")
    s.put_utterance("CA2", "i1", "caller", "I need 100% of my refund_amount")
    s.start_call("CA3", "MZ3", "+14155550199", "+15005550002")
    s.put_utterance("CA3", "i1", "caller", "paris hotels please")
    conn = sqlite3.connect(path)
    for sid, day in (("CA1", "2026-12-01T10:00:00.000+00:00"), ("CA2", "2026-12-02T23:59:59.500+00:00"),
                     ("CA3", "2026-12-03T00:00:00.000+00:00")):
        conn.execute("UPDATE conversations SET started_at = ? WHERE call_sid = ?", (day, sid))
    conn.commit()
    conn.close()
    yield s, path
    s.close()


def sids(rows):
    return [r["call_sid"] for r in rows]


def test_no_filter_is_newest_first_with_counts(filled):
    s, _ = filled
    rows = s.search_conversations()
    assert sids(rows) == ["CA3", "CA2", "CA1"]
    assert [r["utterance_count"] for r in rows] == [1, 1, 2]
    assert sids(s.search_conversations(limit=1)) == ["CA3"]


def test_number_matches_digits_of_either_party(filled):
    s, _ = filled
    assert sids(s.search_conversations(number="+1 (415) 555-0100")) == ["CA1"]
    assert sids(s.search_conversations(number="4155550")) == ["CA3", "CA1"]
    assert sids(s.search_conversations(number="+15005550001")) == ["CA2", "CA1"]  # the called number
    with pytest.raises(ValueError, match="no digits"):
        s.search_conversations(number="abc")


def test_date_range_bounds_are_inclusive_and_a_bare_until_takes_the_whole_day(filled):
    s, _ = filled
    assert sids(s.search_conversations(since="2026-12-02")) == ["CA3", "CA2"]
    assert sids(s.search_conversations(until="2026-12-02")) == ["CA2", "CA1"]  # 23:59:59.5 is in
    assert sids(s.search_conversations(since="2026-12-01T10:00:00Z", until="2026-12-01T10:00:00Z")) == ["CA1"]
    # another zone is converted: 2026-12-02T19:00-05:00 is 2026-12-03T00:00Z
    assert sids(s.search_conversations(since="2026-12-02T19:00:00-05:00")) == ["CA3"]
    with pytest.raises(ValueError, match="since 'yesterday' is not an ISO 8601"):
        s.search_conversations(since="yesterday")


def test_text_is_a_case_insensitive_substring_with_wildcards_taken_literally(filled):
    s, _ = filled
    assert sids(s.search_conversations(text="PARIS")) == ["CA3", "CA1"]
    assert sids(s.search_conversations(text="sunny")) == ["CA1"]  # the assistant's words count too
    assert sids(s.search_conversations(text="100%")) == ["CA2"]
    assert sids(s.search_conversations(text="%")) == ["CA2"]
    assert sids(s.search_conversations(text="d_a")) == ["CA2"]  # refund_amount; '_' is not "any character"
    assert sids(s.search_conversations(text="n_p")) == []


def test_filters_combine(filled):
    s, _ = filled
    assert sids(s.search_conversations(number="415", text="paris", since="2026-12-02")) == ["CA3"]


def test_read_only_store_reads_beside_a_writer_and_refuses_writes(filled, tmp_path):
    s, path = filled
    ro = Store(path, read_only=True)
    try:
        assert sids(ro.search_conversations(text="paris")) == ["CA3", "CA1"]
        s.put_utterance("CA3", "i2", "assistant", "Three hotels near the Louvre.")  # the bridge writes on
        assert ro.get_conversation("CA3")["utterances"][-1]["text"] == "Three hotels near the Louvre."
        with pytest.raises(sqlite3.OperationalError, match="readonly|read-only"):
            ro.start_call("CA9", None, None, None)
    finally:
        ro.close()
    with pytest.raises(FileNotFoundError, match="DATABASE_PATH"):
        Store(tmp_path / "missing.sqlite3", read_only=True)
    assert not (tmp_path / "missing.sqlite3").exists()


async def test_async_search(filled):
    s, _ = filled
    rows = await AsyncStore(s, trio.CapacityLimiter(1)).search_conversations(number="0199")
    assert sids(rows) == ["CA3"]


# ---------------------------------------------------- as the console searches (dates, the matching line)


def _console_store(tmp_path) -> Store:
    s = Store(tmp_path / "s.sqlite3")
    s.start_call("CA1", "MZ1", "+15550001111", "+15559990000")
    s.put_utterance("CA1", "i1", "caller", "What's the weather in Paris?")
    s.put_utterance("CA1", "i2", "assistant", "Sunny, 100% chance of fun_times.")
    s.start_call("CA2", "MZ2", "+447700900123", "+15559990000")
    s.put_utterance("CA2", "i1", "caller", "Cancel my order please")
    with s._lock:  # CA2 started the day before
        s._conn.execute("UPDATE conversations SET started_at = '2026-01-01T23:59:59.000+00:00' WHERE call_sid = 'CA2'")
    return s


def test_search_by_number_part_day_and_text(tmp_path):
    s = _console_store(tmp_path)
    sids = lambda **kw: [c["call_sid"] for c in s.search_conversations(**kw)]  # noqa: E731
    assert sids() == ["CA1", "CA2"]
    assert sids(number="0001111") == ["CA1"]
    assert sids(number="+44") == ["CA2"]
    assert sids(number="9990000") == ["CA1", "CA2"]  # the called number counts too
    assert sids(since=date(2026, 1, 1), until=date(2026, 1, 1)) == ["CA2"]
    assert sids(until=date(2026, 1, 1)) == ["CA2"]
    assert sids(since=date(2026, 1, 2)) == ["CA1"]
    hits = s.search_conversations(text="paris")  # case-insensitive
    assert [c["call_sid"] for c in hits] == ["CA1"] and hits[0]["match"] == "What's the weather in Paris?"
    assert hits[0]["utterance_count"] == 2
    assert sids(text="order", number="+44") == ["CA2"]
    assert sids(text="order", number="+1555000") == []
    # LIKE's wildcards are text like any other
    assert sids(text="100%") == ["CA1"] and sids(text="%") == ["CA1"] and sids(text="P_ris") == []
    assert sids(text="fun_t") == ["CA1"]
    assert sids(limit=1) == ["CA1"]


def test_console_settings_are_replaced_whole_and_survive_reopening(tmp_path):
    s = Store(tmp_path / "s.sqlite3")
    assert s.console_settings() == {}
    s.put_console_settings({"voice": "cedar", "tools": ["a"], "vad_threshold": 0.7}, "bearer from 127.0.0.1")
    s.put_console_settings({"voice": "ash", "tools": []}, "session:abcd from 10.0.0.1")
    s.close()
    again = Store(tmp_path / "s.sqlite3")
    assert again.console_settings() == {"voice": "ash", "tools": []}
    row = again._read("SELECT updated_by, updated_at FROM console_settings WHERE key = 'voice'")[0]
    assert row["updated_by"] == "session:abcd from 10.0.0.1" and row["updated_at"]
    again.put_console_settings({}, "x")
    assert again.console_settings() == {}
