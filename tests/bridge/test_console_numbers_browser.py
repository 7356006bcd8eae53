"""The console's Numbers section in a real browser, against callsim's Twilio emulator (never the
network): the account's numbers are listed with their voice webhooks, and "Point here" re-points
one at this bridge through the bridge's numbers API — the emulator's own record shows the change,
and the row then says so. Debian's chromium through Playwright, as in test_console_browser.py."""

from __future__ import annotations

import pytest

from tests.bridge.test_phone_numbers import CONSOLE, NUMBER, stack
from tests.browser import ServedInThread, browser_page, playwright, sign_in

pytestmark = pytest.mark.slow


def test_point_a_number_at_the_bridge_from_the_console(tmp_path):
    playwright()  # skipped before the servers start when the browser is missing
    served = ServedInThread(lambda: stack(tmp_path))
    try:
        emu, _app, base, _http = served.value
        webhook = base + "/incoming-call"
        with browser_page() as (page, expect):
            sign_in(page, expect, base, CONSOLE)
            row = page.locator(f"#numbers-table tr:has-text('{NUMBER}')")
            expect(row).to_contain_text("https://old.example/voice")
            expect(page.locator("#numbers-msg")).to_contain_text(webhook)
            page.on("dialog", lambda d: d.accept())
            row.get_by_role("button", name="Point here").click()
            expect(row).to_contain_text("points here")
            expect(row).to_contain_text(webhook)
            page.screenshot(path=str(tmp_path / "console-numbers.png"), full_page=True)
        voice_url = lambda number: served.run_sync(lambda: emu.numbers[number].voice_url)  # noqa: E731
        assert voice_url(NUMBER) == webhook  # the emulator's own record changed
        assert voice_url("+15550002222") == "https://other.example/voice"  # and only that one
    finally:
        served.close()
