"""The operator console in a real browser while callsim's caller places calls through the bridge.

Headless Chromium (Debian's ``chromium``, driven by Playwright with that system browser: nothing is
downloaded) opens ``/console`` as an operator does: first without the token (401 and the login
form), then signed in. Meanwhile the fake caller calls the bridge (mock OpenAI behind it) with the
shipped ``barge_in`` and ``tool_call`` scenarios' scripts and mock behaviours, and the page must
show, live: the caller's words and the reply, the barge-in (the reply cut to what was heard), the
tool call with its arguments and result. A settings change made on the page during a call applies
to the next call, not the running one. The bridge and the calls run in a trio thread of their
own; the browser is driven from the test's thread. Screenshots go to the test's tmp_path (their
paths printed with ``pytest -s``); ``CALLSIM_UPDATE_SCREENSHOT=1`` also writes docs/console.png.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from callsim.simulator.caller.script import Hangup, Pause, Say, WaitForReply
from callsim.simulator.caller.trio_driver import place_call
from callsim.simulator.caller.webhook import CallParties
from callsim.simulator.mock.behaviour import Behaviour
from callsim.simulator.scenario import find_scenario

from tests.bridge.test_e2e import CONSOLE_TOKEN, stack
from tests.browser import ServedInThread, browser_page, playwright, sign_in

DOCS_PNG = Path(__file__).resolve().parents[2] / "docs" / "console.png"
FROM_BARGE, FROM_TOOL, FROM_NEXT = "+15550100001", "+15550100002", "+15550100003"
LIVE_S = 25_000  # ms: the page must show each thing while the call is still going, or soon after

pytestmark = pytest.mark.slow


class LiveBridge(ServedInThread):
    """Mock OpenAI + bridge running in a trio thread; calls are placed into its nursery."""

    def __init__(self, tmp_path: Path, behaviour: Behaviour) -> None:
        super().__init__(lambda: stack(tmp_path, behaviour))
        self.mock, self.app, self.base = self.value

    def call(self, steps: list[Any], from_: str) -> tuple[threading.Event, dict[str, Any]]:
        done, box = threading.Event(), {}

        async def run() -> None:
            try:
                box["result"] = await place_call(self.base + "/incoming-call", steps,
                                                 parties=CallParties.new(from_=from_))
            finally:
                done.set()

        self.start_soon(run)
        return done, box

    def sessions(self) -> list[dict[str, Any]]:
        return self.run_sync(lambda: [s.snapshot() for s in self.mock.sessions.values()])


def _shot(page, path: Path, record_property, name: str) -> None:
    page.screenshot(path=str(path), full_page=True)
    print(f"\nscreenshot: {path}")
    record_property(f"screenshot_{name}", str(path))


def test_console_shows_a_barge_in_live_and_refuses_without_the_token(tmp_path, record_property):
    playwright()  # skipped before the servers start when the browser is missing
    scenario = find_scenario("barge_in")
    live = LiveBridge(tmp_path, scenario.mock)
    try:
        with browser_page(viewport={"width": 1200, "height": 900}) as (page, expect):
            # without the token: the page and the APIs answer 401
            resp = page.goto(live.base + "/console")
            assert resp is not None and resp.status == 401
            expect(page.locator("#token")).to_be_visible()
            for path in ("/api/calls", "/api/conversations", "/api/settings", "/tools", "/api/feed"):
                assert page.request.get(live.base + path).status == 401, path
            page.fill("#token", "not the token")
            page.click("button[type=submit]")
            expect(page.locator("[role=alert]")).to_contain_text("Wrong token")
            _shot(page, tmp_path / "console-login.png", record_property, "login")

            sign_in(page, expect, live.base, CONSOLE_TOKEN)
            done, box = live.call(list(scenario.steps), FROM_BARGE)
            # the page follows the call by itself (nothing else is selected): caller and number first
            expect(page.locator("#calls tbody")).to_contain_text(FROM_BARGE, timeout=LIVE_S)
            expect(page.locator("#transcript li.caller").first).to_contain_text("weather like in Paris",
                                                                                 timeout=LIVE_S)
            assert not done.is_set()  # live: the call is still going
            expect(page.locator("#events")).to_contain_text("barge-in", timeout=LIVE_S)
            expect(page.locator("#events li.barge_in")).to_contain_text("reply cut at")
            # the long reply, cut to what the caller heard, then the barge-in's words
            cut = page.locator("#transcript li.assistant.truncated")
            expect(cut).to_contain_text("interrupted", timeout=LIVE_S)
            expect(cut.locator(".text")).to_contain_text("In Paris today")
            assert "take an umbrella" not in cut.locator(".text").inner_text()
            expect(page.locator("#transcript li.caller").nth(1)).to_contain_text("can I ask something else",
                                                                                  timeout=LIVE_S)
            expect(page.locator("#timeline .mark.barge_in")).to_have_count(1)
            _shot(page, tmp_path / "console-barge-in.png", record_property, "barge_in")
            assert done.wait(60)
            assert box["result"].ok, box["result"].error
            expect(page.locator("#call-status")).to_contain_text("ended", timeout=LIVE_S)
            # history finds it by number, and shows the cut reply as the store keeps it
            page.fill("#search input[name=number]", FROM_BARGE[-6:])
            page.click("#search button[type=submit]")
            expect(page.locator("#conversations tbody tr")).to_have_count(1)
            page.locator("#conversations tbody button").first.click()
            expect(page.locator("#conv-lines")).to_contain_text("interrupted")
    finally:
        live.close()


def test_console_shows_a_tool_call_and_settings_apply_to_the_next_call_only(tmp_path, record_property):
    playwright()  # skipped before the servers start when the browser is missing
    scenario = find_scenario("tool_call")
    live = LiveBridge(tmp_path, scenario.mock)
    try:
        with browser_page(viewport={"width": 1200, "height": 1000}) as (page, expect):
            sign_in(page, expect, live.base, CONSOLE_TOKEN)
            expect(page.locator("#tool-list")).to_contain_text("get_weather")
            expect(page.locator("#settings-form input[name=voice]")).to_have_value("marin")
            done, box = live.call(list(scenario.steps), FROM_TOOL)
            expect(page.locator("#events")).to_contain_text("tool call get_weather", timeout=LIVE_S)
            expect(page.locator("#events li.tool_call")).to_contain_text('"city"')
            expect(page.locator("#events li.tool_call")).to_contain_text("Paris")
            expect(page.locator("#events")).to_contain_text("tool result get_weather", timeout=LIVE_S)
            result_line = page.locator("#events li.tool_result")
            expect(result_line).to_contain_text("Paris")
            # while that call runs, the operator changes the voice for the next calls
            assert not done.is_set()
            page.fill("#settings-form input[name=voice]", "cedar")
            page.click("#settings-form button[type=submit]")
            expect(page.locator("#settings-msg")).to_contain_text("Saved (voice)")
            expect(page.locator("#transcript li.assistant")).to_contain_text("In Paris today", timeout=LIVE_S)
            _shot(page, tmp_path / "console-tool-call.png", record_property, "tool_call")
            if os.environ.get("CALLSIM_UPDATE_SCREENSHOT"):
                page.screenshot(path=str(DOCS_PNG), full_page=False)
            assert done.wait(60)
            assert box["result"].ok, box["result"].error
            # the next call gets the new voice; the page shows it when it follows that call
            done2, box2 = live.call([Pause(200), Say("caller_greeting"), WaitForReply(), Hangup()], FROM_NEXT)
            page.locator("#calls tbody").get_by_text(FROM_NEXT).click(timeout=LIVE_S)
            expect(page.locator("#events")).to_contain_text("voice cedar", timeout=LIVE_S)
            assert done2.wait(60)
        voices = {s["session"]["audio"]["output"]["voice"] for s in live.sessions()}
        assert voices == {"marin", "cedar"}  # the running call kept its voice
    finally:
        live.close()
