"""Wire values in log lines (issue 18 item 8): no forged lines, bounded floods, always a name.

A ``callSid`` or DTMF digit holding a newline wrote an attacker's line into the
log; every bad message was one WARNING, unthrottled, up to 100 KB long; and
about half of the warnings named neither the call nor the peer. These tests
read the records the bridge's loggers really emit (``caplog``).
"""

from __future__ import annotations

import json
import logging
import re

import pytest
from callsim.bridge.call import CallCore
from callsim.bridge.logsafe import WIRE_LIMIT, WarnLimiter, wire
from callsim.bridge.realtime import SessionParams

from tests.bridge.callcore_kit import CALL_SID, MS, TwilioMsgs, oa, session_updated

PEER = "198.51.100.23:40404"
FORGED = "\nCRITICAL callsim.bridge: call CA00: operator password reset"

pytestmark = pytest.mark.usefixtures("bridge_logs")


@pytest.fixture
def bridge_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="callsim.bridge")
    return caplog


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The log as a file would hold it: one formatted record per line, split like a reader would."""
    fmt = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    return "\n".join(fmt.format(r) for r in caplog.records if r.name.startswith("callsim.bridge")).splitlines()


# ------------------------------------------------------------------ wire()


@pytest.mark.parametrize("value", ["1\n2", "a\r\nb", "x\u2028y", "\x1b[2J", "bidi\u202etxt", "nul\x00", "tab\t"])
def test_wire_escapes_what_could_break_or_fake_a_line(value: str) -> None:
    out = wire(value)
    assert out.isprintable() and "\n" not in out and "\r" not in out
    assert out != value


def test_wire_keeps_ordinary_text_and_bounds_long_values() -> None:
    assert wire("CA" + "f" * 32) == "CA" + "f" * 32
    assert wire("héllo wörld") == "héllo wörld"
    long = wire("x" * 100_000)
    assert long.startswith("x" * WIRE_LIMIT) and long.endswith("…(100000 chars)") and len(long) < WIRE_LIMIT + 20
    assert len(wire(b"\xff" * 100_000)) < 4 * WIRE_LIMIT + 20
    assert len(wire(list(range(100_000)))) <= WIRE_LIMIT + 1
    assert wire("a\\nb") == "a\\\\nb"  # an escape cannot be faked by sending one


def test_the_limiter_logs_a_burst_then_one_summary_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    lim = WarnLimiter(logging.getLogger("callsim.bridge.test"), "bad thing", burst=3, interval_ns=10 * 10**9)
    logged = [lim.warn(i * MS, "CA1", f"why {i}") for i in range(1000)]  # 1 s of floods
    assert logged == [True] * 3 + [False] * 997
    assert lim.warn(11 * 10**9, "CA1", "later") is False  # 10 s on: one summary line
    lim.flush(12 * 10**9, "CA1")
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs[:3] == ["call CA1: bad thing: why 0", "call CA1: bad thing: why 1", "call CA1: bad thing: why 2"]
    assert "more of these are counted" in msgs[3]
    assert msgs[4:] == ["call CA1: bad thing: 998 more suppressed (latest: later)"]
    assert lim.suppressed_total == 998


# ------------------------------------------------------------------ the call core


def test_a_newline_in_call_sid_or_digit_forges_no_line(bridge_logs: pytest.LogCaptureFixture) -> None:
    core = CallCore(SessionParams(), peer=PEER)
    tw = TwilioMsgs()
    start = json.loads(tw.start())
    start["start"]["callSid"] = CALL_SID + FORGED
    core.twilio_message(1 * MS, json.dumps(start))  # refused: not an id
    core.twilio_message(2 * MS, tw.start())
    core.twilio_message(3 * MS, tw.dtmf("7" + FORGED))
    core.twilio_message(4 * MS, json.dumps({"event": "bogus" + FORGED}))
    core.openai_opened(5 * MS)
    core.openai_message(6 * MS, oa("error" + FORGED))
    core.openai_message(7 * MS, oa("error", error={"code": "x" + FORGED, "message": FORGED}))
    core.openai_message(8 * MS, "not json" + FORGED)
    out = lines(bridge_logs)
    assert len(out) == len([r for r in bridge_logs.records if r.name.startswith("callsim.bridge")])
    # every line is a record of ours, naming a call; the forged text only ever inside one, escaped
    assert all(re.match(r"(INFO|WARNING) callsim\.bridge\.call: call (CA|\? \(peer )", line) for line in out), out
    assert sum("\\nCRITIC" in line for line in out) == 4, out  # shown, escaped, within its line
    assert any("DTMF: 7\\nCRITIC" in line for line in out), out


def test_ten_thousand_bad_messages_make_a_bounded_log(bridge_logs: pytest.LogCaptureFixture) -> None:
    core = CallCore(SessionParams(), peer=PEER)
    tw = TwilioMsgs()
    core.twilio_message(0, tw.start())
    core.openai_opened(1 * MS)
    core.openai_message(2 * MS, session_updated())
    bad = [json.dumps({"event": "x" * 100_000}), "{" * 50_000, json.dumps({"event": "media", "media": {"payload": 5}}),
           json.dumps({"event": "dtmf", "dtmf": {"digit": ["9" * 100_000]}}), b"\x00" * 100_000]
    t = 10 * MS
    for i in range(10_000):  # 10,000 in 20 s: 500 a second
        core.twilio_message(t, bad[i % len(bad)])
        core.openai_message(t, '{"type": "' + "y" * 100_000)
        t += 2 * MS
    core.twilio_closed(t)
    records = [r for r in bridge_logs.records if r.name.startswith("callsim.bridge")]
    n_bad = core.stats["twilio_bad"] + core.stats["openai_bad"]
    print(f"{n_bad} bad messages -> {len(records)} log records, longest {max(len(r.getMessage()) for r in records)}")
    assert core.stats["twilio_bad"] == core.stats["openai_bad"] == 10_000  # every one counted
    assert len(records) <= 2 * (5 + 1 + 20 // 10 + 1) + 3  # bursts, notices, one per 10 s, final counts
    assert max(len(r.getMessage()) for r in records) <= 400
    assert core.stats["log_suppressed"] == 2 * (10_000 - 5)
    flushed = [r.getMessage() for r in records if "more suppressed" in r.getMessage()]
    assert sum(int(m.split(": ")[2].split()[0]) for m in flushed) == 2 * (10_000 - 5)  # counts add up


def test_every_warning_names_the_call_or_before_start_the_peer(bridge_logs: pytest.LogCaptureFixture) -> None:
    core = CallCore(SessionParams(), peer=PEER)
    tw = TwilioMsgs()
    for msg in ("junk", json.dumps({"event": "media", "media": {"payload": "!!"}}), b"\x01"):
        core.twilio_message(1 * MS, msg)  # before start: only the peer is known
    core.twilio_message(2 * MS, json.dumps({"event": "start", "start": {"streamSid": 5}}))
    core.twilio_message(3 * MS, tw.start())
    core.twilio_message(4 * MS, "junk")
    core.openai_opened(5 * MS)
    core.openai_message(6 * MS, "junk")
    core.twilio_closed(7 * MS)
    records = [r for r in bridge_logs.records if r.levelno >= logging.INFO]
    assert records
    before = [r.getMessage() for r in records[:4]]
    assert all(f"peer {PEER}" in m for m in before), before
    assert all(CALL_SID in r.getMessage() for r in records[4:]), [r.getMessage() for r in records]
