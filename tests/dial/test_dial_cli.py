"""`callsim dial` as a user runs it, against the Twilio emulator on loopback (never the network):
the dry run sends nothing, bad input is one line and exit 2, a real dial creates the call and
hangs it up, Ctrl-C hangs up and exits 130."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from callsim.simulator.cli import main

from .emulator import SID, TOKEN, emulator_in_thread, no_proxy_env

CALL = ["dial", "--to", "+15551234567", "--from", "+15550001111", "--scenario", "barge_in",
        "--public-url", "wss://dial.example/stream"]


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)


@pytest.fixture
def emulator(env):
    with emulator_in_thread() as (core, url):
        yield core, url


def test_dry_run_prints_the_request_and_sends_nothing(emulator, monkeypatch, capsys):
    core, url = emulator

    def no_network(*args, **kwargs):
        raise AssertionError("the dry run opened a connection")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    rc = main([*CALL, "--twilio-api-url", url, "--record", "--dry-run"])
    out, err = capsys.readouterr()
    assert rc == 0 and err == "" and core.store.calls == {}
    assert f"POST {url}/2010-04-01/Accounts/AC…1212/Calls.json" in out
    assert '<Stream url="wss://dial.example/stream"><Parameter name="callsim_scenario" value="barge_in" />' in out
    assert "TimeLimit=300" in out and "Record=true" in out and "StatusCallback=https://dial.example/dial-status" in out
    assert SID not in out and TOKEN not in out


def test_dry_run_needs_no_credentials(monkeypatch, capsys):
    monkeypatch.delenv("TWILIO_ACCOUNT_SID", raising=False)
    monkeypatch.delenv("TWILIO_AUTH_TOKEN", raising=False)
    assert main([*CALL, "--dry-run"]) == 0
    assert "no account SID: set $TWILIO_ACCOUNT_SID" in capsys.readouterr().out


@pytest.mark.parametrize("change, says", [
    (["--to", "5551234567"], "--to must be an E.164 number"),
    (["--from", "+15551234567"], "--to and --from are the same number"),
    (["--public-url", "http://dial.example/stream"], "--public-url must be wss://"),
    (["--scenario", "no_such_scenario"], "no scenario 'no_such_scenario'"),
    (["--account-sid", "AC123"], "the account SID"),
    (["--twilio-api-url", "ftp://x"], "--twilio-api-url must be http(s)://"),
    (["--port", "70000"], "--port: must be at most 65535"),
    (["--max-duration-s", "0"], "--max-duration-s: must be at least 1"),
    (["--max-duration-s", "99999"], "--max-duration-s: must be at most 14400"),
    (["--stream-timeout-s", "0"], "--stream-timeout-s: must be more than 0"),
])
def test_bad_input_is_one_line_and_exit_2_before_anything_is_sent(emulator, capsys, change, says):
    core, url = emulator
    rc = main([*CALL, "--twilio-api-url", url, *change])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and core.store.calls == {}
    assert err.count("\n") == 1 and err.startswith("callsim dial: ") and says in err, err


def test_a_scenario_that_presses_keys_is_skipped_with_the_reason_and_no_call_is_placed(emulator, capsys, tmp_path):
    """dtmf_menu's keypresses have no wire on a media stream: judged, it would pass on keys never
    pressed. It is skipped before anything is sent, as a scenario that does not apply is skipped."""
    from callsim.simulator.dial.line import NO_KEYPRESSES

    core, url = emulator
    report = tmp_path / "report"
    rc = main([*CALL[:-3], "dtmf_menu", *CALL[-2:], "--twilio-api-url", url, "--report", str(report)])
    out, err = capsys.readouterr()
    assert rc == 0 and core.store.calls == {}, err
    assert out == f"callsim dial: no call placed: scenario dtmf_menu skipped: {NO_KEYPRESSES}\n"
    assert "cannot be sent on a bidirectional media stream" in NO_KEYPRESSES
    data = json.loads((report / "report.json").read_text())
    (sc,) = data["meta"]["scenarios"]
    assert (sc["name"], sc["status"], sc["skip_reason"]) == ("dtmf_menu", "skipped", NO_KEYPRESSES)
    assert sc["expectations"] and all(e["status"] == "skipped" for e in sc["expectations"])
    assert data["meta"]["dial"] == {"call_sid": None, "placed": False}
    assert "<skipped" in (report / "junit.xml").read_text()


def test_missing_credentials_name_the_variables(emulator, monkeypatch, capsys):
    core, url = emulator
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    assert main([*CALL, "--twilio-api-url", url]) == 2
    assert capsys.readouterr().err == ("callsim dial: no Twilio credentials: set $TWILIO_AUTH_TOKEN "
                                       "(or --account-sid/--auth-token)\n")
    assert core.store.calls == {}


def test_a_dial_creates_the_call_and_hangs_it_up_when_no_stream_arrives(emulator, capsys):
    core, url = emulator
    rc = main([*CALL, "--twilio-api-url", url, "--stream-timeout-s", "1", "--max-duration-s", "90"])
    out, err = capsys.readouterr()
    (call,) = core.store.calls.values()
    assert (call.to, call.from_, call.status) == ("+15551234567", "+15550001111", "canceled")
    assert '<Connect><Stream url="wss://dial.example/stream">' in call.instructions.twiml
    assert 'name="callsim_scenario" value="barge_in"' in call.instructions.twiml
    assert rc == 1
    assert "no media stream arrived within 1 s" in err
    assert out == f"callsim dial: call {call.sid} hung up (canceled): no media stream arrived within 1 s " \
                  "(is --public-url reaching callsim's stream server?)\n"


def test_ctrl_c_while_waiting_hangs_up_and_exits_130(emulator):
    core, url = emulator
    proc = subprocess.Popen(
        [sys.executable, "-m", "callsim.simulator", *CALL, "--twilio-api-url", url, "--stream-timeout-s", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=no_proxy_env(dict(os.environ)))
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if "waiting up to 120 s" in line:
                break
        else:
            raise AssertionError("callsim dial ended before waiting:\n" + "".join(seen))
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(seen) + rest
    (call,) = core.store.calls.values()
    assert proc.returncode == 130, out
    assert call.status == "canceled"
    assert f"call {call.sid} hung up (canceled): interrupted" in out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out


def test_a_dial_plays_the_scenario_on_the_stream_and_writes_the_report(tmp_path, capsys, monkeypatch):
    """`callsim dial` end to end through the emulator's call legs to our bridge and the mock: the
    call is answered, the scenario runs, the call ends `completed` and its final status callback
    is in the report, written after the hang-up."""
    from callsim.simulator.scenario import find_scenario

    from .stack import dial_stack

    report = tmp_path / "report"
    scenario = tmp_path / "short.toml"
    scenario.write_text('name = "short"\n[caller]\nsteps = [\n  { wait_for_reply = { quiet_ms = 500, timeout_ms = 5000 } },\n'
                        '  { say = "caller_stop" },\n  { wait_for_reply = { quiet_ms = 500, timeout_ms = 8000 } },\n'
                        '  { hangup = true },\n]\n[bridge]\nai_greeting = "Greet the caller."\n'
                        '[expect]\nturn_latency_p95_ms = 1500\ntranscript_contains = ["stop"]\nend_reason = "hangup"\n')
    with dial_stack(find_scenario(str(scenario)), tmp_path) as stack:
        rc = main(stack.dial_args(str(scenario), report))
        calls = list(stack.emulator.store.calls.values())
    out, err = capsys.readouterr()
    (call,) = [c for c in calls if c.direction == "outbound-api"]
    (inbound,) = [c for c in calls if c.direction == "inbound"]
    assert rc == 0, err
    assert (call.status, inbound.status) == ("completed", "completed")
    assert f" of {call.sid} accepted" in err
    assert "passed: turn_latency_p95_ms" in err and "skipped: transcript_contains" in err
    # the script hung up first (the emulator ended both calls), or the REST hang-up did
    assert out.startswith((f"callsim dial: call {call.sid} hung up (completed): scenario short passed: "
                           "2 expectation(s) met, 1 skipped",
                           f"callsim dial: call {call.sid} had already ended (completed): scenario short passed: "
                           "2 expectation(s) met, 1 skipped")), out
    assert err.index(f"call {call.sid}: completed") < err.index("report: ")  # the report waited for it
    data = json.loads((report / "report.json").read_text())
    dial = data["meta"]["dial"]
    assert dial["call_sid"] == call.sid and data["summary"]["turns"] == 1
    assert [s["status"] for s in dial["statuses"]] == ["initiated", "ringing", "in-progress", "completed"]
    assert dial["final_status"] == "completed" and dial["greeting_ms"] is not None
    assert (report / "junit.xml").exists() and (report / "report.html").exists()


def test_a_call_cut_by_max_duration_is_still_judged_and_reported_as_interrupted(tmp_path, capsys, monkeypatch):
    """--max-duration-s cancels the call mid-scenario: what it did is judged and written, marked
    interrupted (it used to leave no report at all)."""
    from callsim.simulator.dial.command import CUT_SHORT
    from callsim.simulator.scenario import find_scenario

    from .stack import dial_stack

    report = tmp_path / "report"
    scenario = tmp_path / "long.toml"
    scenario.write_text('name = "long"\n[caller]\nsteps = [\n  { wait_for_reply = { quiet_ms = 500, timeout_ms = 5000 } },\n'
                        '  { say = "caller_stop" },\n  { pause_ms = 60000 },\n  { hangup = true },\n]\n'
                        '[bridge]\nai_greeting = "Greet the caller."\n'
                        '[expect]\nturn_latency_p95_ms = 1500\nend_reason = "hangup"\n')
    with dial_stack(find_scenario(str(scenario)), tmp_path) as stack:
        rc = main([*stack.dial_args(str(scenario), report), "--max-duration-s", "8"])
    out, err = capsys.readouterr()
    assert rc == 1 and "reached --max-duration-s 8" in out, (out, err)
    data = json.loads((report / "report.json").read_text())
    meta = data["meta"]
    assert meta["interrupted"] is True and meta["dial"]["call_sid"]
    (sc,) = meta["scenarios"]
    assert sc["status"] == "interrupted" and CUT_SHORT in sc["notes"]
    assert {e["name"] for e in sc["expectations"]} == {"turn_latency_p95_ms", "end_reason"}
    assert data["summary"]["turns"] == 1  # the turn it had, judged
    assert (report / "junit.xml").exists() and (report / "report.html").exists()
    assert "report: " in err


def test_the_default_port_is_free_of_the_other_offline_servers():
    """mock-openai, twilio-emulator and dial run side by side offline: their default ports differ."""
    from callsim.simulator.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command" or getattr(a, "choices", None))
    defaults = {name: sub.choices[name].get_default("port") for name in ("mock-openai", "twilio-emulator", "dial")}
    assert len(set(defaults.values())) == 3, defaults
