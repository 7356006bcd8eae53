"""The ``twilio`` package's own REST client against the emulator over HTTP, unmodified apart from
its base URL (``client.api.base_url``). The client is synchronous (requests), so it runs in a
thread while the server runs in trio."""

from __future__ import annotations

import random

import pytest
import trio
from callsim.simulator.twilio_emu.rest import RestCore
from callsim.simulator.twilio_emu.server import serve_rest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

SID = "AC" + "12" * 16
TOKEN = "emulator-token"
T0 = 1_700_000_000.0



def client(url: str, token: str = TOKEN) -> Client:
    c = Client(SID, token)
    c.api.base_url = url
    return c


async def in_thread(fn):
    return await trio.to_thread.run_sync(fn)


def core(clock=lambda: T0) -> RestCore:
    return RestCore(SID, TOKEN, clock=clock, rng=random.Random(3))


async def test_create_fetch_list_update():
    now = [T0]
    emu = core(lambda: now[0])
    async with serve_rest(emu) as url:
        assert url.startswith("http://127.0.0.1:")
        c = client(url)

        def create(i: int):
            now[0] = T0 + i
            return c.calls.create(
                to=f"+1555000111{i}", from_="+15550002222",
                twiml='<Response><Connect><Stream url="wss://x.example/s"/></Connect></Response>',
                status_callback="https://cb.example/status",
                status_callback_event=["initiated", "ringing", "answered", "completed"], record=True, timeout=20)

        made = [await in_thread(lambda i=i: create(i)) for i in range(5)]
        first = made[0]
        assert first.sid.startswith("CA") and len(first.sid) == 34
        assert first.status == "queued" and first.direction == "outbound-api" and first.account_sid == SID
        assert first.date_created.timestamp() == T0 and first.to == "+15550001110"
        stored = emu.store.get(first.sid)
        assert stored.status_callback_events == ("initiated", "ringing", "answered", "completed")
        assert stored.record is True and stored.timeout_s == 20

        fetched = await in_thread(lambda: c.calls(first.sid).fetch())
        assert (fetched.sid, fetched.to, fetched._from) == (first.sid, "+15550001110", "+15550002222")

        # list() follows next_page_uri across pages of 2
        listed = await in_thread(lambda: c.calls.list(page_size=2))
        assert [x.sid for x in listed] == [m.sid for m in reversed(made)]
        assert [x.sid for x in await in_thread(lambda: c.calls.list(limit=3, page_size=2))] == \
            [m.sid for m in reversed(made)][:3]
        assert [x.sid for x in await in_thread(lambda: c.calls.list(to="+15550001112"))] == [made[2].sid]

        # the legs answer it; the bridge hangs it up over REST
        emu.store.set_status(first.sid, "ringing", T0 + 1)
        emu.store.set_status(first.sid, "in-progress", T0 + 2)
        now[0] = T0 + 9
        moved = await in_thread(lambda: c.calls(made[1].sid).update(url="https://agent.example/transfer"))
        assert moved.status == "queued"
        done = await in_thread(lambda: c.calls(first.sid).update(status="completed"))
        assert done.status == "completed" and done.duration == "7"
        assert done.end_time.timestamp() == T0 + 9
        kinds = [(e.kind, e.sid) for e in emu.store.drain_events()]
        assert ("redirected", made[1].sid) in kinds and ("hung_up", first.sid) in kinds


async def test_client_errors_carry_twilios_codes():
    async with serve_rest(core()) as url:
        c = client(url)
        with pytest.raises(TwilioRestException) as unknown:
            await in_thread(lambda: c.calls("CA" + "0" * 32).fetch())
        assert (unknown.value.code, unknown.value.status) == (20404, 404)
        assert "was not found" in unknown.value.msg

        with pytest.raises(TwilioRestException) as bad_token:
            await in_thread(lambda: client(url, "wrong").calls.create(to="+1", from_="+2", twiml="<Response/>"))
        assert (bad_token.value.code, bad_token.value.status) == (20003, 401)

        with pytest.raises(TwilioRestException) as no_url:
            await in_thread(lambda: c.calls.create(to="+15550001111", from_="+15550002222"))
        assert (no_url.value.code, no_url.value.status) == (21205, 400)

        sid = (await in_thread(lambda: c.calls.create(to="+15550001111", from_="+15550002222",
                                                       twiml="<Response/>"))).sid
        await in_thread(lambda: c.calls(sid).update(status="completed"))
        with pytest.raises(TwilioRestException) as ended:
            await in_thread(lambda: c.calls(sid).update(twiml="<Response><Say>late</Say></Response>"))
        assert ended.value.code == 21220


async def test_serve_rest_on_the_wall_clock_with_credentials_only():
    async with serve_rest(account_sid=SID, auth_token=TOKEN) as url:
        call = await in_thread(lambda: client(url).calls.create(
            to="+15550001111", from_="+15550002222", twiml="<Response/>"))
        assert call.date_created is not None and call.date_created.year >= 2024


async def test_the_server_stops_with_its_block():
    async with serve_rest(core()) as url:
        pass
    with pytest.raises(Exception):
        await in_thread(lambda: client(url).calls.list())


async def test_an_oversized_body_is_refused_before_the_core_sees_it():
    import httpx

    from callsim.simulator.twilio_emu.server import MAX_BODY_BYTES

    emu = core()
    async with serve_rest(emu) as url:
        def post():
            return httpx.post(f"{url}/2010-04-01/Accounts/{SID}/Calls.json", auth=(SID, TOKEN),
                              data={"To": "+1", "From": "+2", "Twiml": "x" * MAX_BODY_BYTES})
        r = await in_thread(post)
    assert r.status_code == 413 and r.json()["status"] == 413
    assert emu.store.calls == {}
