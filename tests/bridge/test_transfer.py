"""transfer_call in the app: declared only with TRANSFER_NUMBER, the TwiML it sends, and a redirect
Twilio refuses (here the emulator: an unknown CallSid) coming back as one line, logged with the CallSid."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from functools import partial

import trio
from callsim.bridge.app import BridgeApp
from callsim.bridge.call import CallCore
from callsim.bridge.realtime import SessionParams
from callsim.bridge.settings import Settings
from callsim.bridge.transfer import transfer_twiml
from callsim.simulator.twilio_emu.rest import RestCore
from callsim.simulator.twilio_emu.server import serve_emulator

SID = "AC" + "7e" * 16
TOKEN = "transfer-token"
DESK = "+15550009999"


def settings(tmp_path, **kw) -> Settings:
    return Settings(openai_api_key="k", database_path=tmp_path / "b.sqlite3", _env_file=None, **kw)


def test_declared_only_with_a_transfer_number(tmp_path):
    off = BridgeApp(settings(tmp_path))
    assert "transfer_call" not in [t["name"] for t in off.tools.schemas()] and not off.control.transfer
    on = BridgeApp(settings(tmp_path, transfer_number=DESK, twilio_account_sid=SID, twilio_auth_token=TOKEN))
    assert "transfer_call" in [t["name"] for t in on.tools.schemas()] and on.control.transfer
    assert "transfer_call" in [t["name"] for t in on.params.tools]  # the session declares it; the console lists it
    assert on.transfers.twiml == ('<?xml version="1.0" encoding="UTF-8"?><Response><Say>Connecting your call.</Say>'
                                  f"<Dial><Number>{DESK}</Number></Dial></Response>")


def test_the_say_is_escaped_and_optional():
    assert "<Say>A &amp; B &lt;now&gt;</Say>" in transfer_twiml(DESK, "A & B <now>")
    assert "<Say" not in transfer_twiml(DESK, None)


async def test_a_refused_redirect_is_one_line_logged_with_the_call_sid(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    emu = RestCore(SID, TOKEN, clock=time.time)
    async with serve_emulator(emu) as url:
        app = BridgeApp(settings(tmp_path, transfer_number=DESK, twilio_account_sid=SID, twilio_auth_token=TOKEN,
                                 twilio_api_url=url))
        core = CallCore(SessionParams())
        core.call_sid = "CA" + "0" * 32
        with trio.fail_after(20):
            error, number = await app.transfer_call(core)
    assert number == DESK and error is not None and error.startswith("Twilio answered HTTP 404"), error
    assert any(f"call {core.call_sid}: transfer to {DESK} failed" in r.getMessage() and "the call goes on" in
               r.getMessage() for r in caplog.records)


@asynccontextmanager
async def not_json_api():
    """A REST API on 127.0.0.1 that answers every request ``200 OK`` with an HTML body: twilio's
    parser raises ValueError (no TwilioException, no OSError) on it."""
    async def answer(stream: trio.SocketStream) -> None:
        got = b""
        with trio.move_on_after(5):
            while b"\r\n\r\n" not in got:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                got += chunk
        body = b"<html>maintenance</html>"
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, answer, 0, host="127.0.0.1"))
        yield f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        nursery.cancel_scope.cancel()


async def test_a_2xx_that_is_no_json_fails_the_transfer_and_the_call_goes_on(tmp_path, caplog):
    """What Twilio's client raises on a body it cannot parse is one failed transfer (logged with the
    CallSid and its traceback), never an exception out of transfer_call (the driver would close the
    call with 1011)."""
    caplog.set_level(logging.INFO)
    async with not_json_api() as url:
        app = BridgeApp(settings(tmp_path, transfer_number=DESK, twilio_account_sid=SID, twilio_auth_token=TOKEN,
                                 twilio_api_url=url))
        core = CallCore(SessionParams())
        core.call_sid = "CA" + "1" * 32
        with trio.fail_after(20):
            error, number = await app.transfer_call(core)
    assert number == DESK and error == f"unexpected answer from {url}: JSONDecodeError", error
    unexpected = [r for r in caplog.records if r.exc_info and f"call {core.call_sid}: transfer" in r.getMessage()]
    assert len(unexpected) == 1 and url in unexpected[0].getMessage()
    assert any(f"call {core.call_sid}: transfer to {DESK} failed" in r.getMessage() and "the call goes on" in
               r.getMessage() for r in caplog.records)
