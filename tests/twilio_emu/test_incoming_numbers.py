"""The emulator's IncomingPhoneNumbers: the REST core alone (Twilio's JSON, paging, errors, the
routing it changes) and the ``twilio`` package's own client over HTTP (list, fetch, update)."""

from __future__ import annotations

import base64
import random
from urllib.parse import urlencode

import pytest
import trio
from callsim.simulator.twilio_emu.incoming_numbers import number_sid
from callsim.simulator.twilio_emu.numbers import PhoneNumber, parse_number
from callsim.simulator.twilio_emu.rest import RestCore
from callsim.simulator.twilio_emu.server import serve_rest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

SID = "AC" + "ab" * 16
TOKEN = "tok3n"
T0 = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 +0000
BASE = f"/2010-04-01/Accounts/{SID}/IncomingPhoneNumbers"
NUMBERS = ("+15550001111=http://127.0.0.1:5050/incoming-call", "+15550002222=http://127.0.0.1:6060/voice",
           "+442071838750=https://bridge.example/incoming-call")


class Api:
    def __init__(self) -> None:
        self.now = T0
        self.core = RestCore(SID, TOKEN, clock=lambda: self.now, rng=random.Random(7),
                             numbers=[parse_number(n) for n in NUMBERS])

    def request(self, method: str, target: str, form: dict | None = None, user: str = SID, password: str = TOKEN):
        auth = [("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())]
        return self.core.handle(method, target, auth, urlencode(form or {}).encode())


@pytest.fixture
def api() -> Api:
    return Api()


def test_list_is_twilios_shape_with_the_configured_numbers(api):
    r = api.request("GET", f"{BASE}.json")
    assert r.status == 200
    body = r.json()
    assert [n["phone_number"] for n in body["incoming_phone_numbers"]] == ["+15550001111", "+15550002222",
                                                                        "+442071838750"]
    assert {k for k in body if k != "incoming_phone_numbers"} == {
        "end", "first_page_uri", "next_page_uri", "page", "page_size", "previous_page_uri", "start", "uri"}
    first = body["incoming_phone_numbers"][0]
    assert first["sid"] == number_sid(SID, "+15550001111") and first["sid"].startswith("PN") and len(first["sid"]) == 34
    assert first["voice_url"] == "http://127.0.0.1:5050/incoming-call" and first["voice_method"] == "POST"
    assert first["friendly_name"] == "(555) 000-1111"
    assert first["capabilities"]["voice"] is True
    assert first["date_created"] == "Tue, 14 Nov 2023 22:13:20 +0000"
    assert first["uri"] == f"{BASE}/{first['sid']}.json" and first["account_sid"] == SID
    # the same account and number: the same SID next run
    assert Api().request("GET", f"{BASE}.json").json()["incoming_phone_numbers"][0]["sid"] == first["sid"]


def test_paging_and_filters(api):
    page0 = api.request("GET", f"{BASE}.json?PageSize=2").json()
    assert len(page0["incoming_phone_numbers"]) == 2 and page0["next_page_uri"]
    page1 = api.request("GET", page0["next_page_uri"]).json()
    assert [n["phone_number"] for n in page1["incoming_phone_numbers"]] == ["+442071838750"]
    assert page1["next_page_uri"] is None and page1["previous_page_uri"]
    assert [n["phone_number"] for n in api.request("GET", f"{BASE}.json?PhoneNumber=2222").json()[
        "incoming_phone_numbers"]] == ["+15550002222"]
    assert [n["phone_number"] for n in api.request("GET", f"{BASE}.json?PhoneNumber=%2B1555000****").json()[
        "incoming_phone_numbers"]] == ["+15550001111", "+15550002222"]
    assert api.request("GET", f"{BASE}.json?FriendlyName=nope").json()["incoming_phone_numbers"] == []


def test_update_voice_url_changes_where_the_number_routes(api):
    sid = number_sid(SID, "+15550002222")
    api.now = T0 + 60
    r = api.request("POST", f"{BASE}/{sid}.json", {"VoiceUrl": "https://bridge.example/incoming-call",
                                                   "VoiceMethod": "get", "FriendlyName": "support line"})
    assert r.status == 200, r.body
    n = r.json()
    assert (n["voice_url"], n["voice_method"], n["friendly_name"]) == (
        "https://bridge.example/incoming-call", "GET", "support line")
    assert n["date_updated"] == "Tue, 14 Nov 2023 22:14:20 +0000" and n["date_created"] != n["date_updated"]
    # the call legs route by this mapping
    assert api.core.numbers["+15550002222"] == PhoneNumber("+15550002222", "https://bridge.example/incoming-call",
                                                           "GET")
    assert api.request("GET", f"{BASE}/{sid}.json").json()["voice_url"] == "https://bridge.example/incoming-call"
    # the other numbers are untouched
    assert api.core.numbers["+15550001111"].voice_url == "http://127.0.0.1:5050/incoming-call"


def test_errors_are_twilios(api):
    missing = api.request("GET", f"{BASE}/PN{'0' * 32}.json")
    assert missing.status == 404 and missing.json()["code"] == 20404
    assert api.request("POST", f"{BASE}/PN{'0' * 32}.json", {"VoiceUrl": "http://x/y"}).json()["code"] == 20404
    sid = number_sid(SID, "+15550001111")
    bad = api.request("POST", f"{BASE}/{sid}.json", {"VoiceUrl": "ftp://x/y", "FriendlyName": "changed"})
    assert bad.status == 400 and bad.json()["code"] == 21205
    bad_method = api.request("POST", f"{BASE}/{sid}.json", {"VoiceUrl": "http://x/y", "VoiceMethod": "PUT"})
    assert bad_method.status == 400
    # a refused update changed nothing
    assert api.request("GET", f"{BASE}/{sid}.json").json()["friendly_name"] == "(555) 000-1111"
    assert api.core.numbers["+15550001111"].voice_url == "http://127.0.0.1:5050/incoming-call"
    assert api.request("GET", f"{BASE}.json", password="wrong").status == 401
    assert api.request("GET", f"/2010-04-01/Accounts/AC{'cd' * 16}/IncomingPhoneNumbers.json").status == 401
    assert api.request("DELETE", f"{BASE}/{sid}.json").status == 405



async def test_the_twilio_client_lists_fetches_and_updates_numbers(api):
    async with serve_rest(api.core) as url:
        client = Client(SID, TOKEN)
        client.api.base_url = url

        def work():
            listed = client.incoming_phone_numbers.list()
            filtered = client.incoming_phone_numbers.list(phone_number="+4420")
            paged = list(client.incoming_phone_numbers.stream(page_size=1))
            sid = listed[1].sid
            updated = client.incoming_phone_numbers(sid).update(voice_url="https://b.example/incoming-call")
            fetched = client.incoming_phone_numbers(sid).fetch()
            try:
                client.incoming_phone_numbers("PN" + "0" * 32).update(voice_url="https://b.example/x")
            except TwilioRestException as exc:
                missing = exc
            return listed, filtered, paged, updated, fetched, missing

        listed, filtered, paged, updated, fetched, missing = await trio.to_thread.run_sync(work)
    assert [n.phone_number for n in listed] == ["+15550001111", "+15550002222", "+442071838750"]
    assert [n.phone_number for n in filtered] == ["+442071838750"]
    assert [n.sid for n in paged] == [n.sid for n in listed]  # followed next_page_uri
    assert updated.voice_url == fetched.voice_url == "https://b.example/incoming-call"
    assert fetched.date_created is not None and fetched.capabilities["voice"] is True
    assert missing.status == 404 and missing.code == 20404
    assert api.core.numbers["+15550002222"].voice_url == "https://b.example/incoming-call"
