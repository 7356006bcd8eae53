"""The emulator's call recordings, sans-IO: what a ``Record=true`` call leaves behind.

A call created with ``Record=true`` is recorded from answer to end. ``RecordingChannels=dual``
keeps the two parties apart: channel 1 is what the REST-created call's own TwiML plays into the
call (for ``callsim dial``: its utterances), channel 2 what the called party says (the agent);
``mono`` mixes them. That order is a guess from Twilio's "dual: the two legs of the call in
separate channels" (which channel holds which party is not stated for ``outbound-api`` calls).
Samples are the line's 8 kHz μ-law decoded to 16-bit PCM, the ``.wav`` Twilio serves.

The JSON follows the ``twilio`` package's ``RecordingInstance`` (account and call recordings):
``source`` ``OutboundAPI``, ``status`` ``completed``, ``duration`` whole seconds as a string,
``media_url`` the recording's URL without an extension (Twilio serves WAV there and with
``.wav``, MP3 with ``.mp3``: the emulator serves WAV for both and refuses ``.mp3``). Twilio
makes a recording available some seconds after the call ends; the emulator's is available
when the call's end is recorded.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import soundfile as sf

from ..audio.codec import ulaw_to_pcm16
from ..caller.sids import make_sid
from .form import API_VERSION, rfc2822

SAMPLE_RATE: Final = 8000


@dataclass(slots=True)
class Recording:
    sid: str
    account_sid: str
    call_sid: str
    channels: int
    start_time: float
    date_created: float
    caller: bytes  # μ-law, what the REST-created call's TwiML played into the call
    called: bytes  # μ-law, what the called party said

    @property
    def duration_s(self) -> int:
        return int(len(self.caller) / SAMPLE_RATE)

    def wav(self) -> bytes:
        """16-bit PCM WAV, 8 kHz: two channels (caller, called) or one (both mixed)."""
        n = min(len(self.caller), len(self.called))
        a = ulaw_to_pcm16(self.caller[:n]).astype(np.int32)
        b = ulaw_to_pcm16(self.called[:n]).astype(np.int32)
        if self.channels == 2:
            data = np.stack([a, b], axis=1).astype(np.int16)
        else:
            data = np.clip(a + b, -32768, 32767).astype(np.int16)
        out = io.BytesIO()
        sf.write(out, data, SAMPLE_RATE, format="WAV", subtype="PCM_16")
        return out.getvalue()


@dataclass
class Recorder:
    """The two sides of one recorded call, a 20 ms frame at a time (the legs' grid)."""

    channels: int
    caller: bytearray = field(default_factory=bytearray)
    called: bytearray = field(default_factory=bytearray)
    started_at: float | None = None

    def add(self, caller_frame: bytes, called_frame: bytes) -> None:
        self.caller += caller_frame
        self.called += called_frame


@dataclass
class RecordingStore:
    account_sid: str
    rng: random.Random = field(default_factory=random.Random)
    recordings: dict[str, Recording] = field(default_factory=dict)

    def add(self, call_sid: str, recorder: Recorder, at: float) -> Recording:
        sid = make_sid("RE", self.rng)
        rec = Recording(sid, self.account_sid, call_sid, recorder.channels,
                        recorder.started_at if recorder.started_at is not None else at, at,
                        bytes(recorder.caller), bytes(recorder.called))
        self.recordings[sid] = rec
        return rec

    def newest_first(self, call_sid: str | None = None) -> list[Recording]:
        return [r for r in reversed(self.recordings.values()) if call_sid is None or r.call_sid == call_sid]


def render(r: Recording, base_url: str) -> dict[str, Any]:
    """A recording as Twilio's JSON; ``media_url`` on ``base_url``, the origin the API is served
    from (``https://api.twilio.com`` for Twilio, the emulator's own address for it)."""
    base = f"/{API_VERSION}/Accounts/{r.account_sid}/Recordings/{r.sid}"
    return {
        "account_sid": r.account_sid,
        "api_version": API_VERSION,
        "call_sid": r.call_sid,
        "conference_sid": None,
        "date_created": rfc2822(r.date_created),
        "date_updated": rfc2822(r.date_created),
        "start_time": rfc2822(r.start_time),
        "duration": str(r.duration_s),
        "sid": r.sid,
        "price": None,
        "price_unit": "USD",
        "status": "completed",
        "channels": r.channels,
        "source": "OutboundAPI",
        "error_code": None,
        "track": "both",
        "uri": f"{base}.json",
        "encryption_details": None,
        "subresource_uris": {"add_on_results": f"{base}/AddOnResults.json",
                             "transcriptions": f"{base}/Transcriptions.json"},
        "media_url": f"{base_url}{base}",
    }
