"""MCP over streamable HTTP at ``/mcp`` in a real bridge on 127.0.0.1, with the SDK's own client:
a call placed through the bridge by callsim's caller (mock OpenAI behind it) is found by its
number and read back; without the console token the endpoint answers 401, unset it is 404."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager

import httpx
import httpx2
import pytest
from callsim.bridge.server import running_bridge
from callsim.bridge.settings import Settings
from callsim.simulator.audio.utterances import default_bank
from callsim.simulator.caller.script import Hangup, Pause, Say, WaitForReply
from callsim.simulator.caller.trio_driver import place_call
from callsim.simulator.caller.webhook import CallParties
from callsim.simulator.mock.behaviour import Behaviour, ThinkTime
from callsim.simulator.mock.server import MockConfig, running_mock
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

KEY = "sk-test-bridge"
TOKEN = "console-secret-" + "x" * 24
CALLER = "+14155550142"


@asynccontextmanager
async def stack(tmp_path, **settings):
    cfg = MockConfig(api_key=KEY, behaviour=Behaviour(think=ThinkTime("fixed", 200.0), seed=7))
    async with running_mock(cfg) as mock:
        s = Settings(_env_file=None, openai_api_key=KEY, openai_realtime_url=mock.realtime_url, port=0,
                     database_path=tmp_path / "bridge.sqlite3", **settings)
        async with running_bridge(s) as (app, base):
            yield mock, app, base


def mcp_client(base: str, token: str | None = TOKEN) -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Client(streamable_http_client(f"{base}/mcp", http_client=httpx2.AsyncClient(headers=headers)),
                  read_timeout_seconds=20)


async def test_mcp_over_http_finds_the_call_just_made(tmp_path):
    async with stack(tmp_path, console_token=TOKEN) as (mock, app, base):
        parties = CallParties.new(from_=CALLER)
        result = await place_call(base + "/incoming-call", [Pause(300), Say("caller_greeting"), WaitForReply(),
                                                            Hangup()], parties=parties)
        assert result.ok, result.error
        assert await app.wait_idle(2.0)
        async with mcp_client(base) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert {"list_conversations", "search_conversations", "get_conversation"} <= tools

            found = await client.call_tool("search_conversations", {"phone_number": CALLER})
            assert not found.is_error, found.content
            (summary,) = found.structured_content["conversations"]
            assert summary["call_sid"] == parties.call_sid and summary["status"] == "completed"

            conv = (await client.call_tool("get_conversation", {"call_sid": parties.call_sid})).structured_content
            assert conv["from_number"] == CALLER and conv["ended_at"]
            said = [(t["role"], t["text"]) for t in conv["transcript"]]
            assert ("caller", default_bank().get("caller_greeting").text) in said
            assert ("assistant", default_bank().get("assistant_short_reply").text) in said

            (resource,) = (await client.list_resources()).resources
            assert str(resource.uri) == f"conversation://{parties.call_sid}"
            (content,) = (await client.read_resource(resource.uri)).contents
            assert json.loads(content.text) == conv


async def test_mcp_without_the_token_is_401_and_with_a_wrong_one_too(tmp_path):
    async with stack(tmp_path, console_token=TOKEN) as (_mock, _app, base):
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                           "clientInfo": {"name": "t", "version": "0"}}}
        accept = {"Accept": "application/json, text/event-stream"}
        async with httpx.AsyncClient() as http:
            bare = await http.post(f"{base}/mcp", json=init, headers=accept)
            wrong = await http.post(f"{base}/mcp", json=init, headers={**accept, "Authorization": "Bearer nope"})
            cookie = await http.post(f"{base}/mcp", json=init, headers=accept,
                                     cookies={"callsim_console": "anything"})
            right = await http.post(f"{base}/mcp", json=init, headers={**accept, "Authorization": f"Bearer {TOKEN}"})
        assert bare.status_code == wrong.status_code == cookie.status_code == 401
        assert bare.headers["www-authenticate"].startswith("Bearer")
        assert right.status_code == 200
        with pytest.raises(Exception):  # the SDK client, too, gets nothing without the token
            async with mcp_client(base, token=None) as client:
                await client.list_tools()


async def test_mcp_is_404_when_no_console_token_is_set(tmp_path):
    async with stack(tmp_path) as (_mock, app, base):
        assert app.mcp is None
        async with httpx.AsyncClient() as http:
            r = await http.post(f"{base}/mcp", json={}, headers={"Authorization": f"Bearer {TOKEN}"})
            health = await http.get(f"{base}/health")
        assert r.status_code == 404
        assert health.status_code == 200
