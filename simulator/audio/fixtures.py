"""Speech fixtures: the recorded WAVs the fake caller plays, and where the speech is.

Why a manifest instead of measuring at run time: the turn-latency metric starts
at "end of the caller's utterance", and every part of the harness (scenario
runner, reports, load tests) must agree on that instant. So the speech segments
are found once, with one documented VAD, written to
``fixtures/audio/manifest.json`` by ``fixtures/make_fixtures.py``, and read here.
``find_speech_segments`` lives in this module (not in the script) so the tests
can re-run the exact same VAD and prove the manifest is still true.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import webrtcvad

__all__ = [
    "Fixture",
    "FixtureLibrary",
    "default_library",
    "find_speech_segments",
    "DEFAULT_FIXTURES_DIR",
    "VAD_RATES",
]

#: The speech fixtures shipped with the package (``fixtures/audio`` in the checkout, package
#: data ``callsim.fixtures`` once installed): found through importlib.resources so that an
#: installed callsim finds them wherever pip put it.
DEFAULT_FIXTURES_DIR = Path(os.fspath(resources.files("callsim.fixtures") / "audio"))

#: Sample rates webrtcvad accepts; anything else is resampled first.
VAD_RATES = (8000, 16000, 32000, 48000)

_CORE_KEYS = (
    "name", "file", "role", "text", "sample_rate", "channels",
    "frames", "duration_ms", "speech_segments_ms",
)


def find_speech_segments(
    samples: np.ndarray,
    rate: int,
    *,
    mode: int = 3,
    frame_ms: int = 10,
    merge_gap_ms: float = 250.0,
    min_segment_ms: float = 60.0,
    edge_db: float = 35.0,
    edge_max_ms: float = 150.0,
) -> list[tuple[float, float]]:
    """Return ``[(start_ms, end_ms), ...]`` of speech in int16 mono ``samples``.

    webrtcvad classifies fixed frames; runs of speech frames become segments.
    Gaps shorter than ``merge_gap_ms`` are merged because pauses between words
    are part of one utterance (the caller has not stopped talking), and
    segments shorter than ``min_segment_ms`` are dropped as clicks/blips.
    Mode 3 (most aggressive) is the least likely to call non-speech speech.

    webrtcvad keeps saying "speech" for ~90 ms after speech stops (its
    hangover), which would push every segment end, and so the start of every
    measured turn latency, late by that much. So the VAD runs twice, forwards
    and on the time-reversed signal (where the hangover falls before the
    onset instead), and a frame is speech only if both passes say so.

    Mode 3 also misses soft unvoiced edges (the initial /s/ of "Stop" starts
    110 ms before it fires), which would make barge-in onsets late. So each
    segment edge is then moved outwards to the farthest frame, at most
    ``edge_max_ms`` away and not into a neighbouring segment, whose energy is
    within ``edge_db`` of the segment's loudest frame.

    Rates webrtcvad does not accept are resampled with soxr: to 48 kHz when the
    rate divides it (24 kHz -> 48 kHz is an exact 2x), else to 16 kHz. Times
    are frame boundaries in ms, so they do not depend on the rate used.
    """
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"expected mono 1-D samples, got shape {x.shape}")
    if x.dtype != np.int16:
        raise TypeError(f"expected int16 samples, got {x.dtype}")
    if frame_ms not in (10, 20, 30):
        raise ValueError("webrtcvad frames must be 10, 20 or 30 ms")
    duration_ms = len(x) * 1000 / rate
    if rate not in VAD_RATES:
        target = 48000 if 48000 % rate == 0 else 16000
        x = soxr.resample(x, rate, target, quality="VHQ")
        rate = target
    n = rate * frame_ms // 1000
    x = np.concatenate([x, np.zeros(-len(x) % n, dtype=np.int16)])  # whole frames
    forward = _vad_flags(x, rate, n, mode)
    backward = _vad_flags(x[::-1].copy(), rate, n, mode)[::-1]
    flags = [f and b for f, b in zip(forward, backward)]

    runs: list[list[int]] = []  # [start_frame, end_frame_exclusive]
    for i, speech in enumerate(flags):
        if not speech:
            continue
        gap = i - runs[-1][1] if runs else None
        if gap is not None and (gap == 0 or gap * frame_ms < merge_gap_ms):
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    runs = [r for r in runs if (r[1] - r[0]) * frame_ms >= min_segment_ms]

    frames = x.reshape(-1, n).astype(np.float64)
    level_db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    reach = int(edge_max_ms // frame_ms)
    for k, (a, b) in enumerate(runs):
        floor = level_db[a:b].max() - edge_db
        lo = max(a - reach, runs[k - 1][1] if k else 0)
        hi = min(b + reach, runs[k + 1][0] if k + 1 < len(runs) else len(level_db))
        before = np.nonzero(level_db[lo:a] >= floor)[0]
        after = np.nonzero(level_db[b:hi] >= floor)[0]
        runs[k] = [lo + before[0] if len(before) else a, b + after[-1] + 1 if len(after) else b]

    return [
        (round(float(a * frame_ms), 1), round(min(float(b * frame_ms), duration_ms), 1))
        for a, b in runs
    ]


def _vad_flags(x: np.ndarray, rate: int, n: int, mode: int) -> list[bool]:
    vad = webrtcvad.Vad(mode)
    return [vad.is_speech(x[i : i + n].tobytes(), rate) for i in range(0, len(x), n)]


@dataclass(frozen=True)
class Fixture:
    """One manifest entry, plus the absolute path of its WAV.

    ``extra`` holds manifest keys beyond the core schema (``variant_of``,
    ``snr_db``, ``voice``...) so new metadata does not need a code change here.
    """

    name: str
    file: str
    role: str  # "caller", "assistant" or "silence"
    text: str
    sample_rate: int
    channels: int
    frames: int
    duration_ms: float
    speech_segments_ms: tuple[tuple[float, float], ...]
    path: Path
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def speech_start_ms(self) -> float | None:
        """Onset of the first speech segment (None for silence)."""
        return self.speech_segments_ms[0][0] if self.speech_segments_ms else None

    @property
    def speech_end_ms(self) -> float | None:
        """End of the last speech segment: where turn latency starts counting."""
        return self.speech_segments_ms[-1][1] if self.speech_segments_ms else None

    @classmethod
    def from_manifest(cls, entry: Mapping[str, Any], root: Path) -> Fixture:
        missing = [k for k in _CORE_KEYS if k not in entry]
        if missing:
            raise ValueError(f"manifest entry {entry.get('name')!r} lacks {missing}")
        return cls(
            name=str(entry["name"]),
            file=str(entry["file"]),
            role=str(entry["role"]),
            text=str(entry["text"]),
            sample_rate=int(entry["sample_rate"]),
            channels=int(entry["channels"]),
            frames=int(entry["frames"]),
            duration_ms=float(entry["duration_ms"]),
            speech_segments_ms=tuple(
                (float(a), float(b)) for a, b in entry["speech_segments_ms"]
            ),
            path=(root / entry["file"]).resolve(),
            extra=MappingProxyType(
                {k: v for k, v in entry.items() if k not in _CORE_KEYS}
            ),
        )


class FixtureLibrary:
    """The fixtures listed in one ``manifest.json``, looked up by name.

    ``root`` defaults to ``$CALLSIM_FIXTURES`` (so a user can point the harness
    at their own recordings without code changes), else the repo's
    ``fixtures/audio``.
    """

    def __init__(self, root: Path | None = None) -> None:
        if root is None:
            env = os.environ.get("CALLSIM_FIXTURES")
            root = Path(env) if env else DEFAULT_FIXTURES_DIR
        self.root: Path = Path(root).resolve()
        manifest_path = self.root / "manifest.json"
        try:
            self.manifest: dict[str, Any] = json.loads(manifest_path.read_text("utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no fixture manifest at {manifest_path}; "
                "regenerate with `python fixtures/make_fixtures.py` "
                "or set CALLSIM_FIXTURES to a folder holding manifest.json"
            ) from None
        self._fixtures: dict[str, Fixture] = {}
        for entry in self.manifest["files"]:
            fx = Fixture.from_manifest(entry, self.root)
            if fx.name in self._fixtures:
                raise ValueError(f"duplicate fixture name {fx.name!r} in {manifest_path}")
            self._fixtures[fx.name] = fx

    def names(self) -> list[str]:
        return list(self._fixtures)

    def __getitem__(self, name: str) -> Fixture:
        try:
            return self._fixtures[name]
        except KeyError:
            raise KeyError(
                f"no fixture named {name!r} in {self.root}; "
                f"known: {', '.join(self._fixtures)}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._fixtures

    def __iter__(self) -> Iterator[Fixture]:
        return iter(self._fixtures.values())

    def __len__(self) -> int:
        return len(self._fixtures)

    def read_pcm(self, name: str) -> tuple[np.ndarray, int]:
        """Return ``(int16 mono samples, sample_rate)`` of fixture ``name``.

        Checked against the manifest so a stale or swapped WAV fails loudly
        instead of skewing every timing measured from it.
        """
        fx = self[name]
        data, rate = sf.read(fx.path, dtype="int16", always_2d=False)
        if data.ndim != 1:
            raise ValueError(f"{fx.path} is not mono (shape {data.shape})")
        if rate != fx.sample_rate or len(data) != fx.frames:
            raise ValueError(
                f"{fx.path} is {len(data)} frames at {rate} Hz but the manifest says "
                f"{fx.frames} at {fx.sample_rate} Hz; regenerate the fixtures"
            )
        return data, rate


@cache
def default_library() -> FixtureLibrary:
    """The library at the default root, loaded once per process."""
    return FixtureLibrary()
