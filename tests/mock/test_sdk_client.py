"""The acid test: OpenAI's own Python SDK, unmodified, talks to the mock.

The SDK's realtime client is asyncio + ``websockets``; it runs in a worker
thread (``asyncio.run``) while the mock serves in this test's trio loop over
real loopback sockets. Audio goes in at real-time pace (20 ms μ-law chunks on
absolute deadlines), as a Twilio bridge would forward it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

import trio
from callsim.simulator.audio.utterances import default_bank
from callsim.simulator.mock.behaviour import Behaviour, ThinkTime
from callsim.simulator.mock.schema import validate_server_event
from callsim.simulator.mock.server import MockConfig, running_mock
from openai import AsyncOpenAI

KEY = "sk-test-mock-key"


async def _sdk_flow(base_url: str, audio: bytes) -> list[dict]:
    client = AsyncOpenAI(api_key=KEY, websocket_base_url=base_url)
    events: list[dict] = []
    async with client.realtime.connect(model="gpt-realtime") as conn:

        async def next_event(pred, timeout=15.0):
            async with asyncio.timeout(timeout):
                while True:
                    ev = json.loads(await conn.recv_bytes())
                    events.append(ev)
                    if pred(ev):
                        return ev

        created = await next_event(lambda e: True)
        assert created["type"] == "session.created"
        await conn.session.update(session={
            "type": "realtime",
            "audio": {"input": {"format": {"type": "audio/pcmu"},
                                "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}},
                      "output": {"format": {"type": "audio/pcmu"}}},
        })
        await next_event(lambda e: e["type"] == "session.updated")

        async def send_audio():
            silence = b"\xff" * 160
            frames = [audio[i:i + 160] for i in range(0, len(audio), 160)] + [silence] * 75
            t0 = time.monotonic()
            for k, frame in enumerate(frames):
                await conn.input_audio_buffer.append(audio=base64.b64encode(frame).decode())
                await asyncio.sleep(max(0.0, t0 + (k + 1) * 0.02 - time.monotonic()))

        sender = asyncio.create_task(send_audio())
        first_delta = await next_event(lambda e: e["type"] == "response.output_audio.delta", timeout=20)
        done = await next_event(lambda e: e["type"] == "response.done", timeout=20)
        await sender
        item_id = first_delta["item_id"]
        await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=500)
        await next_event(lambda e: e["type"] in ("conversation.item.truncated", "error"))
        await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=600_000,
                                              event_id="evt_too_long")
        await next_event(lambda e: e["type"] == "error")
        assert done["response"]["status"] == "completed"
    return events


async def test_openai_sdk_client_against_the_mock():
    bank = default_bank()
    utt = bank.get("caller_weather_question")
    config = MockConfig(api_key=KEY, behaviour=Behaviour(think=ThinkTime("fixed", 200.0), seed=3))
    async with running_mock(config) as mock:
        events = await trio.to_thread.run_sync(lambda: asyncio.run(_sdk_flow(mock.base_url, utt.ulaw)))
        session = next(iter(mock.sessions.values()))
        snap = session.snapshot()

    for ev in events:  # every event the mock sent is a valid SDK server event
        validate_server_event("ga", ev)
    types = [e["type"] for e in events]
    order = ["session.created", "session.updated", "input_audio_buffer.speech_started",
             "input_audio_buffer.speech_stopped", "input_audio_buffer.committed", "conversation.item.added",
             "response.created", "response.output_item.added", "response.content_part.added",
             "response.output_audio.delta", "response.output_audio.done", "response.output_item.done",
             "response.done", "rate_limits.updated", "conversation.item.truncated", "error"]
    pos = [types.index(t) for t in order]
    assert pos == sorted(pos), list(zip(order, pos))

    started = next(e for e in events if e["type"] == "input_audio_buffer.speech_started")
    stopped = next(e for e in events if e["type"] == "input_audio_buffer.speech_stopped")
    fx = utt  # speech timing from the manifest, on the input-buffer clock
    onset, end = fx.speech_segments_ms[0][0], fx.speech_segments_ms[-1][1]
    assert abs(started["audio_start_ms"] - max(0, onset - 300)) <= 60, started  # prefix padding 300 ms, floored at 0
    assert abs(stopped["audio_end_ms"] - (end + 500)) <= 80, stopped  # silence_duration_ms 500
    assert started["item_id"] == stopped["item_id"]

    deltas = [e for e in events if e["type"] == "response.output_audio.delta"]
    audio = b"".join(base64.b64decode(d["delta"]) for d in deltas)
    reply = default_bank().get("assistant_short_reply")
    assert abs(len(audio) / 8 - reply.duration_ms) < 25  # the whole reply, as μ-law (8 bytes/ms)

    truncated = next(e for e in events if e["type"] == "conversation.item.truncated")
    assert truncated["audio_end_ms"] == 500 and truncated["item_id"] == deltas[0]["item_id"]
    err = [e for e in events if e["type"] == "error"][-1]["error"]
    assert err["event_id"] == "evt_too_long"
    assert err["message"] == f"Audio content of {int(len(audio) / 8)}ms is already shorter than 600000ms"
    assert [t["accepted"] for t in snap["truncates"]] == [True, False]
    assert snap["invalid_sent"] == []
    assert snap["turns"][0]["heard"] in ("caller_weather_question", "caller_weather_question_phone")
