"""What one measured call produced: the records metrics, expectations and reports share.

Plain dataclasses, no logic: :mod:`.metrics` fills them from what the caller
recorded (and, when the mock is in the loop, what the mock recorded);
:mod:`.expectations` judges them; :mod:`.report` writes them out. Every figure
is measured at the caller on the shared monotonic clock (design.md), or taken
from the mock's own records — never assumed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal


@dataclass
class TurnMetrics:
    """One caller utterance and the reply to it."""

    index: int
    fixture: str
    speech_end_ns: int  # last speech frame of the utterance sent (fixture manifest)
    first_audio_ns: int | None = None  # first non-silent assistant audio played after it
    latency_ms: float | None = None  # turn_latency_ms
    mock_vad_wait_ms: float | None = None  # mock: last speech received -> speech_stopped (wall clock)
    mock_think_ms: float | None = None  # mock: think time (+ response.created delay) of the reply
    overhead_ms: float | None = None  # the bridge's share: its hops (below) + the waits it caused
    heard: str | None = None  # fixture the mock recognised
    reply_start_ns: int | None = None  # first frame (silent or not) of the run holding first_audio_ns
    reply_lead_ms: float | None = None  # the reply's own leading silence: first_audio_ns - reply_start_ns
    mock_item_id: str | None = None  # the mock's user item for this turn
    response_ids: list[str] = field(default_factory=list)  # mock responses that led to the reply (tool chain)
    uplink_hop_ms: float | None = None  # caller frame sent -> the mock received that same frame (line tag)
    downlink_hop_ms: float | None = None  # mock sent the reply's first delta -> the caller received it
    first_byte_ns: int | None = None  # when the reply's first audio byte reached the caller


@dataclass
class BargeInMetrics:
    """Caller speech that started while assistant audio was playing."""

    onset_ns: int  # first speech frame of the interrupting utterance sent
    fixture: str
    clear_ns: int | None = None
    clear_ms: float | None = None  # barge_in_clear_ms
    talk_over_ms: float = 0.0  # assistant audio played after the onset
    heard_ms: float = 0.0  # assistant audio of the interrupted reply heard up to the clear
    truncate_audio_end_ms: int | None = None  # what the bridge told OpenAI (mock record)
    truncate_error_ms: float | None = None  # |audio_end_ms - heard_ms|
    truncate_accepted: bool | None = None
    reply_start_ns: int | None = None  # first frame of the interrupted reply (heard_ms counts from it)
    truncate_ns: int | None = None  # when the mock received the paired truncate
    truncate_rejection: str | None = None  # the mock's error for a rejected truncate
    truncate_cause: str | None = None  # the likely cause of a truncate error, from what was seen
    playback_stop_ns: int | None = None  # the end of the last assistant frame counted in talk_over_ms (None: none)


@dataclass
class CodecMetrics:
    """Echo-mode check: did the caller hear back exactly what it said?"""

    checked: bool = False
    bit_exact: bool | None = None  # the sent μ-law bytes appear unchanged in what was heard
    snr_db: float | None = None  # after best alignment
    note: str = ""
    turns: list[dict[str, Any]] = field(default_factory=list)  # per turn: fixture, bit_exact, snr_db, ...


@dataclass
class RenewalMetrics:
    """The OpenAI sessions of one call and its switch-overs (:mod:`.renewals`), from what the mock received."""

    sessions: int = 0  # mock sessions paired with the call
    renewals: int = 0  # switch-overs: sessions − 1
    session_ids: list[str] = field(default_factory=list)  # in open order
    switch_gap_ms: float | None = None  # the worst switch's gap in the caller's audio (0 = seamless)
    caller_audio_lost_ms: float | None = None  # caller frames that reached no session (mid-call)
    switches: list[dict[str, Any]] = field(default_factory=list)  # per switch: from, to, gap_ms, frames_missing, t_ms
    note: str = ""  # why something could not be measured


@dataclass
class CallMetrics:
    scenario: str
    call_index: int
    call_sid: str | None
    status: Literal["passed", "failed", "skipped", "error"] = "passed"
    error: str | None = None
    skip_reason: str | None = None  # the scenario does not apply to this bridge: why
    pairing: str | None = None  # how the call was paired with its mock session (line_tag | timing), and notes
    behaviour_tag: str | None = None  # the mock behaviour the paired session ran
    dead_air_ms: float = 0.0  # longest silence the caller waited through after its last utterance
    end_reason: str | None = None
    duration_ms: float = 0.0
    turns: list[TurnMetrics] = field(default_factory=list)
    barge_ins: list[BargeInMetrics] = field(default_factory=list)
    codec: CodecMetrics = field(default_factory=CodecMetrics)
    underrun_ms: float = 0.0  # silence inserted inside assistant responses (choppy audio)
    heard_ms: float = 0.0  # assistant audio played in all
    unheard_at_end_ms: float = 0.0  # assistant audio still queued at Twilio when the stream ended: never heard
    # assistant replies heard after the caller's last utterance ended (runs of audio apart by >= REPLY_GAP_MS)
    replies_after_last_utterance: int = 0
    pacing: dict[str, float] = field(default_factory=dict)  # caller send lateness p50/p99/max (ms)
    warnings: dict[str, int] = field(default_factory=dict)  # Twilio warnings the bridge caused
    marks_echoed: dict[str, int] = field(default_factory=dict)
    clears: int = 0
    mock: dict[str, Any] | None = None  # summary of the mock session, when the mock is in the loop
    openai_closed_after_hangup_ms: float | None = None
    transcript: list[str] = field(default_factory=list)  # what the mock heard the caller say
    tools_called: list[str] = field(default_factory=list)
    expectations: list[dict[str, Any]] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)  # heard.wav etc., relative to the report
    warning_reasons: list[str] = field(default_factory=list)  # a few distinct reasons, verbatim
    tools_completed: list[str] = field(default_factory=list)  # tool calls the bridge answered (a response followed)
    # the bridge's own tools the mock called in place of the scenario's (hang_up for end_call): name -> scripted name
    tool_stand_ins: dict[str, str] = field(default_factory=dict)
    renewal: RenewalMetrics | None = None  # with the mock: its sessions and switch-overs
    # with a Twilio in the loop (callsim dial): the calls dialled from this call's legs, as Twilio's REST
    # records list them ({sid, parent_call_sid, direction, from, to, status}); None: no Twilio in the loop
    twilio_calls: list[dict[str, Any]] | None = None
    # Twilio was in the loop but its records of the call could not be read (why): an expectation that
    # needs them fails — a transfer nobody could confirm is not a pass, nor a skip for want of Twilio
    twilio_records_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ExpectationResult:
    name: str
    status: Literal["passed", "failed", "skipped"]
    message: str
    measured: Any = None
    limit: Any = None
    # the calls that violate it: [{"call_index", "message", "measured"}]; judge() reads this
    failures: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
