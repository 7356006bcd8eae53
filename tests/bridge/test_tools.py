"""callsim.bridge.tools: schemas, never-raising calls, timeouts, and the two example tools."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime

import pytest
import trio
from callsim.bridge.tools import WEATHER, ToolRegistry, default_tools

FIXED = datetime(2025, 1, 15, 12, 30, 0, tzinfo=UTC)


def out(s: str):
    return json.loads(s)


def test_default_schemas():
    reg = default_tools()
    schemas = reg.schemas()
    assert [s["name"] for s in schemas] == ["get_current_time", "get_weather"]
    for s in schemas:
        assert set(s) == {"type", "name", "description", "parameters"}
        assert s["type"] == "function" and s["parameters"]["type"] == "object" and s["description"]
    assert schemas[1]["parameters"]["required"] == ["city"]
    json.dumps(schemas)  # serialisable as-is into session.update


def test_register_validation():
    reg = ToolRegistry()
    reg.register("t", "d", {"type": "object", "properties": {}}, lambda: 1)
    with pytest.raises(ValueError):
        reg.register("t", "d", {}, lambda: 1)
    with pytest.raises(ValueError):
        reg.register("bad name!", "d", {}, lambda: 1)
    assert "t" in reg and len(reg) == 1


async def test_current_time():
    reg = default_tools(now=lambda: FIXED)
    assert out(await reg.call("get_current_time", "{}", 5)) == {"timezone": "UTC", "iso": "2025-01-15T12:30:00+00:00"}
    assert out(await reg.call("get_current_time", "", 5))["timezone"] == "UTC"
    assert out(await reg.call("get_current_time", '{"timezone": "America/New_York"}', 5)) == {
        "timezone": "America/New_York", "iso": "2025-01-15T07:30:00-05:00"}
    assert out(await reg.call("get_current_time", '{"timezone": "Asia/Kolkata"}', 5))["iso"] == "2025-01-15T18:00:00+05:30"
    for bad in ("Mars/Olympus", "../../etc/passwd"):
        err = out(await reg.call("get_current_time", json.dumps({"timezone": bad}), 5))
        assert "unknown timezone" in err["error"]


async def test_current_time_real_clock():
    iso = out(await default_tools().call("get_current_time", '{"timezone": "Europe/Paris"}', 5))["iso"]
    assert abs((datetime.fromisoformat(iso) - datetime.now(UTC)).total_seconds()) < 5


async def test_weather():
    reg = default_tools()
    assert len(WEATHER) == 8
    paris = out(await reg.call("get_weather", '{"city": "Paris"}', 5))
    assert paris["city"] == "Paris" and isinstance(paris["temperature_c"], int) and paris["conditions"]
    assert out(await reg.call("get_weather", '{"city": "  new   YORK "}', 5))["city"] == "New York"
    err = out(await reg.call("get_weather", '{"city": "Atlantis"}', 5))
    assert "no weather data for 'Atlantis'" in err["error"] and "Paris" in err["error"]


@pytest.mark.parametrize("name,args,fragment", [
    ("nope", "{}", "unknown tool"),
    ("get_weather", "{not json", "not valid JSON"),
    ("get_weather", "[1, 2]", "must be a JSON object"),
    ("get_weather", "{}", "bad arguments"),  # missing required city
    ("get_weather", '{"city": "Paris", "extra": 1}', "bad arguments"),
])
async def test_bad_calls_return_errors(name, args, fragment):
    err = out(await default_tools().call(name, args, 5))
    assert fragment in err["error"]


async def test_tool_exception_becomes_error_output():
    reg = ToolRegistry()

    def boom() -> None:
        raise RuntimeError("database unreachable")

    async def aboom() -> None:
        await trio.sleep(0)
        raise KeyError("k")

    reg.register("boom", "d", {"type": "object"}, boom)
    reg.register("aboom", "d", {"type": "object"}, aboom)
    assert out(await reg.call("boom", "{}", 5)) == {"error": "boom failed: RuntimeError: database unreachable"}
    assert "KeyError" in out(await reg.call("aboom", "{}", 5))["error"]


async def test_sync_tools_run_in_a_thread():
    reg = ToolRegistry()
    main = threading.get_ident()
    reg.register("where", "d", {"type": "object"}, lambda: threading.get_ident() != main)
    assert out(await reg.call("where", "{}", 5)) is True


async def test_results_are_json():
    reg = ToolRegistry()
    reg.register("s", "d", {"type": "object"}, lambda: "héllo")
    reg.register("d", "d", {"type": "object"}, lambda: {"when": FIXED})
    assert await reg.call("s", "{}", 5) == '"héllo"'
    assert out(await reg.call("d", "{}", 5)) == {"when": "2025-01-15 12:30:00+00:00"}


async def test_async_timeout(autojump_clock):
    reg = ToolRegistry()

    async def slow() -> str:
        await trio.sleep(60)
        return "too late"

    reg.register("slow", "d", {"type": "object"}, slow)
    t0 = trio.current_time()
    real0 = time.monotonic()
    assert out(await reg.call("slow", "{}", 5.0)) == {"error": "slow timed out after 5 s"}
    assert trio.current_time() - t0 == pytest.approx(5.0)
    assert time.monotonic() - real0 < 1.0  # autojump: instant


async def test_sync_timeout_abandons_thread(autojump_clock):
    reg = ToolRegistry()
    release = threading.Event()
    reg.register("stuck", "d", {"type": "object"}, lambda: release.wait(30))
    try:
        assert out(await reg.call("stuck", "{}", 2.5)) == {"error": "stuck timed out after 2.5 s"}
    finally:
        release.set()


async def test_outer_cancellation_propagates():
    reg = ToolRegistry()

    async def slow() -> None:
        await trio.sleep(60)

    reg.register("slow", "d", {"type": "object"}, slow)
    with trio.move_on_after(0.01) as scope:
        await reg.call("slow", "{}", 30)
    assert scope.cancelled_caught  # the caller's cancel is not turned into an output


async def test_a_failing_tool_is_logged_with_the_call_and_a_wire_safe_name(caplog):
    reg = ToolRegistry()

    def boom() -> None:
        raise RuntimeError("line one\nFORGED line")

    reg.register("boom", "d", {"type": "object"}, boom)
    with caplog.at_level("WARNING", logger="callsim.bridge"):
        await reg.call("boom", "{}", 5, call_tag="CA123")
    [rec] = [r for r in caplog.records if "failed" in r.getMessage()]
    assert rec.getMessage().startswith("call CA123: tool boom failed")
    assert "\n" not in rec.getMessage()


async def test_made_up_tool_names_do_not_grow_the_metric_labels(tmp_path):
    """The tool's name comes from the model: a thousand invented names are one label."""
    from callsim.bridge.app import BridgeApp
    from callsim.bridge.settings import Settings

    app = BridgeApp(Settings(_env_file=None, openai_api_key="sk-x", database_path=tmp_path / "b.sqlite3"))
    for i in range(1000):
        assert "unknown tool" in out(await app.run_tool(f"invented_{i}", "{}"))["error"]
    await app.run_tool("get_weather", '{"city": "Paris"}')
    assert set(app.metrics.tool_calls) == {("unknown", "error"), ("get_weather", "ok")}
