"""Status callbacks over real HTTP: the emulator (REST + sender) and a local receiver on
127.0.0.1 that validates ``X-Twilio-Signature`` with the ``twilio`` package, as a bridge would."""

from __future__ import annotations

import logging
import random
import socket
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl

import trio
from callsim.simulator.twilio_emu.rest import RestCore
from callsim.simulator.twilio_emu.server import serve_emulator
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from tests.asgi_kit import read_body, serve_app, serve_lifespan

SID = "AC" + "34" * 16
TOKEN = "delivery-token"



class Receiver:
    """An ASGI app recording each request, its form and whether its signature is valid."""

    def __init__(self, delay_s: dict[str, float] | None = None, status: int = 204) -> None:
        self.got: list[dict] = []
        self.arrived = trio.Event()
        self.expect = 0
        self.delay_s = delay_s or {}
        self.status = status
        self.base = ""

    async def __call__(self, scope, receive, send):
        if await serve_lifespan(scope, receive, send):
            return
        body = await read_body(receive)
        url = self.base + scope["path"] + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        form = dict(parse_qsl(body.decode())) if scope["method"] == "POST" else {}
        fields = form or dict(parse_qsl(scope["query_string"].decode()))
        await trio.sleep(self.delay_s.get(fields.get("CallStatus", ""), 0))
        self.got.append({
            "method": scope["method"], "fields": fields, "at": trio.current_time(),
            "valid": RequestValidator(TOKEN).validate(url, form, headers.get("x-twilio-signature", "")),
        })
        if len(self.got) >= self.expect:
            self.arrived.set()
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@asynccontextmanager
async def receiving(app: Receiver):
    async with serve_app(app) as base:
        app.base = base
        yield base


def client(url: str) -> Client:
    c = Client(SID, TOKEN)
    c.api.base_url = url
    return c


async def test_all_events_arrive_signed_and_in_order():
    receiver = Receiver()
    receiver.expect = 4
    emu = RestCore(SID, TOKEN, clock=lambda: trio.current_time() + 1_700_000_000, rng=random.Random(1))
    async with receiving(receiver) as cb, serve_emulator(emu, legs=False) as url:
        c = client(url)
        call = await trio.to_thread.run_sync(lambda: c.calls.create(
            to="+15550001111", from_="+15550002222", twiml="<Response><Pause/></Response>",
            status_callback=f"{cb}/status?leg=a",
            status_callback_event=["initiated", "ringing", "answered", "completed"]))
        emu.store.set_status(call.sid, "ringing", emu.clock())
        emu.store.set_status(call.sid, "in-progress", emu.clock())
        await trio.to_thread.run_sync(lambda: c.calls(call.sid).update(status="completed"))
        with trio.fail_after(10):
            await receiver.arrived.wait()
    assert [g["fields"]["CallStatus"] for g in receiver.got] == ["initiated", "ringing", "in-progress", "completed"]
    assert [g["fields"]["SequenceNumber"] for g in receiver.got] == ["0", "1", "2", "3"]
    assert all(g["valid"] and g["method"] == "POST" for g in receiver.got)
    assert {g["fields"]["CallSid"] for g in receiver.got} == {call.sid}
    assert receiver.got[-1]["fields"]["CallDuration"] == "0"


async def test_get_callbacks_are_signed_over_the_full_url():
    receiver = Receiver()
    receiver.expect = 1
    emu = RestCore(SID, TOKEN, clock=lambda: 1_700_000_000.0)
    async with receiving(receiver) as cb, serve_emulator(emu, legs=False) as url:
        c = client(url)
        call = await trio.to_thread.run_sync(lambda: c.calls.create(
            to="+15550001111", from_="+15550002222", twiml="<Response/>",
            status_callback=f"{cb}/s", status_callback_method="GET"))
        await trio.to_thread.run_sync(lambda: c.calls(call.sid).update(status="completed"))
        with trio.fail_after(10):
            await receiver.arrived.wait()
    (got,) = receiver.got
    assert got["method"] == "GET" and got["valid"] and got["fields"]["CallStatus"] == "canceled"


async def test_a_slow_receiver_delays_neither_rest_answers_nor_the_order():
    receiver = Receiver(delay_s={"initiated": 1.0})
    receiver.expect = 2
    emu = RestCore(SID, TOKEN, clock=lambda: 1_700_000_000.0)
    async with receiving(receiver) as cb, serve_emulator(emu, legs=False) as url:
        c = client(url)
        start = trio.current_time()
        call = await trio.to_thread.run_sync(lambda: c.calls.create(
            to="+15550001111", from_="+15550002222", twiml="<Response/>", status_callback=f"{cb}/s",
            status_callback_event=["initiated", "ringing"]))
        emu.store.set_status(call.sid, "ringing", 1_700_000_001.0)
        fetched = await trio.to_thread.run_sync(lambda: c.calls(call.sid).fetch())
        rest_done = trio.current_time() - start
        assert fetched.status == "ringing"
        with trio.fail_after(10):
            await receiver.arrived.wait()
    assert rest_done < 0.8, f"REST answers waited for the callback: {rest_done:.2f} s"
    assert [g["fields"]["CallStatus"] for g in receiver.got] == ["initiated", "ringing"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_failures_are_logged_with_the_call_sid(caplog):
    caplog.set_level(logging.INFO, logger="callsim.twilio_emu")
    receiver = Receiver(status=500)
    receiver.expect = 1
    emu = RestCore(SID, TOKEN, clock=lambda: 1_700_000_000.0)
    dead = f"http://127.0.0.1:{_closed_port()}/gone"
    async with receiving(receiver) as cb, serve_emulator(emu, legs=False) as url:
        c = client(url)
        refused = await trio.to_thread.run_sync(lambda: c.calls.create(
            to="+15550001111", from_="+15550002222", twiml="<Response/>", status_callback=dead,
            status_callback_event=["initiated"]))
        erroring = await trio.to_thread.run_sync(lambda: c.calls.create(
            to="+15550001111", from_="+15550002222", twiml="<Response/>", status_callback=f"{cb}/s",
            status_callback_event=["initiated"]))
        with trio.fail_after(10):
            await receiver.arrived.wait()
            while not any(refused.sid in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING):
                await trio.sleep(0.02)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(refused.sid in w and "/gone" in w and "failed" in w for w in warnings), warnings
    assert any(erroring.sid in w and "HTTP 500" in w for w in warnings), warnings
