"""The console's Numbers section in a real browser, against callsim's Twilio emulator (never the
network): the account's numbers are listed with their voice webhooks, and "Point here" re-points
one at this bridge through the bridge's numbers API — the emulator's own record shows the change,
and the row then says so. Debian's chromium through Playwright, as in test_console_browser.py."""

from __future__ import annotations

import threading

import pytest
import trio

from tests.bridge.test_console_browser import _playwright
from tests.bridge.test_phone_numbers import CONSOLE, NUMBER, stack

pytestmark = pytest.mark.slow


class Served:
    """The emulator + bridge of test_phone_numbers.stack, kept running in a trio thread."""

    def __init__(self, tmp_path) -> None:
        self._tmp = tmp_path
        self._ready, self.error = threading.Event(), None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(30), "the bridge did not start"
        if self.error:
            raise self.error

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with stack(self._tmp) as (emu, app, base, _http):
            self.emu, self.app, self.base = emu, app, base
            self._ready.set()
            await self._stop.wait()

    def voice_url(self, number: str) -> str:
        return trio.from_thread.run_sync(lambda: self.emu.numbers[number].voice_url, trio_token=self.token)

    def close(self) -> None:
        trio.from_thread.run_sync(self._stop.set, trio_token=self.token)
        self._thread.join(30)


def test_point_a_number_at_the_bridge_from_the_console(tmp_path, monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    sync_playwright, expect = _playwright()
    served = Served(tmp_path)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(served.base + "/console")
            page.fill("#token", CONSOLE)
            page.click("button[type=submit]")
            row = page.locator(f"#numbers-table tr:has-text('{NUMBER}')")
            expect(row).to_contain_text("https://old.example/voice")
            expect(page.locator("#numbers-msg")).to_contain_text(served.base + "/incoming-call")
            page.on("dialog", lambda d: d.accept())
            row.get_by_role("button", name="Point here").click()
            expect(row).to_contain_text("points here")
            expect(row).to_contain_text(served.base + "/incoming-call")
            page.screenshot(path=str(tmp_path / "console-numbers.png"), full_page=True)
            browser.close()
        assert served.voice_url(NUMBER) == served.base + "/incoming-call"  # the emulator's record changed
        assert served.voice_url("+15550002222") == "https://other.example/voice"  # only that one
    finally:
        served.close()
