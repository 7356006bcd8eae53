"""Sans-IO tests of ``callsim.bridge.call.CallCore``: the assistant's audio on its way to Twilio: forwarded unchanged, each delta with a named mark.

Driven on a synthetic clock with the hand-written messages and the Twilio playback model of
:mod:`tests.bridge.callcore_kit`.
"""

from __future__ import annotations

import json

import pytest
from callsim.bridge import twilio_wire
from callsim.bridge.call import (
    ToTwilio,
)
from callsim.bridge.realtime import SessionParams

from tests.bridge.callcore_kit import (
    MS,
    STREAM_SID,
    audio_delta,
    b64,
    non_canonical_b64,
    started_core,
    tw_out,
    ulaw,
)

# ============================================================== output audio


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_delta_is_forwarded_unchanged_with_a_named_mark(dialect: str) -> None:
    core, _ = started_core(SessionParams(dialect=dialect))
    p1 = non_canonical_b64(ulaw(160, 1))
    acts = core.openai_message(10 * MS, audio_delta("item_A", "resp_1", p1, dialect))
    assert acts == [ToTwilio(json.dumps({"event": "media", "streamSid": STREAM_SID, "media": {"payload": p1}},
                                        separators=(",", ":"))),
                    ToTwilio(json.dumps({"event": "mark", "streamSid": STREAM_SID, "mark": {"name": "0:1:160"}},
                                        separators=(",", ":")))]
    p2 = b64(ulaw(800, 2))
    assert [m["mark"]["name"] for m in tw_out(core.openai_message(11 * MS, audio_delta("item_A", "resp_1", p2,
                                                                                        dialect)))
            if m["event"] == "mark"] == ["0:1:960"]
    # a new item gets the next sequence number and counts from 0 again
    out = tw_out(core.openai_message(12 * MS, audio_delta("item_B", "resp_1", b64(ulaw(320, 3)), dialect)))
    assert out[1] == {"event": "mark", "streamSid": STREAM_SID, "mark": {"name": "0:2:320"}}


def test_delta_of_the_other_dialect_is_not_audio() -> None:
    core, _ = started_core(SessionParams(dialect="ga"))
    assert core.openai_message(10 * MS, audio_delta("item_A", "resp_1", b64(ulaw(160)), "beta")) == []
    core, _ = started_core(SessionParams(dialect="beta"))
    assert core.openai_message(10 * MS, audio_delta("item_A", "resp_1", b64(ulaw(160)), "ga")) == []


@pytest.mark.parametrize("sizes", [[1], [2], [3], [1, 2, 3, 4, 5], [160, 161, 162, 163], [7999, 1]])
def test_mark_byte_counts_handle_base64_padding(sizes: list[int]) -> None:
    core, _ = started_core()
    total = 0
    for i, n in enumerate(sizes):
        total += n
        out = tw_out(core.openai_message((10 + i) * MS, audio_delta("item_A", "resp_1", b64(ulaw(n, i)))))
        assert out[1]["mark"]["name"] == f"0:1:{total}"


def test_b64_len_without_decoding() -> None:
    for n in range(0, 40):
        assert twilio_wire.b64_len(b64(bytes(n))) == n
    assert twilio_wire.b64_len("") == 0
    assert twilio_wire.b64_len("AA==") == 1
    assert twilio_wire.b64_len("AAA=") == 2
    assert twilio_wire.b64_len("AAAA") == 3
