"""callsim.bridge.metrics: Prometheus text from plain-int counters, one registry per instance."""

from __future__ import annotations

import timeit

from callsim.bridge.metrics import BridgeMetrics
from prometheus_client.parser import text_string_to_metric_families


def samples(m: BridgeMetrics) -> dict[tuple[str, tuple], float]:
    body, ctype = m.render()
    assert ctype.startswith("text/plain; version=")  # Prometheus text exposition format
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_all_metrics_present_at_zero():
    m = BridgeMetrics()
    s = samples(m)
    for name in ["active_calls", "calls_total", "frames_in_total", "frames_out_total", "barge_ins_total",
                 "truncates_total", "busy_total"]:
        assert s[("callsim_bridge_" + name, ())] == 0
    body = m.render()[0].decode()
    assert "# TYPE callsim_bridge_errors_total counter" in body or "# TYPE callsim_bridge_errors counter" in body
    assert "# TYPE callsim_bridge_active_calls gauge" in body
    assert "callsim_bridge_tool_calls" in body


def test_counts_render():
    m = BridgeMetrics(error_kinds=["openai_connect"])
    m.call_started()
    m.call_started()
    m.call_ended()
    for _ in range(1000):
        m.frames_in += 1
    m.frames_out += 7
    m.barge_ins += 2
    m.truncates += 1
    for _ in range(3):
        m.busy()
    m.error("twilio_malformed")
    m.error("twilio_malformed")
    m.tool_call("get_weather", "ok")
    m.tool_call("get_weather", "timeout")
    m.tool_call("get_weather", "ok")
    s = samples(m)
    assert s[("callsim_bridge_active_calls", ())] == 1
    assert s[("callsim_bridge_calls_total", ())] == 2
    assert s[("callsim_bridge_frames_in_total", ())] == 1000
    assert s[("callsim_bridge_frames_out_total", ())] == 7
    assert s[("callsim_bridge_barge_ins_total", ())] == 2
    assert s[("callsim_bridge_truncates_total", ())] == 1
    assert s[("callsim_bridge_busy_total", ())] == 3
    assert s[("callsim_bridge_errors_total", (("kind", "openai_connect"),))] == 0
    assert s[("callsim_bridge_errors_total", (("kind", "twilio_malformed"),))] == 2
    assert s[("callsim_bridge_tool_calls_total", (("outcome", "ok"), ("tool", "get_weather")))] == 2
    assert s[("callsim_bridge_tool_calls_total", (("outcome", "timeout"), ("tool", "get_weather")))] == 1
    assert m.snapshot()["tool_calls"] == {"get_weather/ok": 2, "get_weather/timeout": 1}


def test_active_calls_never_negative():
    m = BridgeMetrics()
    m.call_ended()
    assert m.active_calls == 0


def test_instances_do_not_collide():
    a, b = BridgeMetrics(), BridgeMetrics()
    a.frames_in += 5
    assert samples(a)[("callsim_bridge_frames_in_total", ())] == 5
    assert samples(b)[("callsim_bridge_frames_in_total", ())] == 0


def test_hot_path_increment_is_cheap():
    m = BridgeMetrics()

    def bump() -> None:
        m.frames_in += 1

    per_call = min(timeit.repeat(bump, number=100_000, repeat=3)) / 100_000
    assert per_call < 1e-6  # generous: ~0.1 µs here vs ~1.1 µs for prometheus Counter.inc()


class FakeCall:
    def __init__(self, **stats: int) -> None:
        self.stats = {"frames_in": 0, "frames_out": 0, "barge_ins": 0, "truncates": 0, "truncate_errors": 0,
                      "marks_ignored": 0, "deltas_dropped": 0, "openai_errors": 0, "twilio_bad": 0,
                      "openai_bad": 0, "tool_calls": 0, **stats}


def test_live_call_stats_are_summed_at_scrape_and_folded_at_end():
    """The app keeps hot-path counts in each call's own stats dict (zero prometheus cost)."""
    m = BridgeMetrics()
    live: set[FakeCall] = set()
    m.bind_calls(lambda: live)
    a, b = FakeCall(frames_in=100, frames_out=40, barge_ins=1), FakeCall(frames_in=10, twilio_bad=2)
    for c in (a, b):
        live.add(c)
        m.call_started()
    m.frames_in += 1  # bridge-wide ints still count too
    s = samples(m)
    assert s[("callsim_bridge_frames_in_total", ())] == 111
    assert s[("callsim_bridge_frames_out_total", ())] == 40
    assert s[("callsim_bridge_errors_total", (("kind", "twilio_bad"),))] == 2
    assert samples(m) == s  # scraping twice does not double count

    a.stats["frames_in"] += 50
    a.stats["truncates"] += 1
    a.stats["deltas_dropped"] += 3
    a.stats["tool_calls"] += 1  # counted by tool_call(), not from stats
    live.discard(a)
    m.call_ended(a.stats)
    s = samples(m)
    assert s[("callsim_bridge_active_calls", ())] == 1
    assert s[("callsim_bridge_frames_in_total", ())] == 161
    assert s[("callsim_bridge_truncates_total", ())] == 1
    assert s[("callsim_bridge_call_deltas_dropped_total", ())] == 3
    assert not any(k[0] == "callsim_bridge_call_tool_calls_total" for k in s)

    live.discard(b)
    m.call_ended(b.stats)
    assert samples(m) == {**s, ("callsim_bridge_active_calls", ()): 0}  # totals survive the call
