"""bridge/mcp_server.py in process (the SDK's in-memory client): what a wrong call answers, and
that building the server leaves the host's logging alone."""

from __future__ import annotations

import logging

import pytest
import trio
from callsim.bridge.mcp_server import build_server
from callsim.bridge.store import AsyncStore, Store
from mcp import Client


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "m.sqlite3")
    yield AsyncStore(s, trio.CapacityLimiter(1))
    s.close()


def test_building_the_server_does_not_configure_the_root_logger(store, monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", logging.CRITICAL)
    build_server(store)
    assert root.handlers == [] and root.level == logging.CRITICAL


async def test_unknown_conversation_is_a_tool_error_and_a_resource_error(store):
    async with Client(build_server(store)) as client:
        missing = await client.call_tool("get_conversation", {"call_sid": "CA" + "0" * 32})
        assert missing.is_error and "no conversation" in missing.content[0].text
        assert (await client.list_resources()).resources == []
        with pytest.raises(Exception, match="no conversation"):
            await client.read_resource("conversation://CA" + "0" * 32)


async def test_resources_are_the_newest_hundred(store):
    for i in range(105):
        store.store.start_call(f"CA{i:032x}", None, "+15550000000", "+15550000001")
    async with Client(build_server(store)) as client:
        listed = (await client.list_resources()).resources
    assert len(listed) == 100
    assert str(listed[0].uri) == f"conversation://CA{104:032x}" and str(listed[-1].uri) == f"conversation://CA{5:032x}"
