"""``callsim bridge mcp``: the conversation history over MCP on stdio, driven by the SDK's own
client in a subprocess, as a desktop assistant runs it, beside a store that is still being written."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from callsim.bridge.store import Store
from mcp import Client, StdioServerParameters

CALLER = "+14155550123"


@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / "bridge.sqlite3"
    s = Store(path)
    s.start_call("CA" + "1" * 32, "MZ1", "+442071838750", "+15005550001")
    s.put_utterance("CA" + "1" * 32, "i1", "caller", "Hello from London")
    s.end_call("CA" + "1" * 32, "completed")
    s.start_call("CA" + "2" * 32, "MZ2", CALLER, "+15005550001")
    s.put_utterance("CA" + "2" * 32, "i1", "caller", "What's the weather in Paris?")
    s.put_utterance("CA" + "2" * 32, "i2", "assistant", "Sunny, twenty", truncated=True, audio_end_ms=900)
    yield path, s  # left open: the MCP server reads beside a live writer
    s.close()


def params(*args: str, env: dict[str, str] | None = None) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "callsim.bridge", "mcp", *args], env=env)


async def test_stdio_tools_search_fetch_and_resources(store_path):
    path, writer = store_path
    sid = "CA" + "2" * 32
    # SQLite's data_version, read on the writer's connection, moves only when ANOTHER connection commits
    version = writer._conn.execute("PRAGMA data_version").fetchone()[0]
    async with Client(params("--database", str(path)), read_timeout_seconds=20) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert tools == {"list_conversations", "search_conversations", "get_conversation"}

        found = await client.call_tool("search_conversations", {"phone_number": "415 555 0123"})
        assert not found.is_error
        assert [c["call_sid"] for c in found.structured_content["conversations"]] == [sid]

        conv = (await client.call_tool("get_conversation", {"call_sid": sid})).structured_content
        assert conv["from_number"] == CALLER and conv["status"] == "active"
        assert [(t["role"], t["text"], t["interrupted"]) for t in conv["transcript"]] == [
            ("caller", "What's the weather in Paris?", False), ("assistant", "Sunny, twenty", True)]
        assert conv["transcript"][1]["heard_ms"] == 900

        by_text = await client.call_tool("search_conversations", {"text": "london", "since": "2000-01-01"})
        assert [c["from_number"] for c in by_text.structured_content["conversations"]] == ["+442071838750"]
        bad = await client.call_tool("search_conversations", {"since": "last tuesday"})
        assert bad.is_error and "ISO 8601" in bad.content[0].text

        listed = (await client.list_resources()).resources
        assert [str(r.uri) for r in listed] == [f"conversation://{sid}", "conversation://CA" + "1" * 32]

        writer.put_utterance(sid, "i3", "caller", "Thanks, bye")  # the bridge writes on meanwhile
        (content,) = (await client.read_resource(f"conversation://{sid}")).contents
        assert json.loads(content.text)["transcript"][-1]["text"] == "Thanks, bye"
    # read-only: the server committed nothing to the store, while the writer went on writing
    assert writer._conn.execute("PRAGMA data_version").fetchone()[0] == version
    assert len(writer.get_conversation(sid)["utterances"]) == 3


async def test_stdio_reads_database_path_from_the_environment(store_path, tmp_path):
    path, _ = store_path
    async with Client(params("--env-file", str(tmp_path / "none.env"), env={"DATABASE_PATH": str(path)}),
                      read_timeout_seconds=20) as client:
        listed = await client.call_tool("list_conversations", {"limit": 1})
        assert [c["call_sid"] for c in listed.structured_content["conversations"]] == ["CA" + "2" * 32]


def test_missing_store_is_one_line_and_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "callsim.bridge", "mcp", "--database", str(tmp_path / "no.db")],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 2
    assert r.stderr.startswith("python -m callsim.bridge mcp: no transcript store at ")
    assert not (tmp_path / "no.db").exists()
    assert r.stdout == ""  # stdout is the protocol: nothing else may be written there


def test_bridge_help_names_the_subcommand():
    r = subprocess.run([sys.executable, "-m", "callsim.bridge", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "python -m callsim.bridge mcp" in r.stdout
