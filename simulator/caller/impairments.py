"""Seeded network impairments on the caller's send side.

A real Twilio stream is not a perfect 20 ms metronome: frames arrive late
(jitter), in clumps after a stall (bunching), go missing on the carrier leg
(loss), and the media ``timestamp`` sometimes jumps (gaps). A bridge that is fine
on a perfect line may break on a real one, so the caller can impose each of these
reproducibly from a seed.

The impairer decides, per frame, *whether* it is sent, *how late* (in ns after
its grid time) and how far its timestamp is shifted. It never reorders frames —
the transport is TCP.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..audio.codec import FRAME_MS


@dataclass(frozen=True)
class Impairments:
    jitter_ms: float = 0.0  # each frame delayed by uniform [0, jitter_ms)
    bunch_prob: float = 0.0  # chance a frame starts a stall ...
    bunch_frames: int = 5  # ... that holds this many frames, then sends them at once
    loss_prob: float = 0.0  # chance a frame is lost before Twilio numbers it
    gap_prob: float = 0.0  # chance the media timestamp jumps forward ...
    gap_ms: int = 40  # ... by this much (frames keep flowing)
    seed: int = 0

    @property
    def active(self) -> bool:
        return bool(self.jitter_ms or self.bunch_prob or self.loss_prob or self.gap_prob)

    @classmethod
    def parse(cls, spec: str) -> "Impairments":
        """Parse ``"jitter=5,loss=0.01,bunch=0.02x5,gap=0.01x40,seed=7"``."""
        kw: dict[str, float | int] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            key, _, value = part.partition("=")
            try:
                if key == "jitter":
                    kw["jitter_ms"] = float(value)
                elif key == "loss":
                    kw["loss_prob"] = float(value)
                elif key == "bunch":
                    p, _, n = value.partition("x")
                    kw["bunch_prob"] = float(p)
                    if n:
                        kw["bunch_frames"] = int(n)
                elif key == "gap":
                    p, _, ms = value.partition("x")
                    kw["gap_prob"] = float(p)
                    if ms:
                        kw["gap_ms"] = int(ms)
                elif key == "seed":
                    kw["seed"] = int(value)
                else:
                    raise ValueError(f"unknown impairment {key!r}")
            except ValueError as exc:
                raise ValueError(
                    f"bad impairment {part!r} ({exc}); expected e.g. "
                    "jitter=5,loss=0.01,bunch=0.02x5,gap=0.01x40,seed=7"
                ) from None
        imp = cls(**kw)  # type: ignore[arg-type]
        imp.check()
        return imp

    def check(self) -> None:
        """Reject values that make no sense (a probability of 2, a bunch of 0 frames)."""
        for name in ("bunch_prob", "loss_prob", "gap_prob"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        if self.bunch_frames < 1:
            raise ValueError(f"a bunch holds at least 1 frame, got {self.bunch_frames}")
        if self.jitter_ms < 0 or self.gap_ms < 0:
            raise ValueError("jitter and gap must not be negative")


@dataclass(frozen=True)
class FrameFate:
    send: bool
    delay_ns: int  # after the frame's grid time
    ts_shift_ms: int  # cumulative extra timestamp offset


class Impairer:
    def __init__(self, imp: Impairments) -> None:
        imp.check()
        self.imp = imp
        self._rng = random.Random(imp.seed)
        self._bunch_left = 0
        self._bunch_release_ns = 0
        self._ts_shift = 0
        self._last_due_ns = 0
        self.lost = 0
        self.bunched = 0
        self.gaps = 0

    def fate(self, grid_ns: int) -> FrameFate:
        imp, rng = self.imp, self._rng
        if not imp.active:
            return FrameFate(True, 0, 0)
        if imp.gap_prob and rng.random() < imp.gap_prob:
            self._ts_shift += imp.gap_ms
            self.gaps += 1
        if imp.loss_prob and rng.random() < imp.loss_prob:
            self.lost += 1
            if self._bunch_left > 0:  # a lost frame still uses up its slot in a bunch
                self._bunch_left -= 1
            return FrameFate(False, 0, self._ts_shift)
        due = grid_ns
        if self._bunch_left:
            self._bunch_left -= 1
            due = self._bunch_release_ns
            self.bunched += 1
        elif imp.bunch_prob and rng.random() < imp.bunch_prob:
            self._bunch_left = imp.bunch_frames - 1
            self._bunch_release_ns = grid_ns + (imp.bunch_frames - 1) * FRAME_MS * 1_000_000
            due = self._bunch_release_ns
            self.bunched += 1
        if imp.jitter_ms:
            due += int(rng.random() * imp.jitter_ms * 1_000_000)
        due = max(due, self._last_due_ns)  # TCP: never reorder
        self._last_due_ns = due
        return FrameFate(True, due - grid_ns, self._ts_shift)
