"""The caller as Twilio's webhook client: signed POST, TwiML, signed stream upgrade.

The far end is a small quart-trio app under hypercorn (written here, not the
bridge) that checks every signature with the ``twilio`` package's own
``RequestValidator``, exactly as a careful bridge does.
"""

from __future__ import annotations

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart import request, websocket
from quart_trio import QuartTrio
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from simulator.caller_trio import place_call
from simulator.script import Hangup, Pause
from simulator.webhook import NoStream, StreamTarget, parse_twiml, sign, webhook_form, CallParties

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
                resp.say("Connecting you.")
                connect = Connect()
                stream = connect.stream(url=f"{self.stream_scheme}://{request.host}/media")
                stream.parameter(name="callToken", value="tok-" + form["CallSid"][-6:])
                stream.parameter(name="callerId", value=form["From"])
                resp.append(connect)
            return str(resp), 200, {"Content-Type": "text/xml"}

        @app.websocket("/media")
        async def media():  # type: ignore[no-untyped-def]
            url = f"ws://{websocket.host}{websocket.path}"
            sig = websocket.headers.get("X-Twilio-Signature", "")
            if not self.validator.validate(url, {}, sig):
                self.stream_rejections += 1
                return "invalid signature", 403
            await websocket.accept()
            import json

            record: dict = {"messages": []}
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
