"""``MockSession`` driven sans-IO: injected faults.

A fake nanosecond clock, no sockets, no sleeping (see ``Driver`` in conftest.py and the
helpers in session_helpers.py).
"""

from __future__ import annotations

import random

import pytest
from callsim.simulator.mock import errors
from callsim.simulator.mock.audio import fixture_audio
from callsim.simulator.mock.behaviour import Behaviour, Fault, ThinkTime

from .conftest import MS, T0
from .session_helpers import (
    LONG,
    SHORT,
    audio_of,
    configure,
    err,
    greet,
    since,
)

# ============================================================ 12. faults


def test_fault_fail_response_nth(drive):
    d = drive(Behaviour(think=ThinkTime("fixed", 100), faults=(Fault("fail_response", nth=2),), seed=24))
    configure(d)
    for _ in range(3):
        greet(d)
        d.settle()
    dones = d.of("response.done")
    assert [x["response"]["status"] for x in dones] == ["completed", "failed", "completed"]
    failed = dones[1]["response"]
    assert failed["status_details"] == {"type": "failed",
                                        "error": {"type": "server_error", "code": "injected_failure"}}
    assert failed["output"] == []
    created2 = d.of("response.created")[1]
    assert d.time_of(dones[1]) == d.time_of(created2) + 100 * MS  # fails when the output would start
    assert len(audio_of(d.events)) == 2 * len(fixture_audio(SHORT, "pcmu"))


@pytest.mark.parametrize(("code", "want"), [(None, err(None, errors.server_error()["error"]["message"],
                                                        type_="server_error")),
                                            ("rate_limit_exceeded", err("rate_limit_exceeded", "Injected fault",
                                                                        type_="server_error"))])
def test_fault_error_event(drive, code, want):
    d = drive(Behaviour(faults=(Fault("error", after_ms=500, code=code),), seed=25))
    assert d.s.next_deadline_ns() == T0 + 500 * MS
    assert d.advance_ms(499) == []
    out = d.advance_ms(1)
    assert [e["error"] for e in out] == [want] and d.time_of(out[0]) == T0 + 500 * MS
    assert d.s.close_request is None
    greet(d)
    d.settle()
    assert d.one("response.done")["response"]["status"] == "completed"


def test_fault_expire_mid_response(drive):
    d = drive(Behaviour(think=ThinkTime("fixed", 0), replies=(LONG,), faults=(Fault("expire", after_ms=1000),),
                        seed=26))
    configure(d)
    greet(d)
    d.advance_ms(990)
    n_before = len(d.of("response.output_audio.delta"))
    out = d.advance_ms(10)
    assert d.types(out) == ["error"]
    assert out[0]["error"] == err("session_expired", "Your session hit the maximum duration of 60 minutes.")
    assert d.time_of(out[0]) == T0 + 1000 * MS
    assert d.s.close_request == (1001, "Your session hit the maximum duration of 60 minutes.")
    assert d.s.next_deadline_ns() is None and d.settle() == []
    assert d.send({"type": "response.create"}) == []
    assert 0 < n_before < len(fixture_audio(LONG, "pcmu")) // 800


def test_fault_slow_start(drive):
    d = drive(Behaviour(faults=(Fault("slow_start", after_ms=700),), seed=27), open=False)
    assert d.open() == []
    assert d.s.next_deadline_ns() == T0 + 700 * MS
    out = d.advance_ms(700)
    assert d.types(out) == ["session.created"] and d.time_of(out[0]) == T0 + 700 * MS


@pytest.mark.parametrize("kind", ["drop", "close", "stall"])
def test_fault_mid_response(drive, kind):
    faults = (Fault(kind, after_ms=50, nth=2),) if kind != "close" else (Fault(kind, after_ms=50, nth=2, code=4001),)
    d = drive(Behaviour(think=ThinkTime("fixed", 100), replies=(LONG,), faults=faults, seed=28))
    configure(d)
    greet(d)
    d.settle()  # response 1 is untouched
    assert d.one("response.done")["response"]["status"] == "completed"
    assert (d.s.abort_request, d.s.close_request, d.s.stalled) == (False, None, False)
    n = len(d.events)
    d.send({"type": "response.create"})
    d.settle()
    ev = since(d, n)
    first = d.of("response.output_audio.delta", ev)[0]
    t_fault = d.time_of(first) + 50 * MS
    # deltas at +0, +20, +40 ms; the fault at +50 stops the rest
    assert len(d.of("response.output_audio.delta", ev)) == 3
    assert max(d.times[n:]) <= t_fault
    assert [(x["t_ns"], x["type"]) for x in d.s.log if x["dir"] == "fault"] == [(t_fault, kind)]
    assert (d.s.abort_request, d.s.close_request, d.s.stalled) == {
        "drop": (True, None, False), "close": (False, (4001, "injected fault"), False),
        "stall": (False, None, True)}[kind]
    assert d.s.next_deadline_ns() is None
    assert d.send({"type": "response.cancel"}) == []
    assert d.advance_ms(10_000) == []
    if kind == "stall":
        assert not d.s.advance(d.t + 1)
    d.s.on_closed(d.t, "abort" if kind == "drop" else "client")
    rec = d.s.response_records[-1]
    assert (rec["status"], rec["reason"], rec["audio_ms_sent"]) == ("incomplete", "connection_closed", 300)


def test_fault_close_default_code(drive):
    d = drive(Behaviour(think=ThinkTime("fixed", 0), faults=(Fault("close", after_ms=0, nth=0),), seed=29))
    configure(d)
    greet(d)
    d.settle()
    assert d.s.close_request == (1011, "injected fault")
    assert len(d.of("response.output_audio.delta")) == 1  # the first delta, then the fault at +0


def test_fault_parse_and_applies(drive):
    assert Fault.parse("refuse:status=429") == Fault("refuse", status=429)
    assert Fault.parse("drop:after_ms=500,nth=2") == Fault("drop", after_ms=500.0, nth=2)
    assert Fault.parse("expire:after_s=2.5") == Fault("expire", after_ms=2500.0)
    assert Fault.parse("close:code=4001") == Fault("close", code=4001)
    assert Fault.parse("error:code=rate_limit_exceeded,after_ms=10") == Fault("error", after_ms=10.0,
                                                                              code="rate_limit_exceeded")
    assert Fault.parse("stall: sessions=1+3 , prob=0.5") == Fault("stall", sessions=(1, 3), prob=0.5)
    assert Fault.parse("slow_start") == Fault("slow_start")
    for bad in ("bogus", "drop:after_ms", "drop:speed=2", "drop:nth=x"):
        with pytest.raises(ValueError):
            Fault.parse(bad)

    only = Fault("drop", sessions=(2, 4))
    assert [only.applies(i, random.Random(0)) for i in range(1, 6)] == [False, True, False, True, False]
    half = Fault("drop", prob=0.5)
    a = [half.applies(1, random.Random(f"s{i}")) for i in range(400)]
    b = [half.applies(1, random.Random(f"s{i}")) for i in range(400)]
    assert a == b and 140 < sum(a) < 260
    # through sessions: which ones a seeded fault hits is reproducible per (seed, index)
    beh = Behaviour(faults=(Fault("drop", prob=0.5), Fault("stall", sessions=(3,))), seed=77)

    def hit(i: int) -> tuple[str, ...]:
        return tuple(f.kind for f in drive(beh, index=i, open=False).s.faults)

    first = [hit(i) for i in range(1, 21)]
    assert first == [hit(i) for i in range(1, 21)]
    assert {"drop" in h for h in first} == {True, False}
    assert [("stall" in h) for h in first] == [i == 3 for i in range(1, 21)]


@pytest.mark.parametrize(("fault", "kind", "at_ms"), [
    (Fault("error", after_ms=500), "error", 500),
    (Fault("expire", after_ms=800), "expire", 800),
    (Fault("slow_start", after_ms=700), "slow_start", 0),
])
def test_faults_timed_from_the_open_are_logged_when_they_strike(drive, fault, kind, at_ms):
    """Every injected fault is in the session's log with its time, as the mid-response ones are,
    so that the report can mark it on the call's timeline (charts.faults reads the log)."""
    from callsim.simulator.measure.charts import faults as fault_markers

    d = drive(Behaviour(faults=(fault,), seed=31))
    d.advance_ms(1000)
    logged = [e for e in d.s.log if e["dir"] == "fault"]
    assert [(e["type"], e["t_ns"]) for e in logged] == [(kind, T0 + at_ms * MS)]
    assert [(m.t_ns, m.label) for m in fault_markers(d.s.snapshot())] == [(T0 + at_ms * MS, kind)]
