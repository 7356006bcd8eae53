"""Sans-IO tests of ``callsim.bridge.call.CallCore``: transcode mode: a bridge that converts between Twilio's μ-law and PCM for OpenAI.

Driven on a synthetic clock with the hand-written messages and the Twilio playback model of
:mod:`tests.bridge.callcore_kit`.
"""

from __future__ import annotations

import base64

import numpy as np
from callsim.bridge.call import (
    CallCore,
)
from callsim.bridge.codec import Transcoder
from callsim.bridge.realtime import SessionParams

from tests.bridge.callcore_kit import (
    FRAME_NS,
    MS,
    Sim,
    TwilioMsgs,
    audio_delta,
    audio_done,
    b64,
    check_barge_in,
    kinds,
    oa_out,
    response_created,
    session_updated,
    speech_started,
    started_core,
    tw_out,
)

# ============================================================== transcode mode


def tone_ulaw(n_samples: int, freq: float = 1000.0, amp: float = 8000.0, rate: int = 8000) -> bytes:
    """μ-law of a sine (a small standalone G.711 encoder; exactness is not the point here)."""
    x = (amp * np.sin(2 * np.pi * freq * np.arange(n_samples) / rate)).astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    mag = np.minimum(np.abs(x), 32635) + 0x84
    exp = np.floor(np.log2(mag)).astype(np.int32) - 7
    mant = (mag >> (exp + 3)) & 0x0F
    return (~(sign | (exp << 4) | mant) & 0xFF).astype(np.uint8).tobytes()


def ulaw_to_lin(data: bytes) -> np.ndarray:
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.float64)


def dominant_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def test_transcode_inbound_frames_become_pcm16_24k_appends() -> None:
    core, tw = started_core(SessionParams(audio_mode="transcode"), transcoder=Transcoder())
    n = 50
    signal = tone_ulaw(160 * n)
    pcm = b""
    appends = 0
    for i in range(n):
        acts = core.twilio_message((100 + 20 * i) * MS, tw.media(b64(signal[160 * i:160 * (i + 1)])))
        for m in oa_out(acts):
            assert m["type"] == "input_audio_buffer.append"
            chunk = base64.b64decode(m["audio"], validate=True)
            assert chunk and len(chunk) % 2 == 0
            pcm += chunk
            appends += 1
    assert core.stats["frames_in"] == n
    assert appends >= n // 4
    # 3 × the samples, 2 bytes each: 960 bytes per 20 ms frame, less what the resampler withholds
    latency_bytes = int(Transcoder().latency_ms * 48) + 2
    assert 960 * n - latency_bytes <= len(pcm) <= 960 * n
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    assert abs(dominant_hz(x[2400:], 24000) - 1000) < 15
    ref = ulaw_to_lin(signal)
    assert 0.8 < np.sqrt(np.mean(x[2400:] ** 2)) / np.sqrt(np.mean(ref ** 2)) < 1.2


def test_transcode_early_frames_are_converted_too() -> None:
    core = CallCore(SessionParams(audio_mode="transcode"), transcoder=Transcoder())
    tw = TwilioMsgs()
    core.twilio_message(0, tw.start())
    signal = tone_ulaw(160 * 10)
    for i in range(10):
        assert core.twilio_message(i * FRAME_NS, tw.media(b64(signal[160 * i:160 * (i + 1)]))) == []
    core.openai_opened(300 * MS)
    msgs = oa_out(core.openai_message(301 * MS, session_updated()))
    pcm = b"".join(base64.b64decode(m["audio"]) for m in msgs)
    assert all(m["type"] == "input_audio_buffer.append" and m["audio"] for m in msgs)
    ref = Transcoder()
    assert pcm == b"".join(ref.inbound(signal[160 * i:160 * (i + 1)]) for i in range(10))


def pcm_tone(n_samples: int, freq: float = 600.0, amp: float = 9000.0, phase0: int = 0) -> bytes:
    t = np.arange(phase0, phase0 + n_samples)
    return (amp * np.sin(2 * np.pi * freq * t / 24000)).astype("<i2").tobytes()


def test_transcode_outbound_deltas_become_ulaw_media_and_done_flushes() -> None:
    sim = Sim(SessionParams(audio_mode="transcode"), transcoder=Transcoder())
    n_deltas, per = 8, 2400  # 100 ms each
    sim.openai(100 * MS, response_created("resp_1"))
    for i in range(n_deltas):
        sim.openai((101 + i * 10) * MS, audio_delta("item_A", "resp_1", b64(pcm_tone(per, phase0=i * per))),
                   "item_A")
    before_done = sim.pb.queued("item_A")
    assert 0 < before_done < n_deltas * per // 3
    acts = sim.openai(200 * MS, audio_done("item_A", "resp_1"), "item_A")
    assert kinds(acts) == ["tw:media", "tw:mark"]
    total = sim.pb.queued("item_A")
    assert total == n_deltas * per // 3  # 24 kHz → 8 kHz: a third of the samples, 1 byte each
    assert tw_out(acts)[1]["mark"]["name"] == f"0:1:{total}"
    ulaw_all = b"".join(base64.b64decode(m["media"]["payload"]) for m in sim.pb.media_msgs)
    y = ulaw_to_lin(ulaw_all)
    assert abs(dominant_hz(y[400:], 8000) - 600) < 10
    assert sim.core.items["item_A"].received == n_deltas * per * 2
    # barge-in: heard vs received in the right units (μ-law 8 B/ms vs pcm16 48 B/ms)
    T = 101 * MS + 1 * MS + 250 * MS
    info = check_barge_in(sim, T, "item_A")  # within 20 ms of the model, ≤ received (in 48 B/ms)
    assert info["heard_ms"] == 260  # 13 frames begun


def test_transcode_barge_in_resets_the_outbound_resampler() -> None:
    sim = Sim(SessionParams(audio_mode="transcode"), transcoder=Transcoder())
    sim.openai(100 * MS, response_created("resp_1"))
    for i in range(5):
        sim.openai((101 + i) * MS, audio_delta("item_A", "resp_1", b64(pcm_tone(2400, phase0=i * 2400))), "item_A")
    sim.openai(150 * MS, speech_started())
    # the cancelled response's last deltas and its audio.done do not reach Twilio
    n_media = len(sim.pb.media_msgs)
    assert sim.openai(151 * MS, audio_delta("item_A", "resp_1", b64(pcm_tone(2400))), "item_A") == []
    assert sim.openai(152 * MS, audio_done("item_A", "resp_1"), "item_A") == []
    assert len(sim.pb.media_msgs) == n_media
    # the next reply starts from a clean resampler: same bytes as a fresh Transcoder gives
    ref = Transcoder()
    deltas = [pcm_tone(2400, freq=400, phase0=i * 2400) for i in range(4)]
    expect = [ref.outbound(d) for d in deltas] + [ref.outbound_flush()]
    got = []
    sim.openai(400 * MS, response_created("resp_2"))
    for i, d in enumerate(deltas):
        got.append(b"".join(base64.b64decode(m["media"]["payload"])
                            for m in tw_out(sim.openai((401 + i) * MS, audio_delta("item_B", "resp_2", b64(d)),
                                                       "item_B")) if m["event"] == "media"))
    got.append(b"".join(base64.b64decode(m["media"]["payload"])
                        for m in tw_out(sim.openai(410 * MS, audio_done("item_B", "resp_2"), "item_B"))
                        if m["event"] == "media"))
    assert got == expect
