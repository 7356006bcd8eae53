"""The sans-IO dialer: what each driver is told to do, and the messages a user reads."""

from __future__ import annotations

import random

import pytest
from callsim.simulator.caller.dialer import ABORTED, DialFailed, Dialer, OpenStream, PostWebhook, describe
from callsim.simulator.caller.script import Hangup, Pause
from callsim.simulator.caller.sids import make_sid
from callsim.simulator.caller.webhook import STREAM_USER_AGENT, WEBHOOK_USER_AGENT, CallParties, sign

SCRIPT = [Pause(100), Hangup()]
TOKEN = "tok"
TWIML = (b'<?xml version="1.0"?><Response><Say>Hello there</Say><Connect><Stream url="wss://app.test/media">'
         b'<Parameter name="a" value="from-twiml"/><Parameter name="b" value="twiml"/></Stream></Connect></Response>')


def test_a_stream_target_opens_at_once():
    d = Dialer("ws://app.test/media", SCRIPT, custom_parameters={"x": "1"}, rng=random.Random(1))
    step = d.start(5)
    assert isinstance(step, OpenStream) and step.url == "ws://app.test/media" and not step.tls
    assert step.preamble_s is None and step.headers == [(b"User-Agent", STREAM_USER_AGENT.encode())]
    assert d.result.core is step.core and d.result.stream_url == step.url and d.result.timings == {"placed_ns": 5}
    assert step.core.ident.custom_parameters == {"x": "1"}


def test_sids_come_from_the_rng_in_the_order_they_always_did():
    rng = random.Random(7)
    want = (make_sid("AC", rng), make_sid("CA", rng), make_sid("MZ", rng))
    step = Dialer("ws://app.test/", SCRIPT, rng=random.Random(7)).start(0)
    ident = step.core.ident
    assert (ident.account_sid, ident.call_sid, ident.stream_sid) == want


def test_a_bad_target_fails_with_what_to_use():
    d = Dialer("ftp://x", SCRIPT)
    step = d.start(0)
    assert step == DialFailed("target must be http(s):// (voice webhook) or ws(s):// (stream), not 'ftp://x'")
    assert d.result.error == step.error and d.result.core is None


def test_webhook_post_then_twiml_to_a_signed_stream():
    parties = CallParties.new(random.Random(3))
    d = Dialer("https://app.test/incoming", SCRIPT, auth_token=TOKEN, parties=parties,
               custom_parameters={"a": "mine"})
    post = d.start(1)
    assert isinstance(post, PostWebhook) and post.tls and post.signed
    assert post.form["CallSid"] == parties.call_sid
    assert post.headers["User-Agent"] == WEBHOOK_USER_AGENT
    assert post.headers["X-Twilio-Signature"] == sign(TOKEN, post.url, post.form)
    step = d.webhook_answered(2, 200, "text/xml", TWIML.decode(), TWIML)
    assert isinstance(step, OpenStream) and step.tls and step.url == "wss://app.test/media"
    assert (b"X-Twilio-Signature", sign(TOKEN, step.url).encode()) in step.headers
    assert step.preamble_s == pytest.approx(0.8)  # two words at 150 a minute
    assert step.core.ident.custom_parameters == {"a": "mine", "b": "twiml"}  # the caller's win
    r = d.result
    assert r.webhook is not None and r.webhook.status == 200 and r.timings == {"placed_ns": 1, "webhook_ns": 2}
    assert any("<Say> before <Connect>" in n for n in r.notes) and r.error is None


@pytest.mark.parametrize(("status", "body", "error"), [
    (500, b"oops", "webhook failed: webhook http://app.test/in answered HTTP 500: 'oops'"),
    (200, b"<nope", "webhook failed: webhook answer is not XML: unclosed token: line 1, column 0"),
    (200, b"<Response><Reject/></Response>", "no stream: <Reject> before any <Connect><Stream>"),
    (200, b"<Response><Say>Busy</Say><Hangup/></Response>",
     "no stream: <Hangup> before any <Connect><Stream> (said: Busy)"),
])
def test_webhook_answers_that_place_no_call(status, body, error):
    d = Dialer("http://app.test/in", SCRIPT)
    d.start(0)
    step = d.webhook_answered(1, status, "text/xml", body.decode(), body)
    assert step == DialFailed(error) and d.result.error == error and d.result.core is None


def test_a_failed_post_names_its_exception():
    d = Dialer("http://app.test/in", SCRIPT)
    d.start(0)
    assert d.webhook_failed(TimeoutError()).error == "webhook failed: TimeoutError"  # trio.TooSlowError says nothing
    assert d.webhook_failed(ConnectionRefusedError(111, "refused")).error == "webhook failed: [Errno 111] refused"


def test_stream_failures_before_and_during_the_call():
    d = Dialer("ws://127.0.0.1:9/media", SCRIPT)
    d.start(0)
    d.stream_failed(1, ConnectionRefusedError(111, "Connection refused"))
    assert d.result.error == "stream connect to ws://127.0.0.1:9/media failed: ConnectionRefusedError: [Errno 111] " \
                             "Connection refused"
    d = Dialer("ws://app.test/media", SCRIPT)
    core = d.start(0).core
    core.begin(10)
    d.stream_failed(20, OSError("reset"))
    assert d.result.error == "stream broke: OSError: reset" and core.end_reason == "closed_by_app"
    assert d.ended().error == "stream broke: OSError: reset"


def test_ended_says_a_call_hung_up_from_elsewhere_was_aborted():
    d = Dialer("ws://app.test/media", SCRIPT)
    core = d.start(0).core
    core.begin(10)
    core.hang_up(20)
    assert d.ended().error == ABORTED
    d = Dialer("ws://app.test/media", SCRIPT)
    assert d.start(0) and d.aborted().error == ABORTED


def test_describe_reads_the_status_or_the_cause():
    class Refused(Exception):
        status_code = 403
    assert describe(Refused()) == "HTTP 403"
    try:
        try:
            raise ConnectionResetError(104, "reset by peer")
        except OSError as exc:
            raise RuntimeError() from exc
    except RuntimeError as outer:
        assert describe(outer) == "ConnectionResetError: [Errno 104] reset by peer"
