"""The checks of how a call ends and lasts: the goodbye heard whole, session renewal, a silent
caller's re-prompts, keypresses, the transfer (issue 17's scenarios)."""

from __future__ import annotations

from typing import Any

from .expectation_kit import END_REASONS, REST_HANGUP, _Ctx, _Fail, _per_call, _r, _with_mock
from .measurements import CallMetrics, RenewalMetrics

def _goodbye_one(limit: bool, c: CallMetrics, ctx: _Ctx) -> _Fail | None:
    w = ctx.where(c)
    if c.end_reason != "closed_by_app":
        how = END_REASONS.get(c.end_reason or "", c.end_reason or "the call did not end")
        return _Fail(c, f"no goodbye: the bridge never ended the call{w} ({how}) — end it yourself after the "
                        f"goodbye (an end_call tool), once its audio has played; {REST_HANGUP}", c.end_reason, 2.0)
    if c.unheard_at_end_ms > GOODBYE_SLACK_MS:
        return _Fail(c, f"goodbye cut off: the bridge ended the call with {c.unheard_at_end_ms:.0f} ms of its last "
                        f"reply still queued at Twilio, never heard{w} — wait for the mark after the last audio "
                        "before closing the stream or hanging up", _r(c.unheard_at_end_ms), c.unheard_at_end_ms)
    responses = (c.mock or {}).get("responses") or []
    final = next((r for r in reversed(responses) if not str(r.get("reply", "")).startswith("tool:")), None)
    if final is not None and final.get("status") == "incomplete" and _unsent(final):
        # closed while the mock was still thinking: nothing sent, and no audio yet to count (total 0)
        sent = final.get("audio_ms_sent") or 0.0
        return _Fail(c, f"goodbye cut off at the source: the OpenAI session was closed while the last reply was "
                        f"still {'being sent' if sent else 'being prepared'} ({sent:.0f} ms of it sent, response "
                        f"{final.get('reason') or 'incomplete'}){w} — after the tool's output and response.create, "
                        "wait for response.done and the mark after its audio before closing OpenAI",
                     _r(sent), 1.5)
    last = next((r for r in reversed(responses) if r.get("audio_ms_sent")), None)
    if last is not None and last.get("audio_ms_total") and last["audio_ms_sent"] + GOODBYE_SLACK_MS < last["audio_ms_total"]:
        return _Fail(c, f"goodbye cut off at the source: OpenAI had sent only {last['audio_ms_sent']:.0f} of the "
                        f"{last['audio_ms_total']:.0f} ms of the last reply when the session ended{w} — let "
                        "response.done arrive before closing OpenAI", _r(last["audio_ms_sent"]), 1.0)
    return None


def _unsent(r: dict[str, Any]) -> bool:
    """The response's audio was not all sent: none of it, or less than it had (past one frame's slack)."""
    total, sent = r.get("audio_ms_total") or 0.0, r.get("audio_ms_sent") or 0.0
    return not sent or sent + GOODBYE_SLACK_MS < total


#: what may go unheard of a goodbye: one 20 ms frame of playback granularity
GOODBYE_SLACK_MS = 20.0

_heard_goodbye = _per_call(_goodbye_one, lambda c: _r(c.unheard_at_end_ms), max,
                           lambda lim, m: f"the bridge ended the call after its last reply played whole "
                                          f"({m:.0f} ms unheard)")

def _ended_early(c: CallMetrics) -> str:
    """Why a call used fewer sessions than it should have, when its OpenAI session ended it."""
    codes = [e.get("code") for e in (c.mock or {}).get("errors") or [] if isinstance(e, dict)]
    if "session_expired" in codes:
        return (" — the OpenAI session hit its maximum duration (session_expired) and the call went with it: "
                "open the next session ahead of time and switch the call to it")
    return ""


def _renewals_one(limit: int, c: CallMetrics, ctx: _Ctx) -> _Fail | None:
    r = c.renewal
    n = r.renewals if r is not None else 0
    if n >= limit:
        return None
    return _Fail(c, f"{n} session renewal(s), expected ≥ {limit}{ctx.where(c)}: the call used "
                    f"{r.sessions if r else 0} OpenAI session(s){_ended_early(c)}", n, limit - n)


_renewals = _per_call(_renewals_one, lambda c: c.renewal.renewals if c.renewal else 0, min,
                      lambda lim, m: f"{m} session renewal(s) ≥ {lim}")


def _unmeasurable(r: RenewalMetrics) -> bool:
    """The renewal's audio could not be followed at all, though the call had sessions: the harness's limit
    (a bridge that converts the caller's audio, so no frame is recognised by content), not the bridge's fault.
    A session that received no caller frame while others did is the bridge's fault and stays a failure."""
    return r.sessions > 0 and r.caller_audio_lost_ms is None


def _why(r: RenewalMetrics) -> str:
    return r.note.removeprefix("not measured: ")


def _gap_one(limit: float, c: CallMetrics, ctx: _Ctx) -> _Fail | None:
    r = c.renewal
    w = ctx.where(c)
    if r is None or not r.renewals:
        return _Fail(c, f"no switch-over to measure{w}: the call used one OpenAI session{_ended_early(c)}", None, 1.0)
    if r.switch_gap_ms is None:
        return _Fail(c, f"the switch-over gap could not be measured{w}: {_why(r)}", None, 1.0,
                     unmeasured=_unmeasurable(r))
    if r.switch_gap_ms <= limit:
        return None
    sw = max((s for s in r.switches if s["gap_ms"] is not None), key=lambda s: s["gap_ms"])
    missing = (f": {sw['frames_missing']} caller frame(s) reached neither session" if sw["frames_missing"]
               else ": the new session got the caller's audio late")
    return _Fail(c, f"switch-over gap {r.switch_gap_ms:.0f} ms > {limit:.0f} ms at {sw['t_ms']} ms into the "
                    f"call{w}{missing} — open and configure the next session before switching, then move the "
                    "caller's frames to it between two frames (never close first, then reconnect)",
                 _r(r.switch_gap_ms), r.switch_gap_ms)


_switch_gap = _per_call(_gap_one, lambda c: _r(c.renewal.switch_gap_ms) if c.renewal else None,
                        lambda vs: max((v for v in vs if v is not None), default=None),
                        lambda lim, m: f"switch-over gap {m:.0f} ms ≤ {lim:.0f} ms")


def _lost_one(limit: bool, c: CallMetrics, ctx: _Ctx) -> _Fail | None:
    r = c.renewal
    w = ctx.where(c)
    if r is None or r.caller_audio_lost_ms is None:
        return _Fail(c, f"caller audio lost could not be measured{w}: {_why(r) if r else 'no mock session'}",
                     None, 1.0, unmeasured=r is not None and _unmeasurable(r))
    if r.caller_audio_lost_ms == 0:
        return None
    return _Fail(c, f"{r.caller_audio_lost_ms:.0f} ms of the caller's audio reached no OpenAI session{w} — "
                    "keep forwarding every caller frame (to the old session until the switch, to the new one "
                    "from it); hold frames while a session is being set up rather than dropping them",
                 _r(r.caller_audio_lost_ms), r.caller_audio_lost_ms)


_no_lost = _per_call(_lost_one, lambda c: _r(c.renewal.caller_audio_lost_ms) if c.renewal else None,
                     lambda vs: max((v for v in vs if v is not None), default=None),
                     lambda lim, m: "no caller audio lost (0 ms)")
def _replies_one(limit: int, c: CallMetrics, ctx: _Ctx) -> _Fail | None:
    n = c.replies_after_last_utterance
    if n == limit:
        return None
    if n < limit:
        hint = (" — a silent caller was left in dead air: re-prompt after a quiet spell (the bridge's own timer "
                "from the mark of its last audio), then say goodbye and hang up") if n <= 1 else \
               " — fewer re-prompts than set, or the call ended before the goodbye"
    else:
        hint = " — more replies than the script intends: re-prompts too soon, or too many before the goodbye"
    return _Fail(c, f"the caller heard {n} reply(ies) after its last utterance, expected {limit}{ctx.where(c)}"
                    f"{hint}", n, abs(n - limit))


_replies_after = _per_call(_replies_one, lambda c: c.replies_after_last_utterance, lambda vs: vs[0],
                           lambda lim, m: f"{lim} reply(ies) heard after the caller's last utterance")


def _replies_min_one(limit: int, c: CallMetrics, ctx: _Ctx) -> _Fail | None:
    n = c.replies_after_last_utterance
    if n >= limit:
        return None
    hint = (" — a silent caller was left in dead air: re-prompt after a quiet spell (the bridge's own timer "
            "from the mark of its last audio), then say goodbye and hang up") if n <= 1 else \
           " — no re-prompt before the goodbye, or the call ended before it"
    return _Fail(c, f"the caller heard {n} reply(ies) after its last utterance, expected at least {limit}"
                    f"{ctx.where(c)}{hint}", n, limit - n)


_replies_after_min = _per_call(_replies_min_one, lambda c: c.replies_after_last_utterance, min,
                               lambda lim, m: f"{m} reply(ies) heard after the caller's last utterance ≥ {lim}")


def _dtmf_one(limit: str, c: CallMetrics, ctx: _Ctx) -> _Fail | None:
    keys = "".join((c.mock or {}).get("dtmf") or [])
    if keys == limit:
        return None
    if not keys:
        early = "".join((c.mock or {}).get("dtmf_before_keypress") or [])
        seen = (f"; the only key named, {early!r}, came before the caller pressed anything (a prompt, not "
                "the keypress)") if early else ""
        return _Fail(c, f"the model was never told of a keypress{ctx.where(c)} (expected {limit!r}){seen} — "
                        "forward Twilio's dtmf events to OpenAI as a conversation item naming the key "
                        "(e.g. user text \"The caller pressed 1\")", keys, 2)
    return _Fail(c, f"the model was told of keys {keys!r}, expected {limit!r}{ctx.where(c)} — forward every "
                    "dtmf event once, in order", keys, 1)


_dtmf_heard = _with_mock(_dtmf_one, lambda c: "".join((c.mock or {}).get("dtmf") or []), lambda vs: vs[0],
                         lambda lim, m: f"the model was told of keys {lim!r}")

def _transfer_one(limit: str, c: CallMetrics, ctx: _Ctx) -> _Fail | None:
    if c.twilio_calls is None and c.twilio_records_error is not None:
        return _Fail(c, f"the transfer could not be confirmed{ctx.where(c)}: Twilio's records of the call could "
                        f"not be read ({c.twilio_records_error}) — check the account's credentials and the API "
                        "URL, then dial again", None, 2)
    dialled = [x for x in c.twilio_calls or [] if x.get("direction") == "outbound-dial"]
    if any(x.get("to") == limit for x in dialled):
        return None
    w = ctx.where(c)
    if not dialled:
        return _Fail(c, f"the call was never transferred{w}: Twilio's records hold no call dialled from it — once "
                        "the pre-transfer phrase has played, redirect the live call over the REST API "
                        f"(calls(CallSid).update(twiml=<Dial><Number>{limit}</Number></Dial>))", None, 2)
    to = ", ".join(str(x.get("to")) for x in dialled)
    return _Fail(c, f"the call was transferred to {to}, expected {limit}{w} — the destination must come from the "
                    "bridge's settings, never from the model", to, 1)


def _dialled(c: CallMetrics) -> str | None:
    """The number Twilio dialled first from the call (a child call, direction outbound-dial)."""
    return next((x.get("to") for x in c.twilio_calls or [] if x.get("direction") == "outbound-dial"), None)


_transferred = _per_call(_transfer_one, _dialled, lambda vs: next(iter(vs), None),
                         lambda lim, m: f"Twilio dialled {lim} from the call (a child call, direction outbound-dial)")
