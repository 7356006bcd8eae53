"""Verdicts that do not depend on what happened before, nor on when a bridge opens its OpenAI socket.

* A call that never reaches OpenAI must not leave its scenario's mock behaviour queued for the next
  scenario (issue: one failed call silently shifted every later scenario's replies and faults).
* Calls pair with mock sessions by the line tag their idle line carries, so a bridge that opens
  OpenAI long before it accepts Twilio's socket, with several calls started in the same instant,
  pairs every call with its own session; a bridge that converts the audio (no tag gets through)
  is paired by causality and content, and says so.
"""

from __future__ import annotations

import socket

from callsim.bridge.server import (
    embedded,  # a bridge under test, reached over the wire only
)
from callsim.simulator import runner
from callsim.simulator.mock.server import MockConfig, running_mock
from callsim.simulator.runner import run_embedded, run_external, run_with_mock
from callsim.simulator.scenario import find_scenario

from tests.foreign.launch import running_foreign_bridge


def _closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return f"http://127.0.0.1:{port}/incoming-call"


async def test_a_failed_call_changes_nothing_for_the_calls_after_it(tmp_path):
    """The issue's repro: barge_in, then a scenario whose call fails before any OpenAI session (a
    closed port), then barge_in again against the same mock (over its HTTP control API, as
    `callsim call --mock-url` does). The second barge_in must run with its own behaviour."""
    async with running_mock(MockConfig(any_key=True)) as mock:
        async with embedded({"openai_realtime_url": mock.realtime_url,
                             "database_path": tmp_path / "b.sqlite3"}) as base:
            target = base + "/incoming-call"
            first = await run_external(find_scenario("barge_in"), target, mock_url=mock.http_url, seed=1)
            failed = await run_external(find_scenario("greeting_two_turns"), _closed_port_url(),
                                        mock_url=mock.http_url, seed=1)
            second = await run_external(find_scenario("barge_in"), target, mock_url=mock.http_url, seed=1)
    assert first.passed, [e.message for e in first.expectations if e.status == "failed"]
    assert failed.status == "error"
    assert any("withdrawn" in n for n in failed.notes)  # its queued behaviour was taken back
    assert second.passed, [e.message for e in second.expectations if e.status == "failed"]
    (m,) = second.metrics
    assert m.behaviour_tag is not None and m.behaviour_tag.startswith("barge_in#")
    assert m.pairing == "line_tag"
    assert mock.open_sessions == 0 and not mock._next_behaviours
    # barge_in sets no frame-timed expectation: the mock was not asked for its per-frame arrays over HTTP
    snap = second.calls[0].mock_snapshot
    assert not {"append_ns", "delta_ns", "block_ns", "block_crc"} & set(snap) and snap["turns"]
    assert m.renewal is not None and m.renewal.sessions == 1 and "fetches them only" in m.renewal.note


async def test_a_session_running_another_scenarios_behaviour_is_an_error_with_the_reason(tmp_path):
    """Without withdrawing (the old behaviour), the leftover entry reaches the next call: the harness
    must say so instead of judging the call against the wrong replies."""
    async with running_mock(MockConfig(any_key=True)) as mock:
        from callsim.simulator.mock.behaviour import Behaviour
        mock.set_behaviour(Behaviour(replies=("assistant_short_reply",)), next_sessions=1, tag="stale#1")
        async with embedded({"openai_realtime_url": mock.realtime_url,
                             "database_path": tmp_path / "b.sqlite3"}) as base:
            run = await run_with_mock(find_scenario("hangup_mid_reply"), base + "/incoming-call", mock, seed=1)
    (m,) = run.metrics
    assert m.status == "error"
    assert "ran behaviour 'stale#1'" in m.error and "not this scenario's" in m.error


async def test_calls_started_in_the_same_instant_pair_by_line_tag_with_a_bridge_that_opens_openai_first(
        monkeypatch):
    """The foreign `openai_first` bridge opens (and configures) its OpenAI session 200 ms before it
    answers Twilio's handshake — the old 5 ms window called that "never connected"."""
    monkeypatch.setattr(runner, "CALL_STAGGER_S", 0.0)
    async with running_mock(MockConfig(any_key=True)) as mock:
        async with running_foreign_bridge("openai_first", mock.realtime_url) as url:
            run = await run_with_mock(find_scenario("hangup_mid_reply"), url, mock, calls=3, seed=1)
    assert run.passed, [e.message for e in run.expectations if e.status == "failed"]
    sids = set()
    for c in run.calls:
        m, snap = c.metrics, c.mock_snapshot
        assert m.pairing == "line_tag"
        tag = f"{c.result.core.line_tag:08x}"
        assert list(snap["line_tags"]) == [tag]  # its own session heard only its own line
        assert snap["t_open_ns"] < c.result.core.t0_ns - 150_000_000  # opened well before the stream
        assert "block_ns" not in snap and "append_ns" not in snap  # not needed by this scenario: not taken
        sids.add(snap["id"])
    assert len(sids) == 3


async def test_a_transcoding_bridge_is_paired_by_timing_and_says_so():
    """μ-law → pcm16 24 kHz destroys the line tag: the call still finds its session, by when its
    speech reached the mock, and the pairing says how it was made."""
    run = await run_embedded(find_scenario("codec_transcode"))
    (m,) = run.metrics
    assert m.pairing is not None and m.pairing.startswith("timing")
    assert m.mock is not None and m.status == "passed"
    assert run.calls[0].mock_snapshot["line_tags"] == {}


async def test_every_scenario_queues_spare_sessions_for_a_bridge_that_reconnects():
    """openai_drops has no renewal, but a bridge that reconnects after the drop opens a second session: it
    must run this scenario's behaviour (not the mock's default, which makes the call an error). The spares
    a bridge does not use are withdrawn, and are not reported as calls that never reached OpenAI."""
    queued: list[int] = []
    async with running_mock(MockConfig(any_key=True)) as mock:
        set_behaviour = mock.set_behaviour

        def spy(behaviour, *, next_sessions=None, tag=None):
            queued.append(next_sessions)
            set_behaviour(behaviour, next_sessions=next_sessions, tag=tag)

        mock.set_behaviour = spy
        scenario = find_scenario("openai_drops")
        assert runner.renewal_sessions(scenario) == 0
        run = await run_with_mock(scenario, _closed_port_url(), mock, seed=1)
    assert queued == [1 + runner.RECONNECT_SESSIONS]
    assert run.status == "error" and not mock._next_behaviours
    assert [n for n in run.notes if "withdrawn" in n] == [
        "1 call(s) never opened an OpenAI session: their share of the scenario's mock behaviour was withdrawn, "
        "so no later call runs with it"]
