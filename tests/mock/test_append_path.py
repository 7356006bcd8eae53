"""The per-append hot path of ``MockSession`` is a pure speed-up: same answers as before.

``input_audio_buffer.append`` arrives 50 times a second per call, so its path
skips wrappers: base64 is decoded with ``binascii.a2b_base64(strict_mode=True)``
(what ``base64.b64decode(validate=True)`` calls) and handlers are looked up once
per event type. These tests hold it to the behaviour of the plain version:
every string ``b64decode(validate=True)`` rejects gets exactly the same error
event, every string it accepts appends exactly its bytes; the input converter's
direct soxr call gives exactly ``resample_chunk``'s samples.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np
import orjson
import pytest
from callsim.simulator.audio.utterances import default_bank
from callsim.simulator.mock import audio as audio_mod
from callsim.simulator.mock import errors
from callsim.simulator.mock.audio import InputConverter
from callsim.simulator.mock.behaviour import Behaviour
from callsim.simulator.mock.input_audio import b64decode_strict
from callsim.simulator.mock.session import MockSession, _handler
from hypothesis import given, settings
from hypothesis import strategies as st

from .conftest import events_of

MALFORMED = [
    "not base64!", "AAA", "AA=A", "A===", "AAAA\n", " AAAA", "AA AA",
    "ÿÿÿÿ", "AAAA\u00e9", "\u2028", "AA==AA==", "-_-_", "=AAA",
]
WELL_FORMED = ["", "AAAA", "//8=", "/w==", base64.b64encode(bytes(range(256))).decode()]


def _reference_decode(text: str) -> bytes | None:
    """What the append path did before: ``base64.b64decode(validate=True)``, None = rejected."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _strict(text: str) -> bytes | None:
    try:
        return b64decode_strict(text)
    except (binascii.Error, ValueError):
        return None


@pytest.mark.parametrize("text", MALFORMED + WELL_FORMED)
def test_strict_decode_accepts_and_rejects_exactly_what_b64decode_validate_does(text: str) -> None:
    assert _strict(text) == _reference_decode(text)
    assert (_reference_decode(text) is None) == (text in MALFORMED)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=24),
                 st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \n-_",
                         max_size=24),
                 st.binary(max_size=18).map(lambda b: base64.b64encode(b).decode())))
def test_strict_decode_matches_b64decode_validate_on_any_text(text: str) -> None:
    assert _strict(text) == _reference_decode(text)


def _session() -> MockSession:
    s = MockSession(behaviour=Behaviour(seed=3), recognizer=None)
    s.open(0)
    s.receive(0, orjson.dumps({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"format": {"type": "audio/pcmu"}}}}}).decode())
    return s


@pytest.mark.parametrize("with_id", [False, True])
@pytest.mark.parametrize("text", MALFORMED)
def test_a_malformed_append_gets_the_same_error_event_and_appends_nothing(text: str, with_id: bool) -> None:
    s = _session()
    ev = {"type": "input_audio_buffer.append", "audio": text}
    if with_id:
        ev["event_id"] = "evt_bad_audio"
    out = events_of(s.receive(1_000_000, orjson.dumps(ev).decode()))
    want = errors.invalid_event("Invalid 'audio'. Expected base64-encoded audio data.",
                                "evt_bad_audio" if with_id else None, "audio")
    assert [{k: v for k, v in e.items() if k != "event_id"} for e in out] == [want]
    assert s.counts["appends"] == 0 and s.counts["audio_in_bytes"] == 0 and s.snapshot()["audio_in_ms"] == 0


@pytest.mark.parametrize("text", WELL_FORMED)
def test_a_well_formed_append_buffers_exactly_its_bytes(text: str) -> None:
    s = _session()
    assert not s.receive(1_000_000, orjson.dumps({"type": "input_audio_buffer.append", "audio": text}).decode())
    data = base64.b64decode(text)
    assert s.counts["appends"] == 1 and s.counts["audio_in_bytes"] == len(data)
    assert bytes(s._buffer) == data


def test_handlers_are_the_session_methods_and_unknown_types_have_none() -> None:
    assert _handler("input_audio_buffer.append") is MockSession._on_input_audio_buffer_append
    assert _handler("response.create") is MockSession._on_response_create
    assert _handler("transcription_session.update") is None  # a beta type the mock does not serve


@pytest.mark.parametrize("kind", ["pcm16"])  # G.711 is decoded, not resampled: no soxr call
def test_input_converter_direct_soxr_call_gives_resample_chunk_samples(kind: str) -> None:
    """Appends of 20 ms (and odd sizes) through the converter, against soxr's public wrapper."""
    assert audio_mod._process_matches_wrapper()
    ulaw = default_bank().get("caller_greeting").ulaw
    pcm = audio_mod.decode("pcmu", ulaw)
    wire = audio_mod.encode(kind, pcm, 8000)
    fast = InputConverter(kind)
    slow = InputConverter(kind)
    slow._resample = slow._stream.resample_chunk  # the public wrapper
    assert fast._resample is not fast._stream.resample_chunk
    step = 20 * audio_mod.BYTES_PER_MS[kind]
    sizes = [step, step, 7, step + 3, 1, step]
    i = 0
    while i < len(wire):
        for n in sizes:
            a, b = fast.feed(wire[i:i + n]), slow.feed(wire[i:i + n])
            assert a.dtype == b.dtype == np.int16 and a.ndim == 1 and np.array_equal(a, b)
            i += n
    assert np.array_equal(fast.flush(), slow.flush())
