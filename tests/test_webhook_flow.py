"""The caller as Twilio's webhook client: signed POST, TwiML, signed stream upgrade.

The far end is a small quart-trio app under hypercorn (written here, not the
bridge) that checks every signature with the ``twilio`` package's own
``RequestValidator``, exactly as a careful bridge does.
"""

from __future__ import annotations

import socket
import time

import pytest
import trio
from callsim.simulator.caller.script import Hangup, Pause
from callsim.simulator.caller.trio_driver import place_call
from callsim.simulator.caller.webhook import (
    SAY_WORDS_PER_MINUTE,
    CallParties,
    NoStream,
    StreamTarget,
    parse_twiml,
    preamble_ms,
    sign,
    webhook_form,
)
from hypercorn.config import Config
from hypercorn.trio import serve
from quart import request, websocket
from quart_trio import QuartTrio
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

TOKEN = "test-auth-token-0123456789abcdef"


class TwimlApp:
    """/incoming-call answers TwiML pointing at /media; both endpoints check signatures."""

    def __init__(self, token: str, stream_scheme: str = "http") -> None:
        self.token = token
        self.validator = RequestValidator(token)
        self.webhook_calls: list[dict] = []
        self.streams: list[dict] = []
        self.stream_rejections = 0
        self.stream_scheme = stream_scheme
        self.stream_url: str | None = None  # the <Stream url> to answer instead of SCHEME://HOST/media
        self.before_connect = lambda resp: resp.say("Connecting you.")  # TwiML verbs before <Connect>
        self.answered_ns: list[int] = []  # when each TwiML answer left (monotonic)
        self.busy = False
        app = QuartTrio(__name__)

        @app.post("/incoming-call")
        async def incoming():  # type: ignore[no-untyped-def]
            form = (await request.form).to_dict()
            sig = request.headers.get("X-Twilio-Signature", "")
            ok = self.validator.validate(request.url, form, sig)
            self.webhook_calls.append({"form": form, "signature_ok": ok, "url": request.url,
                                       "ua": request.headers.get("User-Agent")})
            if not ok:
                return "invalid signature", 403
            resp = VoiceResponse()
            if self.busy:
                resp.say("All lines are busy.")
                resp.hangup()
            else:
                self.before_connect(resp)
                connect = Connect()
                stream = connect.stream(url=self.stream_url or f"{self.stream_scheme}://{request.host}/media")
                stream.parameter(name="callToken", value="tok-" + form["CallSid"][-6:])
                stream.parameter(name="callerId", value=form["From"])
                resp.append(connect)
            self.answered_ns.append(time.monotonic_ns())
            return str(resp), 200, {"Content-Type": "text/xml"}

        @app.websocket("/media")
        async def media():  # type: ignore[no-untyped-def]
            t_open_ns = time.monotonic_ns()
            url = f"ws://{websocket.host}{websocket.path}"
            sig = websocket.headers.get("X-Twilio-Signature", "")
            if not self.validator.validate(url, {}, sig):
                self.stream_rejections += 1
                return "invalid signature", 403
            await websocket.accept()
            import json

            record: dict = {"messages": [], "t_open_ns": t_open_ns}
            self.streams.append(record)
            while True:
                msg = json.loads(await websocket.receive())
                record["messages"].append(msg)
                if msg["event"] == "stop":
                    return

        self.app = app

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        cfg = Config()
        cfg.bind = ["127.0.0.1:0"]
        cfg.accesslog = None
        async with trio.open_nursery() as n:
            binds = await n.start(serve, self.app, cfg)
            self.base = binds[0]
            task_status.started()


async def _call(app: TwimlApp, token: str | None, target_path: str = "/incoming-call"):
    async with trio.open_nursery() as n:
        await n.start(app.serve)
        result = await place_call(app.base + target_path, [Pause(300), Hangup()], auth_token=token)
        n.cancel_scope.cancel()
    return result


async def test_signed_webhook_flow_follows_twiml_to_the_stream():
    app = TwimlApp(TOKEN)
    result = await _call(app, TOKEN)
    assert result.ok, result.error
    (call,) = app.webhook_calls
    assert call["signature_ok"]
    form = call["form"]
    for key, value in {"CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01"}.items():
        assert form[key] == value
    assert form["CallSid"].startswith("CA") and form["AccountSid"].startswith("AC")
    assert form["From"].startswith("+") and form["To"].startswith("+")
    (stream,) = app.streams  # the upgrade's signature was accepted
    start = stream["messages"][1]
    assert start["event"] == "start"
    # <Parameter>s become customParameters; the SIDs match the webhook's
    assert start["start"]["customParameters"] == {"callToken": "tok-" + form["CallSid"][-6:],
                                                  "callerId": form["From"]}
    assert start["start"]["callSid"] == form["CallSid"]
    assert start["start"]["accountSid"] == form["AccountSid"]
    assert stream["messages"][-1]["event"] == "stop"
    assert result.stream_url == app.base.replace("http://", "ws://") + "/media"
    assert any("31922" in n for n in result.notes)  # ws:// would be refused by real Twilio


async def test_wrong_token_is_rejected_by_the_twilio_validator():
    app = TwimlApp(TOKEN)
    result = await _call(app, "not-the-token")
    assert not result.ok
    assert "403" in result.error
    assert app.webhook_calls[0]["signature_ok"] is False
    assert app.streams == []


async def test_unsigned_call_is_rejected_when_the_app_validates():
    app = TwimlApp(TOKEN)
    result = await _call(app, None)
    assert not result.ok and "403" in result.error


async def test_stream_upgrade_signature_checked_on_its_own():
    """Straight to the ws:// URL: a wrong signature is refused at the handshake."""
    app = TwimlApp(TOKEN)
    async with trio.open_nursery() as n:
        await n.start(app.serve)
        ws_url = app.base.replace("http://", "ws://") + "/media"
        bad = await place_call(ws_url, [Pause(100), Hangup()], auth_token="wrong")
        good = await place_call(ws_url, [Pause(100), Hangup()], auth_token=TOKEN)
        n.cancel_scope.cancel()
    assert not bad.ok and "403" in bad.error
    assert good.ok, good.error
    assert app.stream_rejections == 1 and len(app.streams) == 1


async def test_busy_twiml_ends_the_call_without_a_stream():
    app = TwimlApp(TOKEN)
    app.busy = True
    result = await _call(app, TOKEN)
    assert not result.ok
    assert "no stream" in result.error and "All lines are busy." in result.error
    assert app.streams == []


def test_signature_matches_twilio_reference_vector():
    """protocols.md 1.6: the twilio-python test vector."""
    params = {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309",
              "To": "+18005551212", "Caller": "+14158675309"}
    assert sign("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_webhook_form_has_twilios_fields():
    p = CallParties.new()
    form = webhook_form(p)
    assert {"CallSid", "AccountSid", "From", "To", "CallStatus", "Direction", "ApiVersion"} <= set(form)


def test_parse_twiml_variants():
    base = "https://example.com/voice/incoming"
    xml = ('<?xml version="1.0" encoding="UTF-8"?><Response><Say>Hi</Say><Connect>'
           '<Stream url="wss://example.com/media-stream"><Parameter name="a" value="1" /></Stream>'
           '</Connect><Say>Goodbye</Say></Response>')
    t = parse_twiml(xml, base)
    assert isinstance(t, StreamTarget)
    assert t.url == "wss://example.com/media-stream" and t.parameters == {"a": "1"} and t.says == ("Hi",)
    assert t.notes == ()
    rel = parse_twiml('<Response><Connect><Stream url="/media"/></Connect></Response>', base)
    assert isinstance(rel, StreamTarget) and rel.url == "wss://example.com/media"
    q = parse_twiml('<Response><Connect><Stream url="wss://x.io/m?token=1"/></Connect></Response>', base)
    assert any("query string" in n for n in q.notes)
    assert isinstance(parse_twiml("<Response><Reject/></Response>", base), NoStream)
    uni = parse_twiml('<Response><Start><Stream url="wss://x.io/m"/></Start></Response>', base)
    assert isinstance(uni, NoStream) and "Start/Stream" in uni.verbs


def test_parse_twiml_times_what_twilio_plays_before_connect():
    """<Pause> exactly (default 1 s), <Say> at the documented estimate, <Play> noted as untimed."""
    xml = ('<Response><Say>one two three</Say><Pause length="2"/><Pause/><Play>https://x.io/hold.mp3</Play>'
           '<Connect><Stream url="wss://x.io/m"/></Connect></Response>')
    t = parse_twiml(xml, "https://x.io/voice")
    assert isinstance(t, StreamTarget)
    assert [p.verb for p in t.preamble] == ["Say", "Pause", "Pause", "Play"]
    say_ms = 3 * 60_000 / SAY_WORDS_PER_MINUTE
    assert [p.ms for p in t.preamble] == [say_ms, 2000, 1000, None]
    assert preamble_ms(t.preamble) == say_ms + 3000
    assert "estimate" in t.preamble[0].note and f"{SAY_WORDS_PER_MINUTE} words per minute" in t.preamble[0].note
    assert "length is unknown offline; the stream opened without waiting for it" in t.preamble[3].note
    after = parse_twiml('<Response><Connect><Stream url="wss://x.io/m"/></Connect><Pause/></Response>', "https://x.io/")
    assert after.preamble == ()  # what comes after <Connect> does not hold the stream back


async def _delay_of_stream(before_connect) -> tuple[float, list[str]]:
    """Webhook answered → stream opened at the app, in ms on the shared clock; and the call's notes."""
    app = TwimlApp(TOKEN)
    app.before_connect = before_connect
    result = await _call(app, TOKEN)
    assert result.ok, result.error
    (stream,) = app.streams
    return (stream["t_open_ns"] - app.answered_ns[0]) / 1e6, result.notes


async def test_pause_before_connect_delays_the_stream_by_its_length():
    plain_ms, plain_notes = await _delay_of_stream(lambda resp: None)
    paused_ms, notes = await _delay_of_stream(lambda resp: resp.pause(length=1))
    assert not any("<Pause" in n for n in plain_notes)
    assert 1000 <= paused_ms < 1000 + plain_ms + 500, (paused_ms, plain_ms)
    assert any(n.startswith('<Pause length="1"> before <Connect>: the stream opened 1000 ms later')
               for n in notes), notes


async def test_wss_stream_on_a_plain_local_server_says_what_to_do():
    """The TwiML says wss:// (https:// mapped) but the app speaks plain HTTP: the TLS handshake fails."""
    app = TwimlApp(TOKEN, stream_scheme="https")
    result = await _call(app, TOKEN)
    hostport = app.base.removeprefix("http://")
    assert not result.ok
    assert "WRONG_VERSION_NUMBER" in result.error or "record layer" in result.error.lower(), result.error
    assert f"the TwiML streams to wss://{hostport}/media but nothing speaks TLS there" in result.error
    assert f"set its public URL to http://{hostport}" in result.error
    assert f"--target ws://{hostport}/media" in result.error
    assert app.streams == []


def _loopback_443_refuses() -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", 443)) != 0


async def test_wss_stream_without_a_port_on_loopback_names_the_plain_port():
    """wss://127.0.0.1/media means port 443, where nothing listens: the hint points at the webhook's port."""
    if not _loopback_443_refuses():
        pytest.skip("something listens on 127.0.0.1:443 here")
    app = TwimlApp(TOKEN)
    app.stream_url = "wss://127.0.0.1/media"
    result = await _call(app, TOKEN)
    hostport = app.base.removeprefix("http://")
    assert not result.ok and "127.0.0.1:443" in result.error
    assert "the TwiML streams to wss://127.0.0.1/media but nothing speaks TLS there" in result.error
    assert f"--target ws://{hostport}/media" in result.error, result.error


GEVENT_CALL = r"""
from gevent import monkey
monkey.patch_all()
import json, sys
from callsim.simulator.caller.gevent_driver import place_call_gevent
from callsim.simulator.caller.script import Hangup, Pause
r = place_call_gevent(sys.argv[1], [Pause(300), Hangup()], auth_token=sys.argv[2])
print(json.dumps({"error": r.error, "notes": r.notes}))
"""


async def _gevent_call(app: TwimlApp, tmp_path) -> dict:
    """The Locust driver (gevent; its own process, as gevent must never enter this trio one)."""
    import json
    import os
    import sys
    from pathlib import Path

    script = tmp_path / "gevent_call.py"
    script.write_text(GEVENT_CALL)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    async with trio.open_nursery() as n:
        await n.start(app.serve)
        proc = await trio.run_process([sys.executable, str(script), app.base + "/incoming-call", TOKEN],
                                      capture_stdout=True, capture_stderr=True, check=False, env=env)
        n.cancel_scope.cancel()
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


async def test_the_gevent_driver_also_waits_for_what_twilio_plays_before_connect(tmp_path):
    app = TwimlApp(TOKEN)
    app.before_connect = lambda resp: resp.pause(length=1)
    out = await _gevent_call(app, tmp_path)
    assert out["error"] is None, out
    (stream,) = app.streams
    assert (stream["t_open_ns"] - app.answered_ns[0]) / 1e6 >= 1000
    assert any(n.startswith('<Pause length="1"> before <Connect>') for n in out["notes"]), out


async def test_the_gevent_driver_also_says_what_to_do_about_wss_on_a_plain_port(tmp_path):
    app = TwimlApp(TOKEN, stream_scheme="https")
    out = await _gevent_call(app, tmp_path)
    hostport = app.base.removeprefix("http://")
    assert f"the TwiML streams to wss://{hostport}/media but nothing speaks TLS there" in out["error"], out
