"""What the browser tests share: Debian's chromium driven by Playwright (never a downloaded
browser), and servers kept running in a trio thread while the test's thread drives the page."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

import pytest
import trio

CHROMIUM = Path("/usr/bin/chromium")
T = TypeVar("T")


def playwright() -> tuple[Any, Any]:
    """``(sync_playwright, expect)``, or the test is skipped saying what is missing."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.skip("playwright is missing: pip install -e '.[test]' brings it")
    return sync_playwright, expect


def launch(pw: Any) -> Any:
    """The system chromium, headless."""
    return pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])


@contextmanager
def browser_page(**page_args: Any) -> Iterator[tuple[Any, Any]]:
    """``(page, expect)``: a new page of the headless system chromium, closed on the way out."""
    sync_playwright, expect = playwright()
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            yield browser.new_page(**page_args), expect
        finally:
            browser.close()


def sign_in(page: Any, expect: Any, base: str, token: str) -> None:
    """Sign in to the bridge's console at ``base`` with ``token``, as an operator does."""
    page.goto(base + "/console")
    page.fill("#token", token)
    page.click("button[type=submit]")
    expect(page.locator("#live-h")).to_be_visible()


class ServedInThread(Generic[T]):
    """``make()``'s async context manager entered in a trio thread of its own and kept open until
    :meth:`close`; what it yields is :attr:`value`. :attr:`nursery` (inside it) runs work the test
    hands over with :meth:`start_soon`; :meth:`run_sync` reads state on the trio thread."""

    def __init__(self, make: Callable[[], AbstractAsyncContextManager[T]], *, ready_s: float = 30) -> None:
        self._make = make
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(ready_s), "the servers did not start"
        if self.error:
            raise self.error

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported to the test's thread
            self.error = exc
            self._ready.set()

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with self._make() as value:
            self.value = value
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                self._ready.set()
                await self._stop.wait()
                nursery.cancel_scope.cancel()

    def start_soon(self, fn: Callable[[], Any]) -> None:
        trio.from_thread.run_sync(self.nursery.start_soon, fn, trio_token=self.token)

    def run_sync(self, fn: Callable[[], Any]) -> Any:
        return trio.from_thread.run_sync(fn, trio_token=self.token)

    def close(self) -> None:
        trio.from_thread.run_sync(self._stop.set, trio_token=self.token)
        self._thread.join(30)
