"""The typed timeline writes exactly what the string-keyed one wrote, and answers typed queries."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from callsim.simulator.measure import timeline as tl
from callsim.simulator.measure.timeline import ClearIn, MediaIn, SpeechStart, Timeline, UtteranceStart

from . import timeline_calls

GOLDEN = Path(__file__).parent / "data" / "timeline_golden.json"


@pytest.fixture(scope="module")
def records() -> dict[str, dict]:
    return timeline_calls.records()


@pytest.mark.parametrize("name", list(timeline_calls.CALLS))
def test_the_recording_is_what_the_string_keyed_timeline_wrote(records, name):
    golden = json.loads(GOLDEN.read_text())[name]
    got = records[name]
    assert [e["event"] for e in got["timeline"]] == [e["event"] for e in golden["timeline"]]
    for mine, theirs in zip(got["timeline"], golden["timeline"]):
        assert list(mine) == list(theirs)  # the same keys in the same order: the file reads the same
        assert mine == theirs
    assert got == golden


def test_every_event_type_is_exercised_and_named_once(records):
    kinds = [t.kind for t in tl.EVENT_TYPES]
    assert len(set(kinds)) == len(kinds)
    written = {e["event"] for r in records.values() for e in r["timeline"]}
    assert written == set(kinds)
    assert any(e.get("lost") for e in records["rich"]["timeline"])
    assert {e["after_stop"] for r in records.values() for e in r["timeline"] if e["event"] == "closed_by_app"} == {
        True, False}


def test_typed_queries():
    t = Timeline()
    t.append(MediaIn(5, 160, 160))
    t.begin(10)
    t += [SpeechStart(12, "a"), ClearIn(20, 160, ("m",)), SpeechStart(30, "b", lost=True), UtteranceStart(31, "c", "hi")]
    assert t.of(SpeechStart) == [SpeechStart(12, "a"), SpeechStart(30, "b", lost=True)]
    assert t.first(ClearIn) == ClearIn(20, 160, ("m",))
    assert t.first(tl.Stop) is None
    assert t.times(SpeechStart, ClearIn) == [12, 20, 30]
    assert t.count_of(tl.CallerSpeech) == 3 and t.count_of(MediaIn) == 1
    assert t.end_ns() == 31 and Timeline().end_ns() is None
    d = t.as_dicts()
    assert d[0] == {"event": "media_in", "t_ns": 5, "t_ms": 0.0, "bytes": 160, "queued": 160}  # before begin
    assert d[3] == {"event": "speech_start", "t_ns": 30, "t_ms": 0.0, "lost": True, "fixture": "b"}
    assert list(d[4]) == ["event", "t_ns", "t_ms", "fixture", "text"]
    assert d[2]["marks"] == ["m"]
    copy = pickle.loads(pickle.dumps(t))
    assert copy == t and copy.t0_ns == 10 and copy.as_dicts() == d


def test_events_are_frozen_and_slotted():
    e = MediaIn(1, 2, 3)
    with pytest.raises(AttributeError):
        e.bytes = 4  # type: ignore[misc]
    assert not hasattr(e, "__dict__")
