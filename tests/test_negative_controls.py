"""The harness must fail bad bridges, not only pass good ones.

Each broken bridge (tests/broken_bridges.py) runs the scenario that should
catch it, through the same runner as ``callsim demo``; the matching expectation
must fail, with a message that says what is wrong and what to do.
"""

from __future__ import annotations

from callsim.simulator.runner import run_embedded
from callsim.simulator.scenario import find_scenario


def _failed(run, name):
    return next((e for e in run.expectations if e.name == name and e.status == "failed"), None)


async def test_good_bridge_passes_the_same_scenarios():
    """Control of the controls: our bridge passes what the broken ones fail."""
    for name in ("barge_in", "hangup_mid_reply", "silent_caller", "dtmf_menu", "goodbye"):
        run = await run_embedded(find_scenario(name))
        assert run.passed, [(e.name, e.message) for e in run.expectations if e.status != "passed"]


async def test_no_clear_on_barge_in_is_caught():
    run = await run_embedded(find_scenario("barge_in"), hook="tests.broken_bridges:no_clear")
    assert not run.passed
    e = _failed(run, "barge_in_clear_max_ms")
    assert e is not None and "clear" in e.message.lower()
    assert run.calls[0].metrics.status == "failed"
    # the truncate error names the missing clear, and counts only the interrupted reply: the next
    # reply played straight after it (nothing cleared the queue) belongs to the next item
    t = _failed(run, "truncate_error_max_ms")
    assert t is not None and "sent no clear" in t.message
    (b,) = run.calls[0].metrics.barge_ins
    assert b.heard_ms <= 11_200  # the long reply's own length, not + the 2.4 s reply after it


async def test_truncate_from_bytes_sent_is_caught():
    run = await run_embedded(find_scenario("barge_in"), hook="tests.broken_bridges:bytes_sent_truncate")
    assert not run.passed
    e = _failed(run, "truncate_error_max_ms")
    assert e is not None and "heard" in e.message
    assert e.measured > 1000  # it claimed the whole fast-streamed reply was heard


async def test_openai_session_left_open_is_caught():
    run = await run_embedded(find_scenario("hangup_mid_reply"), hook="tests.broken_bridges:leaky_openai")
    assert not run.passed
    e = _failed(run, "openai_closed_within_ms")
    assert e is not None and e.message.startswith("OpenAI session still open after the caller hung up")
    assert e.measured is None  # no close to measure: still open when the harness stopped waiting


async def test_audio_in_the_wrong_format_is_caught():
    run = await run_embedded(find_scenario("codec_transcode"), hook="tests.broken_bridges:wrong_format")
    assert not run.passed
    e = _failed(run, "snr_min_db")
    assert e is not None and "dB" in e.message


async def test_long_call_passes_with_renewal_and_fails_without():
    """Our bridge renews twice unnoticed; with renewal off, the call dies at the first session_expired."""
    good = await run_embedded(find_scenario("long_call"))
    assert good.passed, [(e.name, e.message) for e in good.expectations if e.status != "passed"]
    r = good.calls[0].metrics.renewal
    assert r is not None and r.renewals >= 2 and r.caller_audio_lost_ms == 0 and r.switch_gap_ms <= 20
    # each turn is attached to the session that answered it: the merged records hold every session's turns
    # (the two caller turns are answered by different sessions: merging only the first loses one)
    assert len(good.calls[0].mock_snapshot["turns"]) == 2

    bad = await run_embedded(find_scenario("long_call"), hook="tests.broken_bridges:no_renewal")
    assert not bad.passed
    e = _failed(bad, "renewals_min")
    assert e is not None and "session_expired" in e.message and e.measured == 0
    assert _failed(bad, "end_reason") is not None  # the bridge hung up (after its apology), not the caller
    # the mock ended the session at its 10 s limit (1001), the apology, and the bridge hung up: sooner
    # than the good call, whose caller talks on across the renewals
    assert bad.calls[0].mock_snapshot["close"]["code"] == 1001
    assert bad.calls[0].metrics.duration_ms < good.calls[0].metrics.duration_ms


async def test_renewal_by_close_then_open_is_caught():
    run = await run_embedded(find_scenario("long_call"), hook="tests.broken_bridges:close_then_open")
    assert not run.passed
    lost = _failed(run, "no_caller_audio_lost")
    assert lost is not None and "reached no OpenAI session" in lost.message
    gap = _failed(run, "switch_gap_max_ms")
    assert gap is not None and "caller frame(s) reached neither session" in gap.message and gap.measured >= 200
    assert _failed(run, "renewals_min") is None  # it did renew: only the switch-over is wrong


async def test_silent_caller_left_in_dead_air_is_caught():
    run = await run_embedded(find_scenario("silent_caller"), hook="tests.broken_bridges:no_reprompt")
    assert not run.passed
    e = _failed(run, "replies_after_last_utterance_min")
    assert e is not None and "dead air" in e.message and e.measured == 1  # only the answer, no re-prompt
    g = _failed(run, "heard_goodbye")
    assert g is not None and g.message.startswith("no goodbye")
    assert _failed(run, "end_reason") is not None and run.calls[0].metrics.end_reason == "hangup"


async def test_keypresses_kept_from_the_model_are_caught():
    run = await run_embedded(find_scenario("dtmf_menu"), hook="tests.broken_bridges:ignores_dtmf")
    assert not run.passed
    e = _failed(run, "dtmf_heard")
    assert e is not None and "never told of a keypress" in e.message
    assert _failed(run, "heard_min_ms") is not None  # and no answer to the key


async def test_goodbye_cut_off_is_caught():
    run = await run_embedded(find_scenario("goodbye"), hook="tests.broken_bridges:hasty_goodbye")
    assert not run.passed
    e = _failed(run, "heard_goodbye")
    assert e is not None and e.message.startswith("goodbye cut off") and e.measured > 500
    # the rest held: it was the bridge that ended the call, after the model's end_call
    assert run.calls[0].metrics.end_reason == "closed_by_app"
    assert _failed(run, "tool_called") is None
