"""Lints: where a bridge departs from what the real services do or a phone call needs.

Each lint is one plain line (at most 66 characters, so it fits the console's
80 columns after "lint: " and a merged run's " [2/3]"), and each rests on protocols.md: the retired beta dialect (2.1,
pitfall 8), formats Twilio cannot play (2.2), VAD that cuts callers off (2.3),
interrupt_response off without a cancel (2.5 step 4), marks too coarse to
truncate by (2.5 step 1, pitfalls 5 and 7), no clear on barge-in (pitfall 6),
no truncate at all (pitfall 4), invalid client events the API answered with an
error, and messages Twilio rejects (pitfall 10). Nothing is linted on a guess:
no evidence, no lint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .truncate_diagnosis import COARSE_MARK_MS

if TYPE_CHECKING:
    from .bridge_profile import BridgeProfile

#: VAD that ends a turn at a shorter pause cuts phone callers off
MIN_SILENCE_MS = 300
#: a VAD threshold above this misses quiet or distant callers
MAX_THRESHOLD = 0.8


@dataclass(frozen=True)
class Lint:
    code: str
    message: str
    calls: int = 1  # in a merged profile: how many calls had it


def lint_profile(p: BridgeProfile) -> list[Lint]:
    """The lints of one call's profile (merged profiles merge their calls' lints)."""
    out: list[Lint] = []

    def add(code: str, message: str) -> None:
        out.append(Lint(code, message))

    if p.dialect == "beta":
        add("beta_dialect", "beta dialect: API sends beta_api_shape_disabled, close 4000; use GA")
    if p.mock_in_loop and not p.refused:
        _openai_lints(p, add)
    if p.mark_gaps_ms:
        p50 = p.mark_gap_p50_ms or 0.0
        if p50 > COARSE_MARK_MS:
            add("coarse_marks", f"a mark per {p50:.0f} ms of audio: truncates can be off; mark every delta")
    if p.barge_ins > p.barge_in_clears:
        add("no_clear", f"no clear on {p.barge_ins - p.barge_in_clears} of {p.barge_ins} barge-ins:"
                        " Twilio plays on the buffered reply")
    for code, n in sorted(p.twilio_warnings.items()):
        add(f"twilio_{code}", f"Twilio rejects messages ({code} ×{n}): {p.twilio_warning_reason or ''}")
    return out


def _openai_lints(p: BridgeProfile, add) -> None:  # type: ignore[no-untyped-def]
    if p.session_updates == 0:
        add("no_session_update", "no session.update: OpenAI keeps pcm 24 kHz both ways, not μ-law")
    r = p.audio_out_ratio
    if r is not None and r >= 4:
        add("output_unconverted", f"Twilio got {r:.1f}× the audio OpenAI sent: {p.output_format} sent as μ-law")
    r = p.audio_in_ratio
    if r is not None and (0.12 <= r <= 0.22 or 4.5 <= r <= 7.5):
        add("input_unconverted", f"OpenAI got {r:.2g}× the caller's audio: appends are not {p.input_format}")
    vad = p.vad or {}
    if p.vad_type == "server_vad":
        silence = vad.get("silence_duration_ms")
        if isinstance(silence, (int, float)) and silence < MIN_SILENCE_MS:
            add("vad_silence_short", f"VAD silence {silence} ms: callers get cut off at a pause; use ≥500 ms")
        threshold = vad.get("threshold")
        if isinstance(threshold, (int, float)) and threshold > MAX_THRESHOLD:
            add("vad_threshold_high", f"VAD threshold {threshold} > {MAX_THRESHOLD}: quiet callers go unheard;"
                                      " use ~0.5")
    if p.vad_type in ("server_vad", "semantic_vad") and vad.get("interrupt_response") is False \
            and p.barge_ins and p.cancels == 0:
        add("no_cancel", "interrupt_response off yet no response.cancel on barge-in: send one")
    if p.barge_ins and not p.truncates and p.media_messages:
        add("no_truncate", "no truncate on barge-in: OpenAI thinks the whole reply was heard")
    for code, n in sorted(p.openai_errors.items()):
        add(f"openai_{code}", f"OpenAI error {code} ×{n}: {p.error_examples.get(code, '')}")
