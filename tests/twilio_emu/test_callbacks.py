"""The status callbacks, sans-IO: which events a call gets, their form, order and signature,
checked with the ``twilio`` package's own ``RequestValidator`` as a receiver would."""

from __future__ import annotations

import random
from urllib.parse import parse_qsl, urlsplit

import pytest
from callsim.simulator.twilio_emu.callbacks import CallbackRequest, StatusCallbacks
from callsim.simulator.twilio_emu.calls import CallEvent, CallStore, Instructions
from twilio.request_validator import RequestValidator

SID = "AC" + "12" * 16
TOKEN = "emulator-token"
T0 = 1_700_000_000.0
CB = "https://agent.example/status?tenant=7"


def store_with_builder() -> tuple[CallStore, list[CallbackRequest]]:
    """A store whose events go through the builder as the sender wires it (a listener)."""
    store = CallStore(SID, random.Random(5))
    builder = StatusCallbacks(TOKEN)
    made: list[CallbackRequest] = []

    def listen(event: CallEvent) -> None:
        r = builder.request_for(event, store.calls[event.sid])
        if r is not None:
            made.append(r)
    store.listeners.append(listen)
    return store, made


def create(store: CallStore, **kw):
    options = dict(status_callback=CB, status_callback_method="POST",
                   status_callback_events=("initiated", "ringing", "answered", "completed"))
    options.update(kw)
    return store.create(to="+15550001111", from_="+15550002222", instructions=Instructions(twiml="<Response/>"),
                        at=T0, **options)


def valid(r: CallbackRequest, token: str = TOKEN) -> bool:
    signature = dict(r.headers)["X-Twilio-Signature"]
    if r.method == "GET":
        return RequestValidator(token).validate(r.url, {}, signature)
    return RequestValidator(token).validate(r.url, dict(parse_qsl(r.body.decode())), signature)


def test_all_four_events_in_order_with_twilios_fields():
    store, made = store_with_builder()
    call = create(store)
    store.set_status(call.sid, "ringing", T0 + 1)
    store.set_status(call.sid, "in-progress", T0 + 3)
    store.hang_up(call.sid, "completed", T0 + 45.7)
    assert [r.event for r in made] == ["initiated", "ringing", "answered", "completed"]
    forms = [dict(parse_qsl(r.body.decode())) for r in made]
    assert [f["CallStatus"] for f in forms] == ["initiated", "ringing", "in-progress", "completed"]
    assert [f["SequenceNumber"] for f in forms] == ["0", "1", "2", "3"]
    first, last = forms[0], forms[-1]
    assert first == {
        "AccountSid": SID, "ApiVersion": "2010-04-01", "CallSid": call.sid, "CallStatus": "initiated",
        "Called": "+15550001111", "Caller": "+15550002222", "CallbackSource": "call-progress-events",
        "Direction": "outbound-api", "From": "+15550002222", "SequenceNumber": "0",
        "Timestamp": "Tue, 14 Nov 2023 22:13:20 +0000", "To": "+15550001111",
    }
    assert "CallDuration" not in forms[2]
    assert last["CallDuration"] == "42" and last["Timestamp"] == "Tue, 14 Nov 2023 22:14:05 +0000"
    for r in made:
        assert r.method == "POST" and r.url == CB and r.call_sid == call.sid
        assert dict(r.headers)["Content-Type"] == "application/x-www-form-urlencoded"
        assert valid(r)
        assert not valid(r, token="another-token")


def test_default_is_completed_only_and_a_cancel_before_answer_is_completed_canceled():
    store, made = store_with_builder()
    call = create(store, status_callback_events=("completed",))
    store.set_status(call.sid, "ringing", T0 + 1)
    store.hang_up(call.sid, "completed", T0 + 2)  # not answered: Twilio ends it canceled
    assert len(made) == 1
    form = dict(parse_qsl(made[0].body.decode()))
    assert (made[0].event, form["CallStatus"], form["CallDuration"], form["SequenceNumber"]) == \
        ("completed", "canceled", "0", "0")


def test_no_status_callback_no_requests_and_redirects_send_nothing():
    store, made = store_with_builder()
    plain = create(store, status_callback=None, status_callback_events=())
    store.hang_up(plain.sid, "completed", T0 + 1)
    assert made == []
    call = create(store, status_callback_events=("answered", "completed"))
    store.set_status(call.sid, "in-progress", T0 + 1)
    store.redirect(call.sid, Instructions(twiml="<Response><Hangup/></Response>"), T0 + 2)
    store.set_status(call.sid, "completed", T0 + 3)
    assert [(r.event, dict(r.form)["SequenceNumber"]) for r in made] == [("answered", "0"), ("completed", "1")]


@pytest.mark.parametrize("end", ["busy", "no-answer", "failed"])
def test_unanswered_ends_are_completed_events_with_their_status(end):
    store, made = store_with_builder()
    call = create(store, status_callback_events=("completed",))
    store.set_status(call.sid, "ringing", T0 + 1)
    store.set_status(call.sid, end, T0 + 20)
    assert [(r.event, dict(r.form)["CallStatus"], dict(r.form)["CallDuration"]) for r in made] == \
        [("completed", end, "0")]


def test_get_puts_the_form_in_the_query_and_signs_the_full_url():
    store, made = store_with_builder()
    call = create(store, status_callback_method="GET", status_callback_events=("initiated",))
    assert len(made) == 1
    r = made[0]
    assert r.method == "GET" and r.body == b"" and "Content-Type" not in dict(r.headers)
    query = dict(parse_qsl(urlsplit(r.url).query))
    assert query["tenant"] == "7" and query["CallSid"] == call.sid and query["CallStatus"] == "initiated"
    assert r.url.startswith(CB + "&")
    assert valid(r)


def test_sequence_numbers_are_per_call():
    store, made = store_with_builder()
    a, b = create(store), create(store)
    store.set_status(b.sid, "ringing", T0 + 1)
    store.set_status(a.sid, "ringing", T0 + 1)
    seq = [(r.call_sid, dict(r.form)["SequenceNumber"]) for r in made]
    assert seq == [(a.sid, "0"), (b.sid, "0"), (b.sid, "1"), (a.sid, "1")]
