"""report.html opened in a real browser, as a CI user opens the artifact.

A real run (``callsim demo`` in a subprocess, one passing and one failing
scenario) writes the report; headless Chromium (Debian's ``chromium``, driven
through Playwright with that system browser: nothing is downloaded) opens it
and checks what a person sees: the failure first, no Python spelling, every
audio player loading with the length of what the caller heard. The full-page
screenshot is saved next to the test's files and its path printed (``pytest
-s``) and attached as the ``screenshot`` property (junit).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import soundfile as sf

from tests.browser import launch, playwright

CALLSIM = [sys.executable, "-m", "callsim.simulator"]

# Python's spelling of values, which must never reach the reader
PY_REPR = re.compile(r"\{'|\['|\bNone\b|\bTrue\b|\bFalse\b")

SCENARIO = """
name = "{name}"
description = "{description}"

[caller]
steps = [
  {{ pause_ms = 200 }},
  {{ say = "caller_greeting" }},
  {{ wait_for_reply = true }},
  {{ hangup = true }},
]

[mock]
replies = ["assistant_short_reply"]
think = 100

[expect]
turn_latency_p95_ms = {limit}
end_reason = "hangup"
"""

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    sync_playwright, _ = playwright()
    base = tmp_path_factory.mktemp("browser")
    scenarios = base / "scenarios"
    scenarios.mkdir()
    (scenarios / "quick_answer.toml").write_text(SCENARIO.format(
        name="quick_answer", description="One question, one short reply", limit=5000))
    (scenarios / "impossible_latency.toml").write_text(SCENARIO.format(
        name="impossible_latency", description="A turn latency limit no bridge meets", limit=1))
    out = base / "report"
    proc = subprocess.run(CALLSIM + ["demo", "--scenarios", str(scenarios), "--report", str(out)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the impossible limit fails the run
    return out, json.loads((out / "report.json").read_bytes()), sync_playwright


def test_report_in_chromium(report, tmp_path, record_property):
    out, doc, sync_playwright = report
    by_anchor = {f"call-{c['scenario']}-{c['call_index']}": c for c in doc["calls"]}
    assert sorted(c["status"] for c in doc["calls"]) == ["failed", "passed"]
    shot = tmp_path / "report.png"
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto((out / "report.html").as_uri())

            # the failure first: the banner is the body's first element and names the failed call
            first = page.evaluate("""() => { const e = document.body.firstElementChild;
                                     return {id: e.id, cls: e.className, text: e.innerText}; }""")
            assert first["id"] == "verdict" and "bad" in first["cls"].split()
            assert "1 of 2 call(s) failed" in first["text"]
            assert "impossible_latency · call 0" in first["text"] and "quick_answer" not in first["text"]
            assert re.search(r"turn_latency_p95_ms: measured \d+ ms, limit p95 ≤ 1 ms", first["text"])
            href = page.get_attribute("#verdict a", "href")
            assert href == "#call-impossible_latency-0" and page.locator(href).count() == 1

            # no Python spelling anywhere a reader looks
            text = page.evaluate("() => document.body.innerText")
            assert not PY_REPR.search(text), text[max(0, PY_REPR.search(text).start() - 80):][:200]
            assert "call_figures_limit" not in text

            # every player loads, with the length of the call's heard.wav
            page.wait_for_function(
                "() => [...document.querySelectorAll('audio')].every(a => a.readyState >= 1 || a.error)",
                timeout=15_000)
            players = page.evaluate("""() => [...document.querySelectorAll('audio')].map(a => ({
                section: a.closest('section').id, ready: a.readyState, duration: a.duration,
                error: a.error && a.error.code}))""")
            assert sorted(x["section"] for x in players) == sorted(by_anchor)
            for x in players:
                assert x["error"] is None and x["ready"] >= 1, x
                info = sf.info(str(out / by_anchor[x["section"]]["artifacts"]["heard.wav"]))
                assert x["duration"] == pytest.approx(info.frames / info.samplerate, abs=0.1), x

            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    print(f"\nscreenshot of report.html: {shot}")
    record_property("screenshot", str(shot))
    assert shot.stat().st_size > 10_000
