"""What transcoding adds to a turn, by where the caller's speech ends inside a 20 ms frame.

    python loadtests/transcode_phase.py [--phases 0,5,10,15] [--quality FIR]

Twilio delivers the caller in 20 ms frames, and a resampler that holds back d ms of each frame
sends the end of the caller's speech one frame later whenever that end falls within d ms of a
frame boundary: OpenAI's VAD then decides a frame later. The shipped fixtures end speech
*exactly* on a boundary (200 ms of padding, speech ending on a 10 ms step), so a demo run with
them measures the worst case every time. Real speech ends anywhere in a frame.

This runs the demo's ``codec_transcode`` and ``codec_passthrough`` scenarios (our bridge in
process, the mock echoing) with the same caller utterance shifted by each phase (digital
silence prepended to a copy of the fixture in a temporary fixture folder), and prints each
turn's bridge overhead and the difference, then the mean over the phases: the figure a caller
whose speech ends at a random point of the frame sees on average.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import trio
from callsim.simulator.runner import run_embedded
from callsim.simulator.scenario import find_scenario

UTTERANCE = "caller_weather_question"


def shifted_fixtures(src: Path, dst: Path, phase_ms: int) -> Path:
    """A copy of the fixture folder in which UTTERANCE starts ``phase_ms`` later (silence first)."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    for f in manifest["files"]:
        if f["name"] != UTTERANCE:
            continue
        audio, rate = sf.read(dst / f["file"], dtype="int16")
        pad = np.zeros(rate * phase_ms // 1000, dtype=np.int16)
        sf.write(dst / f["file"], np.concatenate([pad, audio]), rate, subtype="PCM_16")
        f["frames"] += len(pad)
        f["duration_ms"] = round(f["duration_ms"] + phase_ms, 1)
        f["speech_segments_ms"] = [[a + phase_ms, b + phase_ms] for a, b in f["speech_segments_ms"]]
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return dst


async def overhead(name: str, fixtures: Path, quality: str) -> float | None:
    """The bridge overhead of the scenario's one turn, the caller saying codec_transcode's utterance."""
    scenario = find_scenario(name).with_overrides(fixtures=fixtures)
    bridge = {**scenario.bridge, "resample_quality": quality} if name == "codec_transcode" else scenario.bridge
    scenario = dataclasses.replace(scenario, steps=find_scenario("codec_transcode").steps, bridge=bridge)
    run = await run_embedded(scenario)
    turns = run.calls[0].metrics.turns
    return turns[0].overhead_ms if turns else None


async def main(phases: list[int], quality: str) -> None:
    import callsim.fixtures

    src = Path(callsim.fixtures.__file__).parent / "audio"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for phase in phases:
            folder = shifted_fixtures(src, Path(tmp) / f"phase{phase}", phase)
            trans = await overhead("codec_transcode", folder, quality)
            passt = await overhead("codec_passthrough", folder, quality)
            rows.append((phase, trans, passt))
            print(f"speech ends {phase:2d} ms into a frame: transcode {trans:6.1f} ms, passthrough {passt:5.1f} ms, "
                  f"difference {trans - passt:5.1f} ms", flush=True)
    diffs = [t - p for _, t, p in rows]
    print(f"RESAMPLE_QUALITY={quality}: mean difference over {len(rows)} phases {np.mean(diffs):.1f} ms "
          f"(worst {max(diffs):.1f} ms)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--phases", default="0,5,10,15", help="ms into the frame where the speech ends (default 0,5,10,15)")
    p.add_argument("--quality", default="FIR", help="the bridge's RESAMPLE_QUALITY (default FIR)")
    a = p.parse_args()
    trio.run(main, [int(x) for x in a.phases.split(",")], a.quality)
