"""History search (number, UTC day, text) and the console's stored settings."""

from __future__ import annotations

from datetime import date

from callsim.bridge.store import Store


def _store(tmp_path) -> Store:
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
    s = _store(tmp_path)
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
