"""The service's own timeouts: the maximum session duration and the VAD's idle timeout."""

from __future__ import annotations

from callsim.simulator.core_io import Close
from callsim.simulator.mock import errors
from callsim.simulator.mock.behaviour import Behaviour, Fault, ThinkTime

from .conftest import MS
from .session_helpers import LONG, SHORT, configure, ga_update, greet, ulaw

SERVER_VAD = {"type": "server_vad", "silence_duration_ms": 500}


def test_session_ends_at_its_maximum_duration_with_session_expired_and_close_1001(drive) -> None:
    d = drive(Behaviour(seed=1, max_session_s=20))
    configure(d)
    assert d.advance_ms(19_990) == []
    out = d.advance_ms(20)
    assert d.types(out) == ["error"]
    assert d.errors(out)[0]["code"] == "session_expired"
    assert d.errors(out)[0]["message"] == "Your session hit the maximum duration of 20 seconds."
    assert d.ended == Close(1001, "Your session hit the maximum duration of 20 seconds.")
    assert d.time_of(out[0]) - d.s.t_open_ns == 20_000 * MS


def test_default_maximum_is_sixty_minutes_in_the_real_wording(drive) -> None:
    d = drive(Behaviour(seed=1))
    assert [t.name for t in d.s.pending_timers()] == ["session.max_duration"]
    assert d.s.pending_timers()[0].due_ns - d.s.t_open_ns == 3600 * 1000 * MS
    assert errors.max_duration_text(3600) == "Your session hit the maximum duration of 60 minutes."
    assert errors.max_duration_text(60) == "Your session hit the maximum duration of 1 minute."


def test_maximum_duration_cuts_a_reply_short(drive) -> None:
    d = drive(Behaviour(seed=1, max_session_s=2, think=ThinkTime("fixed", 0), replies=(LONG,)))
    configure(d)
    greet(d)
    out = d.advance_ms(2500)
    assert "response.output_audio.delta" in d.types(out)
    assert d.types(out)[-1] == "error" and d.ended is not None and d.ended.code == 1001


def test_expire_fault_is_the_same_ending_at_a_chosen_moment(drive) -> None:
    d = drive(Behaviour(seed=1, faults=(Fault("expire", after_ms=500),)))
    out = d.advance_ms(500)
    assert d.errors(out)[0]["code"] == "session_expired"
    assert d.ended == Close(1001, "Your session hit the maximum duration of 60 minutes.")


def test_max_session_from_a_scenario_table_is_checked() -> None:
    assert Behaviour.from_dict({"max_session_s": 20}).max_session_s == 20.0
    import pytest

    from callsim.simulator.tableread import DataError
    with pytest.raises(DataError, match="max_session_s"):
        Behaviour.from_dict({"max_session_s": 0})


def idle_session(drive, ms: int = 3000, **behaviour):
    d = drive(Behaviour(seed=1, think=ThinkTime("fixed", 0), **behaviour))
    d.send(ga_update(turn_detection={**SERVER_VAD, "idle_timeout_ms": ms}))
    return d


def test_idle_timeout_counts_from_response_done_plus_its_playback(drive) -> None:
    d = idle_session(drive, replies=(SHORT,))
    greet(d)
    d.settle(limit_ms=1000)
    done = d.of("response.done")[-1]
    played_ms = sum(len(__import__("base64").b64decode(e["delta"])) for e in d.of("response.output_audio.delta")) / 8
    out = d.silence(int(played_ms) + 3000 + 200, until=lambda e: e["type"] == "input_audio_buffer.timeout_triggered")
    fired = d.one("input_audio_buffer.timeout_triggered", out)
    # fired at response.done + the reply's playback + the timeout, within the 20 ms an append step takes
    expected = d.time_of(done) + int(played_ms * MS) + 3000 * MS
    assert 0 <= d.time_of(fired) - expected < 20 * MS
    assert 2900 <= fired["audio_end_ms"] - fired["audio_start_ms"] <= 3000  # on the buffer's clock
    i = d.types(out).index("input_audio_buffer.timeout_triggered")
    assert d.types(out)[i + 1] == "input_audio_buffer.committed"
    assert d.one("input_audio_buffer.committed", out)["item_id"] == fired["item_id"]
    assert d.s.response is not None and d.s.response.trigger == "idle_timeout"  # response.created follows
    assert d.s.idle_timeouts == 1


def test_caller_speech_stops_the_idle_timer(drive) -> None:
    d = idle_session(drive, ms=1500, replies=(SHORT,))
    d.silence(1000)
    out = d.append(ulaw("caller_weather_question"))
    assert "input_audio_buffer.speech_started" in d.types(out)
    assert "input_audio_buffer.timeout_triggered" not in d.types(d.events)


def test_no_idle_timeout_while_a_response_plays_or_when_unset(drive) -> None:
    d = drive(Behaviour(seed=1, think=ThinkTime("fixed", 0)))
    d.send(ga_update(turn_detection=SERVER_VAD))
    d.silence(5000)
    assert "input_audio_buffer.timeout_triggered" not in d.types()
    d = idle_session(drive, ms=500, replies=(LONG,))
    greet(d)
    d.silence(1500)  # the long reply is still "playing" (done + its duration)
    assert "input_audio_buffer.timeout_triggered" not in d.types()


def test_idle_reply_is_what_the_model_says_after_a_timeout_and_caller_turns_do_not_move(drive) -> None:
    d = idle_session(drive, ms=1000, idle_reply=LONG, replies=(SHORT,))
    out = d.silence(1500, until=lambda e: e["type"] == "response.created")
    assert "input_audio_buffer.timeout_triggered" in d.types(out)
    d.run_until(d.t + 20_000 * MS)
    assert d.s.response_records[0]["reply"] == LONG and d.s.response_records[0]["trigger"] == "idle_timeout"
    assert d.s._user_turns == 0
