"""An expectation's verdict in a few words for the console: the measured value, the limit, and what to fix.

The console gives each failure one line (``scenario[call N]: expectation — measured X,
limit Y — what to fix``); the full message :mod:`.expectations` wrote, with the turn, the
cause and the numbers behind it, stays in the reports. So the line needs, per kind of
expectation, how its values read (units, direction of the limit) and one short hint that
points the person fixing the bridge at the right place. Every expectation kind
:data:`.expectations.CHECKS` judges has an entry here (a test holds them in step).
"""

from __future__ import annotations

from typing import Any, Callable

from .expectation_text import comparison, requirement, unit

#: kinds judged by equality, presence or a count to reach: the line says "expected", not "limit"
_EXPECTED = frozenset({"transcript_contains", "tool_called", "codec", "end_reason", "openai_session",
                       "barge_ins", "replies_after_last_utterance", "replies_after_last_utterance_min",
                       "dtmf_heard", "transferred_to", "heard_goodbye", "renewals_min"})

_Hint = str | Callable[[Any, Any], str]
#: why a REST hang-up reads as "never ended" here
_REST = "a hang-up over Twilio's REST API shows only with `callsim dial` + `callsim twilio-emulator`"


def _end_reason_hint(measured: Any, limit: Any) -> str:
    if measured == "closed_by_app":
        return "the bridge ended the call before the caller was done: check what makes it close the stream"
    if measured == "hangup":
        return ("the bridge never ended the call: it should close the stream when the conversation is over "
                f"({_REST})")
    return "check when and why the bridge closes Twilio's stream"


HINTS: dict[str, _Hint] = {
    "turn_latency_p95_ms": "the bridge answers late: check that it forwards the caller's audio to OpenAI at "
                           "once and plays OpenAI's audio as it arrives",
    "overhead_p95_ms": "the bridge's own share of the turn is high: look for buffering, batching or real-time "
                       "pacing of audio in the bridge",
    "barge_in_clear_max_ms": "send Twilio a clear as soon as input_audio_buffer.speech_started arrives",
    "talk_over_max_ms": "the assistant kept talking over the caller: clear Twilio's buffer on speech_started",
    "no_rejected_truncate": "never truncate past the audio OpenAI sent for the item: compute audio_end_ms "
                            "from what Twilio played",
    "truncate_error_max_ms": "compute audio_end_ms from the audio Twilio played (marks and the time since the "
                             "last one), not from what was sent",
    "transcript_contains": "the caller's audio did not reach OpenAI intact: check the audio format, sample "
                           "rate and dropped frames",
    "tool_called": "declare the tool in session.update and answer each function call with "
                   "function_call_output, then response.create",
    "codec": "μ-law passthrough must forward the bytes as they are, never re-encode them",
    "snr_min_db": "the caller's audio is distorted in the bridge: check resampling and the μ-law/PCM "
                  "conversion",
    "no_underruns": "Twilio's buffer ran dry mid-reply: forward OpenAI's audio as it arrives, without pacing, "
                    "dropping or holding back chunks",
    "underrun_max_ms": "Twilio's buffer ran dry mid-reply: forward OpenAI's audio as it arrives, without "
                       "pacing, dropping or holding back chunks",
    "end_reason": _end_reason_hint,
    "openai_closed_within_ms": "close the OpenAI WebSocket as soon as Twilio sends stop (an open session "
                               "keeps costing money)",
    "dead_air_max_ms": "when OpenAI fails or goes quiet, apologise to the caller or hang up; never leave a "
                       "silent line",
    "openai_session": "speak the GA dialect: no OpenAI-Beta header, session.type \"realtime\", "
                      "audio.input/output.format",
    "heard_min_ms": "the caller heard too little: check that every reply's audio reaches Twilio",
    "heard_max_ms": "the caller heard too much: the bridge did not stop the reply when it should have",
    "no_twilio_warnings": "the bridge sent messages Twilio would reject: see the report for the first one",
    "heard_goodbye": "end the call yourself after the goodbye, and only once the mark after its last audio "
                     f"has come back ({_REST})",
    "renewals_min": "renew the OpenAI session before its maximum duration: open the next one ahead of time, "
                    "configured the same and seeded with the conversation, and switch the call to it",
    "switch_gap_max_ms": "switch to a session already configured, between two caller frames; never close the "
                         "old one first and reconnect",
    "no_caller_audio_lost": "forward every caller frame: to the old session until the switch, to the new one "
                            "from it; hold frames while a session is set up instead of dropping them",
    "replies_after_last_utterance": "count the replies a silent caller hears: the answer, each re-prompt, the "
                                    "goodbye — re-prompt after a quiet spell, then say goodbye and hang up",
    "replies_after_last_utterance_min": "a silent caller must hear the answer, at least one re-prompt after a "
                                        "quiet spell, then a goodbye before the bridge hangs up",
    "dtmf_heard": "forward Twilio's dtmf events to the model as a conversation item naming the key",
    "transferred_to": "on transfer_call, let the phrase before it play, then update the call over Twilio's REST "
                      "API with <Dial><Number> (calls(sid).update(twiml=...))",
    "barge_ins": "the caller talked over the assistant a different number of times than the script "
                 "intends: check the replies' length and the script's timing",
}


def hint(name: str, measured: Any = None, limit: Any = None) -> str:
    """What to fix when expectation ``name`` fails ("" for a kind this module does not know)."""
    h = HINTS.get(name, "")
    return h(measured, limit) if callable(h) else h


def _amount(name: str, v: Any, tail: str = "") -> str:
    """``v`` with the unit :mod:`.expectation_text` gives ``name`` (and a console ``tail``), in the console's
    spelling: whole milliseconds, decibels to a tenth, counts as they are. A value of a kind measured in
    ms or dB that is no number reads as it is."""
    u = unit(name)
    timed = u.startswith("ms") or u == "dB"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        if timed:
            return str(v)
        text = str(v)
    else:
        text = f"{v:.0f}" if u.startswith("ms") else f"{v:.1f}" if u == "dB" else str(v) if u else f"{v:g}"
    return " ".join(x for x in (text, u, tail) if x)


def _quoted(values: Any) -> str:
    items = [values] if isinstance(values, str) else list(values or [])
    return ", ".join(f'"{s}"' for s in items)


#: console words after the unit, where the unit alone would not say what was counted
_MEASURED_TAIL = {"no_underruns": "of underruns", "no_caller_audio_lost": "lost"}
_LIMIT_TAIL = {"replies_after_last_utterance": "after the caller's last utterance",
               "replies_after_last_utterance_min": "after the caller's last utterance"}

#: kinds whose measured value is not an amount
_MEASURED_PHRASE: dict[str, Callable[[Any], str]] = {
    "transcript_contains": lambda v: f"the mock heard {_quoted(v)}" if v else "the mock recognised nothing",
    "tool_called": lambda v: "called " + (", ".join(v) if v else "no tool"),
    "codec": lambda v: "measured " + ("bit-exact" if v is True else "not bit-exact"),
    "dtmf_heard": lambda v: "measured " + (f"keys {v!r}" if v else "no key"),
    "heard_goodbye": lambda v: "measured " + (_amount("heard_goodbye", float(v)) if isinstance(v, (int, float))
                                              else f"end {v}"),
}
#: kinds whose setting is not an amount
_LIMIT_PHRASE: dict[str, Callable[[Any], str]] = {
    "transcript_contains": lambda v: f"expected {_quoted(v)}",
    "tool_called": lambda v: f"expected {v} called and answered",
    "codec": lambda v: "expected bit-exact",
    "dtmf_heard": lambda v: f"expected keys {v!r}",
    "transferred_to": lambda v: f"expected a transfer to {v}",
}


def show_measured(name: str, v: Any) -> str:
    """``v`` (a failure's ``measured``) as a phrase: ``measured 1040 ms``, ``the mock heard "…"``;
    "" when nothing was measured. Units are :func:`.expectation_text.unit`'s."""
    if v is None:
        return ""
    if name in _MEASURED_PHRASE:
        return _MEASURED_PHRASE[name](v)
    return f"measured {_amount(name, v, _MEASURED_TAIL.get(name, ''))}"


def show_limit(name: str, v: Any) -> str:
    """The setting ``v`` of expectation ``name`` as ``limit ≤ 1500 ms``, ``limit ≥ 30.0 dB``, ``expected …``:
    the comparison and unit are :mod:`.expectation_text`'s, "=" going without saying after "expected"."""
    if name in _LIMIT_PHRASE:
        return _LIMIT_PHRASE[name](v)
    word = "expected" if name in _EXPECTED else "limit"
    if (req := requirement(name)) is not None:
        return f"{word} {req}"  # a "no X" expectation: what it requires
    cmp = comparison(name)
    if word == "expected":  # a count (with its unit) or a value as it is
        cmp = "" if cmp == "=" else cmp
        shown = _amount(name, v, _LIMIT_TAIL.get(name, "")) if unit(name) else str(v)
    elif isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"limit {v}"
    else:
        cmp, shown = cmp or "≤", _amount(name, v)
    return " ".join(x for x in (word, cmp, shown) if x)
