"""Judge measured calls against a scenario's ``[expect]``: pass, fail (saying what to fix), or skip.

:func:`evaluate` gives one :class:`~.measurements.ExpectationResult` per set
expectation, over all the calls of a scenario: ``measured`` is the worst value
(for the p95 ones, the p95 of every turn pooled), ``limit`` the setting, and
``failures`` lists each call that violates it with its own message.
:func:`judge` then gives every call its status and its own view of each
expectation.

Messages are written for the person who has to fix the bridge: what was
measured, the limit, which call (when there are several), and what usually
causes it. Calls that ended in an error are not judged (they are reported as
errors). Expectations that need the mock OpenAI server are skipped, with the
reason, when it is not in the loop; so is one the harness could not measure on
any call (its failures all ``unmeasured``: e.g. the renewal's frames for a bridge
that converts the audio), since a verdict must not depend on how the bridge is built.
"""

from __future__ import annotations

from typing import Any, Callable

from ..scenario import Expectations
from .expectation_kit import (  # noqa: F401 (SKIP_NO_MOCK and the others are read from here too)
    BETA_REFUSED,
    END_REASONS,
    NO_BARGE_IN,
    NO_MOCK_SESSION,
    REST_HANGUP,
    SKIP_NO_MOCK,
    SKIP_NO_TWILIO,
    Check,
    _Ctx,
    _Fail,
    _ms,
    _p95,
    _per_call,
    _r,
    _with_mock,
)
from .expectations_calls import (
    _dtmf_heard,
    _heard_goodbye,
    _no_lost,
    _renewals,
    _replies_after,
    _replies_after_min,
    _switch_gap,
    _transferred,
)
from .measurements import CallMetrics, ExpectationResult

# =================================================================== checks
# each: (limit, calls, ctx) -> (measured, failures, message when it holds)



def _p95_check(attr: str, label: str, advice: str) -> Check:
    def check(limit: float, calls: list[CallMetrics], ctx: _Ctx) -> tuple[Any, list[_Fail], str]:
        fails: list[_Fail] = []
        values = []
        worst: tuple[float, CallMetrics, int] | None = None
        for c in calls:
            if not c.turns:
                fails.append(_Fail(c, f"{label}: the caller finished no turn in silence{ctx.where(c)} "
                                      "(every utterance was a barge-in, or none was said), so nothing to measure"))
            for t in c.turns:
                if t.latency_ms is None:
                    fails.append(_Fail(c, f"no reply to turn {t.index + 1}{ctx.where(c)}: the caller heard no "
                                          "assistant audio after it stopped speaking — check that the bridge "
                                          "forwards the caller's audio to OpenAI and OpenAI's audio to Twilio"))
                    continue
                v = getattr(t, attr)
                if v is None:
                    fails.append(_Fail(c, f"{label}: turn {t.index + 1}{ctx.where(c)} could not be matched to a "
                                          "turn and response of the mock OpenAI server, so the bridge's share is "
                                          "unknown"))
                    continue
                values.append(v)
                if worst is None or v > worst[0]:
                    worst = (v, c, t.index)
        if not values:
            return None, fails, ""
        p95 = _p95(values)
        assert worst is not None
        if p95 > limit:
            head = f"{label} p95 {p95:.0f} ms > {limit:.0f} ms"
            for c in calls:
                over = [t for t in c.turns if getattr(t, attr) is not None and getattr(t, attr) > limit]
                if over:
                    t = max(over, key=lambda t: getattr(t, attr))
                    v = getattr(t, attr)
                    fails.append(_Fail(c, f"{head}: turn {t.index + 1} took {v:.0f} ms{ctx.where(c)}{advice}",
                                       _r(v), v))
        return _r(p95), fails, f"{label} p95 {p95:.0f} ms ≤ {limit:.0f} ms over {len(values)} turn(s)"
    return check


_latency = _p95_check("latency_ms", "turn latency", "")
_overhead = _p95_check(
    "overhead_ms", "bridge overhead",
    " — this is turn latency minus the mock's VAD wait and think time, i.e. the bridge's and the "
    "transport's share: look for buffering, batching or real-time pacing of audio in the bridge")


def _barge_check(label: str, measure: Callable[[Any], float | None],
                 missing: str, over: Callable[[Any, float, float, str], str]) -> Check:
    def check(limit: float, calls: list[CallMetrics], ctx: _Ctx) -> tuple[Any, list[_Fail], str]:
        fails: list[_Fail] = []
        values: list[float] = []
        worst_missing = False
        for c in calls:
            if not c.barge_ins:
                fails.append(_Fail(c, f"{label}: " + NO_BARGE_IN.format(where=ctx.where(c), why=_no_barge_why(c))))
                continue
            bad: _Fail | None = None
            for b in c.barge_ins:
                v = measure(b)
                if v is None:
                    worst_missing = True
                    bad = bad or _Fail(c, missing.format(where=ctx.where(c)))
                    continue
                values.append(v)
                if v > limit and (bad is None or v > bad.severity):
                    bad = _Fail(c, over(b, v, limit, ctx.where(c)), _r(v), v)
            if bad:
                fails.append(bad)
        measured = None if worst_missing or not values else _r(max(values))
        return measured, fails, f"{label} ≤ {limit:.0f} ms (worst {_ms(max(values) if values else None)})"
    return check


def _no_barge_why(c: CallMetrics) -> str:
    if c.heard_ms == 0:
        return "the caller heard no assistant audio at all in this call"
    return (f"the assistant's audio ({c.heard_ms:.0f} ms in all) had stopped before the caller spoke: the "
            "reply was shorter than the script expected, or the bridge ended it")


_clear = _barge_check(
    "barge-in clear", lambda b: b.clear_ms,
    "barge-in clear: no clear received after the caller started talking over the assistant{where} — "
    "the bridge must send Twilio a clear on input_audio_buffer.speech_started",
    lambda b, v, lim, w: (f"barge-in clear {v:.0f} ms > {lim:.0f} ms: the caller talked over the assistant for "
                          f"{v:.0f} ms before the bridge sent clear{w} — send it as soon as "
                          "input_audio_buffer.speech_started arrives"))
_talk_over = _barge_check(
    "talk-over", lambda b: b.talk_over_ms, "",
    lambda b, v, lim, w: (f"talk-over {v:.0f} ms > {lim:.0f} ms: the assistant kept playing for {v:.0f} ms after "
                          f"the caller started talking{w} — clear Twilio's buffer on speech_started"))
_truncate_error = _barge_check(
    "truncate error", lambda b: b.truncate_error_ms,
    "truncate error: no truncate sent{where}: the caller talked over the assistant but the bridge never sent "
    "conversation.item.truncate — OpenAI will believe the caller heard the whole reply",
    lambda b, v, lim, w: (f"truncate error {v:.0f} ms > {lim:.0f} ms: the bridge told OpenAI the caller heard "
                          f"{b.truncate_audio_end_ms:.0f} ms but the caller heard {b.heard_ms:.0f} ms{w} — "
                          + (b.truncate_cause or "compute audio_end_ms from the audio Twilio played (marks and "
                             "the time since the last one), not from what was sent")))


def _truncate_error_check(limit: float, calls: list[CallMetrics], ctx: _Ctx) -> tuple[Any, list[_Fail], str]:
    missing = [c for c in calls if c.mock is None]
    rest = [c for c in calls if c.mock is not None]
    measured, fails, msg = _truncate_error(limit, rest, ctx) if rest else (None, [], "")
    return measured, fails + [_Fail(c, NO_MOCK_SESSION.format(where=ctx.where(c))) for c in missing], msg


_REJECTION_HINT = {
    "audio_too_short": "audio_end_ms is beyond the audio OpenAI has sent for the item — never truncate past "
                       "what was received; compute audio_end_ms from what was played",
    "item_not_found": "the item id is unknown to OpenAI — truncate the assistant item whose audio was playing",
    "unsupported_content_type": "the item is not an assistant audio message",
}


def _no_rejected_truncate(limit: bool, calls: list[CallMetrics], ctx: _Ctx) -> tuple[Any, list[_Fail], str]:
    fails: list[_Fail] = []
    n_rejected = n_sent = 0
    for c in calls:
        if c.mock is None:
            fails.append(_Fail(c, NO_MOCK_SESSION.format(where=ctx.where(c))))
            continue
        trs = c.mock.get("truncates") or []
        n_sent += len(trs)
        bad = [t for t in trs if not t.get("accepted")]
        n_rejected += len(bad)
        if bad:
            t = bad[0]
            err = t.get("error") or "rejected"
            detail = f"audio_end_ms {t.get('audio_end_ms')} ms"
            if t.get("audio_sent_ms") is not None:
                detail += f", {t['audio_sent_ms']:.0f} ms of audio sent for the item"
            fails.append(_Fail(c, f"OpenAI rejected {len(bad)} conversation.item.truncate{ctx.where(c)}: "
                                  f"{err} ({detail}) — {_REJECTION_HINT.get(err, 'see the mock log')}",
                               len(bad), len(bad)))
    return n_rejected, fails, f"no truncate rejected ({n_sent} sent)"


def _transcript_one(limit: tuple[str, ...], c: CallMetrics, ctx: _Ctx) -> _Fail | None:
    said = " | ".join(c.transcript)
    missing = [s for s in limit if s.lower() not in said.lower()]
    if not missing:
        return None
    heard = f'it heard: "{said}"' if said else "it recognised nothing the caller said"
    quoted = ", ".join(f'"{s}"' for s in missing)
    return _Fail(c, f"transcript: the mock never heard {quoted}{ctx.where(c)}; {heard} — the caller's audio did "
                    "not reach OpenAI intact (audio format, sample rate, or dropped frames?)",
                 c.transcript, len(missing))


_transcript = _with_mock(_transcript_one, lambda c: list(c.transcript), lambda vs: vs[0],
                         lambda lim, m: "the mock heard " + ", ".join(f'"{s}"' for s in lim))


def _tool_one(limit: str, c: CallMetrics, ctx: _Ctx) -> _Fail | None:
    # the bridge's own tool for the same purpose (mock/tool_roles.py) counts as the scripted one
    limit = next((name for name, role in c.tool_stand_ins.items() if role == limit and limit not in c.tools_called),
                 limit)
    if limit not in c.tools_called:
        called = ", ".join(c.tools_called) or "none"
        return _Fail(c, f"tool {limit} was never called{ctx.where(c)} (tools called: {called}) — the mock calls it "
                        "when it recognises the caller's question: did the caller's audio reach it intact?",
                     list(c.tools_called), 2)
    if limit not in c.tools_completed:
        return _Fail(c, f"the model called {limit} but the bridge never answered it{ctx.where(c)}: no response "
                        "followed the function call — send conversation.item.create (function_call_output), "
                        "then response.create", list(c.tools_called), 1)
    return None


_tool = _with_mock(_tool_one, lambda c: list(c.tools_called), lambda vs: vs[0],
                   lambda lim, m: f"tool {lim} called and answered")


def _codec_one(limit: str, c: CallMetrics, ctx: _Ctx) -> _Fail | None:
    cd = c.codec
    if not cd.checked:
        return _Fail(c, f"codec: nothing was compared{ctx.where(c)}: {cd.note or 'no echo check ran'}", None)
    if not cd.bit_exact:
        snr = "no echo heard" if cd.snr_db is None else f"best SNR {cd.snr_db:.1f} dB"
        return _Fail(c, f"codec: the caller's audio did not come back bit-exact ({snr}){ctx.where(c)} — "
                        "μ-law passthrough must not re-encode", False, -(cd.snr_db or -1e9))
    return None


_codec = _with_mock(_codec_one, lambda c: c.codec.bit_exact, all,
                    lambda lim, m: "the caller heard its own audio back bit-exact")


def _snr_one(limit: float, c: CallMetrics, ctx: _Ctx) -> _Fail | None:
    cd = c.codec
    if not cd.checked:
        return _Fail(c, f"codec: nothing was compared{ctx.where(c)}: {cd.note or 'no echo check ran'}", None)
    if cd.snr_db is None:
        return _Fail(c, f"codec: no echo heard to measure the SNR{ctx.where(c)}", None)
    if cd.snr_db < limit:
        return _Fail(c, f"codec: echo SNR {cd.snr_db:.1f} dB < {limit:.0f} dB{ctx.where(c)} — the caller's audio is "
                        "distorted on its way through the bridge (check resampling and the μ-law/PCM conversion)",
                     cd.snr_db, limit - cd.snr_db)
    return None


_snr = _with_mock(_snr_one, lambda c: c.codec.snr_db, min,
                  lambda lim, m: f"echo SNR {m:.1f} dB ≥ {lim:.0f} dB")


def _closed(limit: float, calls: list[CallMetrics], ctx: _Ctx) -> tuple[Any, list[_Fail], str]:
    """The OpenAI session closed within ``limit`` ms of the caller's ``stop`` (or the bridge ending the
    stream). OpenAI closing first is no leak: it passes, and the message says so with the close code."""
    fails: list[_Fail] = []
    values: list[float] = []
    first: list[str] = []
    for c in calls:
        if c.mock is None:
            fails.append(_Fail(c, NO_MOCK_SESSION.format(where=ctx.where(c))))
            continue
        close = c.mock.get("close")
        v = c.openai_closed_after_hangup_ms
        if not close:
            fails.append(_Fail(c, f"OpenAI session still open after the caller hung up{ctx.where(c)} — the bridge "
                                  "must close the OpenAI WebSocket when Twilio sends stop or the call's socket "
                                  "closes (an open session keeps costing money)", None, float("inf")))
        elif v is None:
            fails.append(_Fail(c, f"OpenAI session close: the call has no end to measure from{ctx.where(c)}"))
        elif v < 0 and close.get("by") == "server":
            values.append(v)
            first.append(f"OpenAI closed the session first, {-v:.0f} ms before the call ended{ctx.where(c)} "
                         f"(code {close.get('code')}{', ' + str(close['reason']) if close.get('reason') else ''})")
        elif v > limit:
            fails.append(_Fail(c, f"OpenAI session closed {v:.0f} ms after the caller hung up > {limit:.0f} ms"
                                  f"{ctx.where(c)} — close the OpenAI WebSocket as soon as Twilio sends stop",
                               _r(v), v))
        else:
            values.append(max(v, 0.0))
    if fails:
        return max(fails, key=lambda f: f.severity).measured, fails, ""
    m = _r(max(values)) if values else None
    msg = "; ".join(first) if first and len(first) == len(values) else (
        f"OpenAI session closed {max(0.0, m or 0):.0f} ms after the hang-up ≤ {limit:.0f} ms"
        + (f"; {first[0]}" if first else ""))
    return m, fails, msg


def _refused(c: CallMetrics) -> bool:
    """OpenAI refused the bridge's session (the retired beta dialect: close 4000)."""
    close = (c.mock or {}).get("close") or {}
    return close.get("by") == "server" and close.get("code") == 4000


def _session(limit: bool, calls: list[CallMetrics], ctx: _Ctx) -> tuple[Any, list[_Fail], str]:
    fails = [_Fail(c, BETA_REFUSED.format(where=ctx.where(c)), "refused", 2) for c in calls if _refused(c)]
    fails += [_Fail(c, NO_MOCK_SESSION.format(where=ctx.where(c)), None, 1) for c in calls if c.mock is None]
    return ("refused" if fails else "accepted"), fails, "OpenAI accepted the bridge's session"


def _underrun_one(limit: float, c: CallMetrics, ctx: _Ctx) -> _Fail | None:
    if c.underrun_ms <= limit:
        return None
    head = (f"underruns: {c.underrun_ms:.0f} ms of silence inserted inside assistant replies" if limit == 0 else
            f"underruns {c.underrun_ms:.0f} ms > {limit:.0f} ms")
    return _Fail(c, f"{head}{ctx.where(c)} — Twilio's buffer ran dry mid-reply: forward OpenAI's audio as it "
                    "arrives instead of pacing it, and don't drop or hold back chunks", _r(c.underrun_ms), c.underrun_ms)


_underruns = _per_call(_underrun_one, lambda c: _r(c.underrun_ms), max,
                       lambda lim, m: f"underruns {m:.0f} ms ≤ {lim:.0f} ms")


def _no_underruns(limit: bool, calls: list[CallMetrics], ctx: _Ctx) -> tuple[Any, list[_Fail], str]:
    m, fails, _ = _underruns(0.0, calls, ctx)
    return m, fails, "no underruns: every reply played without gaps"


def _end_one(limit: str, c: CallMetrics, ctx: _Ctx) -> _Fail | None:
    if c.end_reason == limit:
        return None
    got = END_REASONS.get(c.end_reason or "", c.end_reason or "unknown")
    want = END_REASONS.get(limit, limit)
    hint = ""
    if c.end_reason == "closed_by_app" and limit == "hangup":
        hint = " — the bridge ended the call before the caller was done"
    elif c.end_reason != "closed_by_app" and limit == "closed_by_app":
        hint = (" — the bridge never ended the call; the caller hung up at the end of its script"
                if c.end_reason == "hangup" else " — the bridge never ended the call") + f" ({REST_HANGUP})"
    return _Fail(c, f"the call ended with {c.end_reason} ({got}), expected {limit} ({want}){ctx.where(c)}{hint}",
                 c.end_reason)


_end_reason = _per_call(_end_one, lambda c: c.end_reason,
                        lambda vs: next((v for v in vs if v is not None), None), lambda lim, m: f"ended with {lim}")


def _dead_air_one(limit: float, c: CallMetrics, ctx: _Ctx) -> _Fail | None:
    if c.dead_air_ms <= limit:
        return None
    return _Fail(c, f"dead air: the caller waited {c.dead_air_ms:.0f} ms in silence after its last utterance"
                    f"{ctx.where(c)} > {limit:.0f} ms — when OpenAI fails or goes quiet, tell the caller (a short "
                    "apology) or end the call; never leave them on a silent line", _r(c.dead_air_ms),
                 c.dead_air_ms - limit)


_dead_air = _per_call(_dead_air_one, lambda c: _r(c.dead_air_ms), max,
                      lambda lim, m: f"longest silence after the last utterance {m:.0f} ms ≤ {lim:.0f} ms")


def _heard_min_one(limit: float, c: CallMetrics, ctx: _Ctx) -> _Fail | None:
    if c.heard_ms >= limit:
        return None
    return _Fail(c, f"the caller heard {c.heard_ms:.0f} ms of assistant audio, expected at least {limit:.0f} ms"
                    f"{ctx.where(c)}", _r(c.heard_ms), limit - c.heard_ms)


def _heard_max_one(limit: float, c: CallMetrics, ctx: _Ctx) -> _Fail | None:
    if c.heard_ms <= limit:
        return None
    return _Fail(c, f"the caller heard {c.heard_ms:.0f} ms of assistant audio, expected at most {limit:.0f} ms"
                    f"{ctx.where(c)}", _r(c.heard_ms), c.heard_ms - limit)


_heard_min = _per_call(_heard_min_one, lambda c: _r(c.heard_ms), min,
                       lambda lim, m: f"heard {m:.0f} ms ≥ {lim:.0f} ms")
_heard_max = _per_call(_heard_max_one, lambda c: _r(c.heard_ms), max,
                       lambda lim, m: f"heard {m:.0f} ms ≤ {lim:.0f} ms")


def _warnings_one(limit: bool, c: CallMetrics, ctx: _Ctx) -> _Fail | None:
    n = sum(c.warnings.values())
    if not n:
        return None
    codes = ", ".join(f"{code} ×{k}" for code, k in c.warnings.items())
    first = f"; first: {c.warning_reasons[0]}" if c.warning_reasons else ""
    return _Fail(c, f"the bridge sent {n} message(s) Twilio would reject{ctx.where(c)}: {codes}{first}", n, n)


_no_warnings = _per_call(_warnings_one, lambda c: sum(c.warnings.values()), max,
                         lambda lim, m: "no Twilio warnings")


def _barge_ins_one(limit: int, c: CallMetrics, ctx: _Ctx) -> _Fail | None:
    n = len(c.barge_ins)
    if n == limit:
        return None
    hint = (" — the caller never talked over assistant audio (was the assistant silent when it spoke?)" if n < limit
            else " — the caller spoke while assistant audio was still playing more often than the script intends")
    return _Fail(c, f"expected {limit} barge-in(s), detected {n}{ctx.where(c)}{hint}", n, abs(n - limit))


_barge_ins = _per_call(_barge_ins_one, lambda c: len(c.barge_ins), lambda vs: vs[0],
                       lambda lim, m: f"{lim} barge-in(s) detected")

CHECKS: dict[str, Check] = {
    "turn_latency_p95_ms": _latency,
    "overhead_p95_ms": _overhead,
    "barge_in_clear_max_ms": _clear,
    "talk_over_max_ms": _talk_over,
    "no_rejected_truncate": _no_rejected_truncate,
    "truncate_error_max_ms": _truncate_error_check,
    "transcript_contains": _transcript,
    "tool_called": _tool,
    "codec": _codec,
    "snr_min_db": _snr,
    "no_underruns": _no_underruns,
    "underrun_max_ms": _underruns,
    "end_reason": _end_reason,
    "openai_closed_within_ms": _closed,
    "dead_air_max_ms": _dead_air,
    "openai_session": _session,
    "heard_min_ms": _heard_min,
    "heard_max_ms": _heard_max,
    "no_twilio_warnings": _no_warnings,
    "barge_ins": _barge_ins,
    "heard_goodbye": _heard_goodbye,
    "renewals_min": _renewals,
    "switch_gap_max_ms": _switch_gap,
    "no_caller_audio_lost": _no_lost,
    "replies_after_last_utterance": _replies_after,
    "replies_after_last_utterance_min": _replies_after_min,
    "dtmf_heard": _dtmf_heard,
    "transferred_to": _transferred,
}


# ===================================================================== API


def evaluate(expect: Expectations, calls: list[CallMetrics], *, mock_in_loop: bool,
             implicit_session_check: bool = False) -> list[ExpectationResult]:
    """One result per expectation set in ``expect``, judged over ``calls`` (one scenario's calls;
    their ``call_index`` must be distinct). A boolean expectation set to ``false`` is not checked.

    ``implicit_session_check`` (the mock in the loop) adds ``openai_session`` first: the session OpenAI
    refused (the beta dialect) fails the call with that reason, and the call's other expectations are
    not judged — their failures would only be echoes of it."""
    judged = [c for c in calls if c.status != "error" and c.error is None]
    ctx = _Ctx(calls)
    out: list[ExpectationResult] = []
    items = expect.items()
    if implicit_session_check:
        items = [("openai_session", True), *items]
    all_judged = judged
    for name, limit in items:
        judged = all_judged if name == "openai_session" else [c for c in all_judged if not _refused(c)]
        if limit is False:
            continue
        limit_json = list(limit) if isinstance(limit, tuple) else limit
        if name in Expectations.NEEDS_MOCK and not mock_in_loop:
            out.append(ExpectationResult(name, "skipped", SKIP_NO_MOCK, None, limit_json))
            continue
        if name in Expectations.NEEDS_TWILIO and all(c.twilio_calls is None and c.twilio_records_error is None
                                                     for c in all_judged):
            out.append(ExpectationResult(name, "skipped", SKIP_NO_TWILIO, None, limit_json))
            continue
        if not judged:
            why = "OpenAI refused the session" if all_judged else "every call ended in an error"
            out.append(ExpectationResult(name, "skipped", f"not judged: {why}", None, limit_json))
            continue
        check = CHECKS.get(name)
        if check is None:  # a new Expectations field without a check must not pass silently
            out.append(ExpectationResult(name, "failed", f"{name}: no check implemented for this expectation",
                                         None, limit_json,
                                         [{"call_index": c.call_index, "message": "no check implemented",
                                           "measured": None} for c in judged]))
            continue
        measured, fails, ok_message = check(limit, judged, ctx)
        if not fails:
            out.append(ExpectationResult(name, "passed", ok_message, measured, limit_json))
            continue
        if all(f.unmeasured for f in fails):
            worst = max(fails, key=lambda f: f.severity)
            out.append(ExpectationResult(name, "skipped", worst.message, None, limit_json))
            continue
        worst = max(fails, key=lambda f: (not f.unmeasured, f.severity))
        n_calls = len({id(f.call) for f in fails})
        message = worst.message + (f" (and {n_calls - 1} more call(s))" if n_calls > 1 else "")
        failures = []
        for c in judged:
            mine = [f for f in fails if f.call is c]
            if mine:
                w = max(mine, key=lambda f: f.severity)
                failures.append({"call_index": c.call_index, "message": w.message, "measured": w.measured})
        out.append(ExpectationResult(name, "failed", message, measured, limit_json, failures))
    return out


def judge(calls: list[CallMetrics], results: list[ExpectationResult]) -> None:
    """Set each call's ``status`` (``error`` if it errored, ``failed`` if it violates any expectation,
    else ``passed``) and its ``expectations``: each result as seen from that call."""
    for c in calls:
        errored = c.status == "error" or c.error is not None
        mine: list[dict[str, Any]] = []
        failed = False
        for r in results:
            d: dict[str, Any] = {"name": r.name, "limit": r.limit}
            f = next((f for f in r.failures if f["call_index"] == c.call_index), None)
            if r.status == "skipped" or errored or (r.name != "openai_session" and _refused(c)):
                d.update(status="skipped", message=r.message if r.status == "skipped" else
                         "not judged: the call ended in an error" if errored else
                         "not judged: OpenAI refused the session", measured=None)
            elif f is not None:
                d.update(status="failed", message=f["message"], measured=f["measured"])
                failed = True
            else:
                d.update(status="passed", measured=r.measured if r.status == "passed" else None,
                         message=r.message if r.status == "passed" else f"this call met it; overall: {r.message}")
            mine.append(d)
        c.expectations = mine
        c.status = "error" if errored else ("failed" if failed else "passed")
