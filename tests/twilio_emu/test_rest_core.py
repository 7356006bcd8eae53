"""The emulator's Calls REST core alone: requests in, Twilio's JSON out, on a clock the test sets."""

from __future__ import annotations

import base64
import email.utils
import random
import re
from urllib.parse import urlencode

import pytest
from callsim.simulator.twilio_emu import calls as calls_mod
from callsim.simulator.twilio_emu.rest import RestCore, rfc2822

SID = "AC" + "ab" * 16
TOKEN = "tok3n"
T0 = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 +0000
CALLS = f"/2010-04-01/Accounts/{SID}/Calls.json"


def basic(user: str = SID, password: str = TOKEN) -> list[tuple[str, str]]:
    return [("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())]


class Api:
    def __init__(self) -> None:
        self.now = T0
        self.core = RestCore(SID, TOKEN, clock=lambda: self.now, rng=random.Random(7))

    def request(self, method: str, target: str, form: dict | list | None = None, headers=None):
        body = urlencode(form or {}, doseq=True).encode()
        return self.core.handle(method, target, basic() if headers is None else headers, body)

    def create(self, **form):
        form = {"To": "+15550001111", "From": "+15550002222", "Twiml": "<Response/>", **form}
        r = self.request("POST", CALLS, {k: v for k, v in form.items() if v is not None})
        return r

    def call_path(self, sid: str) -> str:
        return f"/2010-04-01/Accounts/{SID}/Calls/{sid}.json"


@pytest.fixture
def api() -> Api:
    return Api()


def test_create_answers_201_with_twilios_call_shape(api):
    r = api.create()
    assert r.status == 201
    assert ("Content-Type", "application/json; charset=utf-8") in r.headers
    c = r.json()
    assert re.fullmatch(r"CA[0-9a-f]{32}", c["sid"])
    assert c["account_sid"] == SID and c["to"] == "+15550001111" and c["from"] == "+15550002222"
    assert c["to_formatted"] == "(555) 000-1111"
    assert c["status"] == "queued" and c["direction"] == "outbound-api" and c["api_version"] == "2010-04-01"
    assert c["date_created"] == c["date_updated"] == "Tue, 14 Nov 2023 22:13:20 +0000"
    assert c["start_time"] is None and c["end_time"] is None and c["duration"] is None
    assert c["price"] is None and c["price_unit"] == "USD"
    assert c["uri"] == api.call_path(c["sid"])
    assert c["subresource_uris"]["recordings"] == api.call_path(c["sid"])[:-5] + "/Recordings.json"
    event, = api.core.store.drain_events()
    assert (event.kind, event.sid, event.at, event.instructions.twiml) == ("created", c["sid"], T0, "<Response/>")


def test_dates_are_rfc2822_as_email_utils_reads_them():
    assert email.utils.parsedate_to_datetime(rfc2822(T0)).timestamp() == T0


def test_create_stores_what_the_legs_need(api):
    r = api.create(Twiml=None, Url="https://agent.example/incoming", Method="GET",
                   StatusCallback="https://cb.example/status", StatusCallbackMethod="GET",
                   StatusCallbackEvent=["initiated", "ringing answered"], Record="true", Timeout="15")
    call = api.core.store.get(r.json()["sid"])
    assert call.instructions == calls_mod.Instructions(url="https://agent.example/incoming", method="GET")
    assert call.status_callback == "https://cb.example/status" and call.status_callback_method == "GET"
    assert call.status_callback_events == ("initiated", "ringing", "answered")
    assert call.record is True and call.timeout_s == 15


def test_status_callback_without_events_means_completed_only(api):
    r = api.create(StatusCallback="https://cb.example/status")
    assert api.core.store.get(r.json()["sid"]).status_callback_events == ("completed",)


def test_url_wins_over_twiml(api):
    r = api.create(Url="https://agent.example/x")
    assert api.core.store.get(r.json()["sid"]).instructions.twiml is None


@pytest.mark.parametrize("form, code, message", [
    ({"To": None}, 21201, "No 'To' number is specified"),
    ({"To": ""}, 21201, "No 'To' number is specified"),
    ({"From": None}, 21213, "No 'From' number is specified"),
    ({"Twiml": None}, 21205, "Url parameter is required"),
    ({"Twiml": None, "Url": "not a url"}, 21205, "Url is not a valid URL: not a url"),
    ({"StatusCallback": "ftp://x/y"}, 21205, "StatusCallback is not a valid URL"),
    ({"Timeout": "soon"}, 20001, "Timeout must be an integer"),
    ({"StatusCallbackEvent": "hangup"}, 20001, "StatusCallbackEvent 'hangup'"),
])
def test_create_validation_errors_are_twilios(api, form, code, message):
    r = api.create(**form)
    assert r.status == 400
    body = r.json()
    assert body["code"] == code and body["status"] == 400 and message in body["message"]
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    assert api.core.store.calls == {}


@pytest.mark.parametrize("headers", [
    [],
    basic(password="wrong"),
    basic(user="AC" + "cd" * 16),
    [("Authorization", "Bearer " + TOKEN)],
    [("Authorization", "Basic !!notbase64")],
    [("Authorization", "Basic " + base64.b64encode(SID.encode()).decode())],
])
def test_bad_basic_auth_is_20003(api, headers):
    r = api.request("GET", CALLS, headers=headers)
    assert r.status == 401
    assert r.json() == {"code": 20003, "message": "Authenticate",
                        "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401}
    assert ("WWW-Authenticate", 'Basic realm="Twilio API"') in r.headers


def test_header_names_are_case_insensitive(api):
    assert api.request("GET", CALLS, headers=[(k.lower(), v) for k, v in basic()]).status == 200


def test_another_accounts_path_is_refused(api):
    r = api.request("GET", CALLS.replace(SID, "AC" + "cd" * 16))
    assert (r.status, r.json()["code"]) == (401, 20003)


def test_unknown_call_is_20404_naming_the_path(api):
    path = api.call_path("CA" + "0" * 32)
    for method in ("GET", "POST"):
        r = api.request(method, path, {"Status": "completed"})
        assert r.status == 404
        assert r.json() == {"code": 20404, "message": f"The requested resource {path} was not found",
                            "more_info": "https://www.twilio.com/docs/errors/20404", "status": 404}


def test_unknown_path_is_20404_and_other_methods_405(api):
    assert api.request("GET", f"/2010-04-01/Accounts/{SID}/Queues.json").json()["code"] == 20404
    r = api.request("DELETE", CALLS)
    assert r.status == 405 and r.json()["code"] == 20004


def test_fetch_returns_the_call(api):
    sid = api.create().json()["sid"]
    r = api.request("GET", api.call_path(sid))
    assert r.status == 200 and r.json() == api.core._render(api.core.store.get(sid))
    assert r.json()["sid"] == sid


def _sids(api, n):
    out = []
    for i in range(n):
        api.now = T0 + i
        out.append(api.create(To=f"+1555000100{i}").json()["sid"])
    return out


def test_list_pages_newest_first_in_twilios_shape(api):
    sids = _sids(api, 5)
    seen, target, pages = [], CALLS + "?PageSize=2", []
    while target:
        page = api.request("GET", target).json()
        pages.append(page)
        seen += [c["sid"] for c in page["calls"]]
        target = page["next_page_uri"]
    assert seen == sids[::-1]
    first = pages[0]
    assert set(first) == {"calls", "end", "first_page_uri", "next_page_uri", "page", "page_size",
                          "previous_page_uri", "start", "uri"}
    assert (first["page"], first["page_size"], first["start"], first["end"]) == (0, 2, 0, 1)
    assert first["uri"] == first["first_page_uri"] == CALLS + "?PageSize=2&Page=0"
    assert first["previous_page_uri"] is None
    assert [p["page"] for p in pages] == [0, 1, 2] and pages[-1]["next_page_uri"] is None
    assert pages[1]["previous_page_uri"] == CALLS + "?PageSize=2&Page=0"


def test_list_paging_is_stable_while_calls_are_created(api):
    sids = _sids(api, 4)
    first = api.request("GET", CALLS + "?PageSize=2").json()
    api.create()  # a new call lands at the front between two page reads
    second = api.request("GET", first["next_page_uri"]).json()
    assert [c["sid"] for c in first["calls"] + second["calls"]] == sids[::-1]


def test_list_filters(api):
    a, b = _sids(api, 2)
    api.core.store.set_status(a, "ringing", T0 + 5)
    assert [c["sid"] for c in api.request("GET", CALLS + "?Status=ringing").json()["calls"]] == [a]
    assert [c["sid"] for c in api.request("GET", CALLS + "?To=%2B15550001001").json()["calls"]] == [b]
    assert api.request("GET", CALLS + "?PageSize=x").json()["code"] == 20001


def test_hang_up_an_answered_call_completes_it_with_duration(api):
    sid = api.create().json()["sid"]
    store = api.core.store
    store.set_status(sid, "ringing", T0 + 1)
    store.set_status(sid, "in-progress", T0 + 2)
    store.drain_events()
    api.now = T0 + 14.7
    r = api.request("POST", api.call_path(sid), {"Status": "completed"})
    c = r.json()
    assert r.status == 200 and c["status"] == "completed" and c["duration"] == "12"
    assert c["start_time"] == rfc2822(T0 + 2) and c["end_time"] == rfc2822(T0 + 14)
    event, = store.drain_events()
    assert (event.kind, event.status, event.at) == ("hung_up", "completed", T0 + 14.7)


def test_hang_up_before_answer_cancels(api):
    sid = api.create().json()["sid"]
    c = api.request("POST", api.call_path(sid), {"Status": "completed"}).json()
    assert c["status"] == "canceled" and c["duration"] is None and c["end_time"] is not None


def test_cancel_leaves_an_answered_call_alone(api):
    sid = api.create().json()["sid"]
    api.core.store.set_status(sid, "in-progress", T0 + 1)
    api.core.store.drain_events()
    assert api.request("POST", api.call_path(sid), {"Status": "canceled"}).json()["status"] == "in-progress"
    assert api.core.store.drain_events() == []


def test_an_ended_call_cannot_be_hung_up_or_redirected(api):
    sid = api.create().json()["sid"]
    api.request("POST", api.call_path(sid), {"Status": "completed"})
    for form in ({"Status": "completed"}, {"Twiml": "<Response><Hangup/></Response>"}):
        r = api.request("POST", api.call_path(sid), form)
        assert (r.status, r.json()["code"]) == (400, 21220)


def test_redirect_hands_the_legs_new_instructions(api):
    sid = api.create().json()["sid"]
    api.core.store.set_status(sid, "in-progress", T0 + 1)
    api.core.store.drain_events()
    api.now = T0 + 3
    r = api.request("POST", api.call_path(sid), {"Url": "https://agent.example/transfer", "Method": "GET"})
    assert r.status == 200 and r.json()["status"] == "in-progress"
    assert r.json()["date_updated"] == rfc2822(T0 + 3)
    event, = api.core.store.drain_events()
    assert event.kind == "redirected"
    assert event.instructions == calls_mod.Instructions(url="https://agent.example/transfer", method="GET")


def test_bad_update_status_is_refused(api):
    sid = api.create().json()["sid"]
    r = api.request("POST", api.call_path(sid), {"Status": "ringing"})
    assert (r.status, r.json()["code"]) == (400, 20001)


def test_status_moves_only_as_twilio_moves_them(api):
    sid = api.create().json()["sid"]
    store = api.core.store
    with pytest.raises(ValueError):
        store.set_status(sid, "completed", T0)  # never answered: cannot complete
    store.set_status(sid, "ringing", T0)
    store.set_status(sid, "no-answer", T0 + 60)
    with pytest.raises(ValueError):
        store.set_status(sid, "in-progress", T0 + 61)
    assert [e.status for e in store.drain_events()] == ["queued", "ringing", "no-answer"]


def test_sids_follow_the_seed():
    a, b = Api(), Api()
    assert a.create().json()["sid"] == b.create().json()["sid"]
