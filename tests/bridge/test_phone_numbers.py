"""The bridge's numbers API (``/api/numbers``) against callsim's Twilio emulator served in this
process (never the network): list the account's numbers, point one at this bridge through the
``twilio`` client, who/when logged; the console token guards it."""

from __future__ import annotations

import logging
import random
from contextlib import asynccontextmanager

import httpx
import pytest
from callsim.bridge.server import running_bridge
from callsim.bridge.settings import Settings
from callsim.simulator.twilio_emu.incoming_numbers import number_sid
from callsim.simulator.twilio_emu.numbers import parse_number
from callsim.simulator.twilio_emu.rest import RestCore
from callsim.simulator.twilio_emu.server import serve_rest

ACCOUNT = "AC" + "5e" * 16
TWILIO_TOKEN = "emulated-auth-token"
CONSOLE = "console-token-" + "y" * 24
BEARER = {"Authorization": f"Bearer {CONSOLE}"}
NUMBER = "+15550001111"



@asynccontextmanager
async def stack(tmp_path, **settings):
    emu = RestCore(ACCOUNT, TWILIO_TOKEN, clock=lambda: 1_700_000_000.0, rng=random.Random(1),
                   numbers=[parse_number(f"{NUMBER}=https://old.example/voice"),
                            parse_number("+15550002222=https://other.example/voice")])
    async with serve_rest(emu) as api_url:
        config = {"openai_api_key": "sk-x", "port": 0, "database_path": tmp_path / "b.sqlite3",
                  "console_token": CONSOLE, "twilio_account_sid": ACCOUNT, "twilio_auth_token": TWILIO_TOKEN,
                  "twilio_api_url": api_url, **settings}
        async with running_bridge(Settings(_env_file=None, **config)) as (app, base):
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                yield emu, app, base, http


async def test_list_then_point_a_number_here(tmp_path, caplog):
    caplog.set_level(logging.INFO, "callsim.bridge.numbers")
    async with stack(tmp_path) as (emu, app, base, http):
        listed = (await http.get("/api/numbers", headers=BEARER)).json()
        assert listed["webhook_url"] == f"{base}/incoming-call"
        assert [(n["phone_number"], n["voice_url"], n["points_here"]) for n in listed["numbers"]] == [
            (NUMBER, "https://old.example/voice", False), ("+15550002222", "https://other.example/voice", False)]
        sid = listed["numbers"][0]["sid"]
        assert sid == number_sid(ACCOUNT, NUMBER)

        r = await http.post(f"/api/numbers/{sid}/point-here", headers=BEARER)
        assert r.status_code == 200, r.text
        assert r.json()["voice_url"] == f"{base}/incoming-call" and r.json()["points_here"] is True
        # the emulator now routes the number's calls to this bridge; the other number is untouched
        assert emu.numbers[NUMBER].voice_url == f"{base}/incoming-call"
        assert emu.numbers[NUMBER].voice_method == "POST"
        assert emu.numbers["+15550002222"].voice_url == "https://other.example/voice"

        after = (await http.get("/api/numbers", headers=BEARER)).json()
        assert [n["points_here"] for n in after["numbers"]] == [True, False]
        (change,) = after["changes"]
        assert change["by"] == "bearer token from 127.0.0.1" and change["voice_url_before"] == "https://old.example/voice"
        assert change["at"].endswith("+00:00")
    (line,) = [r.getMessage() for r in caplog.records if r.name == "callsim.bridge.numbers"]
    assert f"phone number {NUMBER} ({sid}): voice webhook https://old.example/voice -> {base}/incoming-call" in line
    assert "by bearer token from 127.0.0.1 at " in line


async def test_unknown_or_malformed_sid(tmp_path):
    async with stack(tmp_path) as (_emu, _app, _base, http):
        missing = await http.post(f"/api/numbers/PN{'0' * 32}/point-here", headers=BEARER)
        malformed = await http.post("/api/numbers/CA123/point-here", headers=BEARER)
    assert missing.status_code == 404 and "no such number" in missing.json()["error"]
    assert malformed.status_code == 400


async def test_the_console_token_guards_it(tmp_path):
    async with stack(tmp_path) as (emu, _app, _base, http):
        sid = number_sid(ACCOUNT, NUMBER)
        assert (await http.get("/api/numbers")).status_code == 401
        assert (await http.get("/api/numbers", headers={"Authorization": "Bearer wrong"})).status_code == 401
        assert (await http.post(f"/api/numbers/{sid}/point-here")).status_code == 401
    assert emu.numbers[NUMBER].voice_url == "https://old.example/voice"
    async with stack(tmp_path, console_token=None) as (_emu, _app, _base, http):
        assert (await http.get("/api/numbers", headers=BEARER)).status_code == 404


async def test_not_configured_and_twilio_refusing(tmp_path):
    async with stack(tmp_path, twilio_account_sid=None) as (_emu, _app, _base, http):
        r = await http.get("/api/numbers", headers=BEARER)
    assert r.status_code == 503 and "TWILIO_ACCOUNT_SID" in r.json()["error"]
    async with stack(tmp_path, twilio_account_sid="AC" + "0" * 32) as (_emu, _app, _base, http):
        r = await http.get("/api/numbers", headers=BEARER)  # the emulator refuses another account
    assert r.status_code == 502 and "listing numbers" in r.json()["error"]


def test_settings_check_the_account_sid_and_the_api_url():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="32 hex digits"):
        Settings(_env_file=None, twilio_account_sid="AC123")
    with pytest.raises(ValidationError, match="twilio_api_url must be"):
        Settings(_env_file=None, twilio_api_url="ftp://api.example")
    assert Settings(_env_file=None, twilio_account_sid=" ").twilio_account_sid is None
    assert Settings(_env_file=None, twilio_api_url="http://127.0.0.1:9/").twilio_api_url == "http://127.0.0.1:9"
    assert Settings(_env_file=None).twilio_api_url == "https://api.twilio.com"


async def test_a_2xx_that_is_no_json_is_a_502_naming_the_request(tmp_path):
    """twilio's parser raising ValueError on a body it cannot read is Twilio failing (502 with one
    line), not the bridge failing (500)."""
    from tests.bridge.test_transfer import not_json_api

    async with not_json_api() as api_url:
        config = {"openai_api_key": "sk-x", "port": 0, "database_path": tmp_path / "b.sqlite3",
                  "console_token": CONSOLE, "twilio_account_sid": ACCOUNT, "twilio_auth_token": TWILIO_TOKEN,
                  "twilio_api_url": api_url}
        async with running_bridge(Settings(_env_file=None, **config)) as (_app, base):
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                r = await http.get("/api/numbers", headers=BEARER)
    assert r.status_code == 502, r.text
    assert r.json()["error"] == f"listing numbers: unexpected answer from {api_url}: JSONDecodeError"
