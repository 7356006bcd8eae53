"""The emulator's Recordings over REST, read with the ``twilio`` package's client as it reads
Twilio's; and ``callsim dial --record``'s poll for a recording that may come late or never."""

from __future__ import annotations

import io
import random
from types import SimpleNamespace

import numpy as np
import pytest
import requests
import soundfile as sf
import trio
from callsim.simulator.audio.codec import pcm16_to_ulaw
from callsim.simulator.dial.recording import attach_to_report, fetch_recording
from callsim.simulator.twilio_emu.calls import Instructions
from callsim.simulator.twilio_emu.recordings import Recorder
from callsim.simulator.twilio_emu.rest import RestCore
from callsim.simulator.twilio_emu.server import serve_rest
from twilio.base.exceptions import TwilioRestException

from .test_twilio_client import SID, T0, TOKEN, client, in_thread



def recorded_call(core: RestCore, channels: int, seconds: float = 2.5):
    call = core.store.create(to="+15550001111", from_="+15550002222", at=T0, record=True,
                             recording_channels=channels, instructions=Instructions(twiml="<Response/>"))
    rec = Recorder(channels, started_at=T0 + 1)
    tone = pcm16_to_ulaw((8000 * np.sin(np.arange(160) / 3)).astype(np.int16))
    silence = b"\xff" * 160
    for k in range(int(seconds * 50)):
        rec.add(tone if k % 2 else silence, silence if k % 2 else tone)  # the parties take turns
    return call, core.recordings.add(call.sid, rec, T0 + 1 + seconds)


async def test_recordings_list_fetch_and_media_as_the_twilio_client_reads_them():
    core = RestCore(SID, TOKEN, clock=lambda: T0, rng=random.Random(3))
    call, made = recorded_call(core, 2)
    other, _ = recorded_call(core, 1)
    async with serve_rest(core) as url:
        c = client(url)
        (by_call,) = await in_thread(lambda: c.recordings.list(call_sid=call.sid))
        (via_call,) = await in_thread(lambda: c.calls(call.sid).recordings.list())
        fetched = await in_thread(lambda: c.recordings(made.sid).fetch())
        everything = await in_thread(lambda: c.recordings.list())
        wav = await in_thread(lambda: requests.get(f"{by_call.media_url}.wav", timeout=10))
        bare = await in_thread(lambda: requests.get(by_call.media_url, timeout=10))
        mp3 = await in_thread(lambda: requests.get(f"{by_call.media_url}.mp3", timeout=10))
        with pytest.raises(TwilioRestException) as unknown:
            await in_thread(lambda: c.recordings("RE" + "0" * 32).fetch())
    assert by_call.sid == via_call.sid == fetched.sid == made.sid
    assert [r.sid for r in everything] == [_.sid for _ in reversed(list(core.recordings.recordings.values()))]
    assert (fetched.call_sid, fetched.channels, fetched.duration, fetched.status, fetched.source) == \
        (call.sid, 2, "2", "completed", "OutboundAPI")
    assert fetched.start_time.timestamp() == T0 + 1
    assert by_call.media_url == f"{url}/2010-04-01/Accounts/{SID}/Recordings/{made.sid}"
    assert wav.status_code == 200 and wav.headers["content-type"] == "audio/x-wav" and bare.content == wav.content
    audio, rate = sf.read(io.BytesIO(wav.content), dtype="int16")
    assert rate == 8000 and audio.shape == (20000, 2)
    loud = np.abs(audio) > 2000
    assert loud[:, 0].any() and loud[:, 1].any() and not (loud[:, 0] & loud[:, 1]).any()  # two parties apart
    assert mp3.status_code == 404 and unknown.value.code == 20404


async def test_a_mono_recording_mixes_both_parties_and_a_bad_recording_channels_is_refused():
    core = RestCore(SID, TOKEN, clock=lambda: T0, rng=random.Random(3))
    _, made = recorded_call(core, 1)
    audio, _ = sf.read(io.BytesIO(made.wav()), dtype="int16")
    assert audio.ndim == 1 and (np.abs(audio) > 2000).mean() > 0.3
    async with serve_rest(core) as url:
        c = client(url)
        with pytest.raises(TwilioRestException) as bad:
            await in_thread(lambda: c.calls.create(to="+15550001111", from_="+15550002222", twiml="<Response/>",
                                                   record=True, recording_channels="stereo"))
    assert bad.value.status == 400 and "RecordingChannels" in bad.value.msg


async def test_recordings_longer_than_a_page_are_listed_whole_page_by_page():
    core = RestCore(SID, TOKEN, clock=lambda: T0, rng=random.Random(5))
    call, _ = recorded_call(core, 1, seconds=0.1)
    for _ in range(4):
        core.recordings.add(call.sid, Recorder(1, started_at=T0), T0 + 1)
    newest_first = [r.sid for r in core.recordings.newest_first()]
    async with serve_rest(core) as url:
        c = client(url)
        listed = await in_thread(lambda: c.recordings.list(page_size=2))
        by_call = await in_thread(lambda: c.calls(call.sid).recordings.list(page_size=2))
        second = await in_thread(lambda: c.recordings.page(page_size=2, page_number=1))
        last = await in_thread(lambda: c.recordings.page(page_size=2, page_number=2))
    assert [r.sid for r in listed] == [r.sid for r in by_call] == newest_first
    assert [r.sid for r in second] == newest_first[2:4]
    assert [r.sid for r in last] == newest_first[4:] and last.next_page_url is None


def test_dial_polls_for_a_late_recording_then_saves_it(tmp_path, monkeypatch):
    listed = [[], [SimpleNamespace(status="processing")],
              [SimpleNamespace(sid="RE" + "1" * 32, status="completed", duration="3", channels=2,
                               media_url="http://127.0.0.1:9/rec")]]
    fake = SimpleNamespace(recordings=SimpleNamespace(list=lambda call_sid: listed.pop(0)))
    slept: list[float] = []
    got = {}

    def fake_get(url, auth, timeout):
        got.update(url=url, auth=auth)
        return SimpleNamespace(content=b"RIFF....", raise_for_status=lambda: None)

    monkeypatch.setattr(requests, "get", fake_get)
    entry = fetch_recording(fake, (SID, TOKEN), "CA" + "2" * 32, tmp_path, sleep=slept.append)
    assert entry == {"sid": "RE" + "1" * 32, "duration_s": 3, "channels": 2, "file": "recording.wav"}
    assert len(slept) == 2 and got == {"url": "http://127.0.0.1:9/rec.wav", "auth": (SID, TOKEN)}
    assert (tmp_path / "recording.wav").read_bytes() == b"RIFF...."
    (tmp_path / "report.json").write_text('{"meta": {"dial": {"recording": null}}}')
    attach_to_report(tmp_path, entry)
    assert '"channels": 2' in (tmp_path / "report.json").read_text()


def test_dial_says_so_when_the_recording_never_comes(tmp_path):
    fake = SimpleNamespace(recordings=SimpleNamespace(list=lambda call_sid: []))
    lines: list[str] = []
    entry = fetch_recording(fake, (SID, TOKEN), "CA" + "3" * 32, tmp_path, wait_s=0.05, say=lines.append,
                            sleep=lambda s: trio.run(trio.sleep, 0.02))
    assert "no completed recording" in entry["missing"] and "0.05 s" in entry["missing"]
    assert lines and "no recording" in lines[0] and not (tmp_path / "recording.wav").exists()
