"""What a call leaves behind: the audio the caller heard and the timeline.

``heard.wav`` is 8 kHz 16-bit PCM with one 20 ms frame per tick from the start
of the stream, silence where nothing played — so a sample's offset in the file
*is* its playback time. ``heard.ulaw`` keeps the exact μ-law bytes for bit-exact
codec checks (re-encoding a decoded WAV is not lossless for every code).
``timeline.json`` holds every event on the shared monotonic clock, plus the
call's summary and the send-pacing figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import soundfile as sf

from ..audio.codec import FRAME_MS, SAMPLE_RATE, ulaw_to_pcm16
from ..caller.call_result import CallResult


def pacing_stats(result: CallResult) -> dict[str, float] | None:
    """How far each media frame left from its 20 ms grid slot (ms)."""
    core = result.core
    if core is None or core.t0_ns is None or not len(core.media_sent_ns):
        return None
    sent = np.frombuffer(core.media_sent_ns, dtype=np.int64)
    grid = core.t0_ns + np.frombuffer(core.media_sent_grid, dtype=np.int64) * FRAME_MS * 1_000_000
    late = (sent - grid) / 1e6
    intervals = np.diff(sent) / 1e6
    return {
        "frames": int(len(sent)),
        "lateness_ms_p50": float(np.percentile(late, 50)),
        "lateness_ms_p99": float(np.percentile(late, 99)),
        "lateness_ms_max": float(late.max()),
        "interval_ms_median": float(np.median(intervals)) if len(intervals) else 0.0,
        "drift_frames": float((late[-1] - late[0]) / FRAME_MS),
    }


def call_record(result: CallResult) -> dict[str, Any]:
    core = result.core
    rec: dict[str, Any] = {
        "target": result.target,
        "stream_url": result.stream_url,
        "error": result.error,
        "notes": result.notes,
    }
    if result.webhook is not None:
        wh = result.webhook
        rec["webhook"] = {"url": wh.url, "form": wh.form, "signed": wh.signed, "status": wh.status,
                          "content_type": wh.content_type, "twiml": wh.body}
    if core is not None:
        rec["summary"] = core.summary()
        rec["t0_ns"] = core.t0_ns
        rec["frame_ms"] = FRAME_MS
        rec["pacing"] = pacing_stats(result)
        rec["warnings"] = core.warnings
        rec["timeline"] = core.timeline.as_dicts()
    return rec


def write_call(result: CallResult, out_dir: Path) -> list[Path]:
    """Write heard.wav, heard.ulaw and timeline.json into ``out_dir``; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    timeline = out_dir / "timeline.json"
    timeline.write_bytes(orjson.dumps(call_record(result), option=orjson.OPT_INDENT_2))
    paths.append(timeline)
    if result.core is not None:
        heard = bytes(result.core.heard)
        wav = out_dir / "heard.wav"
        sf.write(wav, ulaw_to_pcm16(heard) if heard else np.zeros(0, np.int16), SAMPLE_RATE, subtype="PCM_16")
        raw = out_dir / "heard.ulaw"
        raw.write_bytes(heard)
        paths += [wav, raw]
    return paths
