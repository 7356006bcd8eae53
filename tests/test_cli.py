"""`callsim` as a user runs it: a real subprocess against a stream app in this test."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import soundfile as sf
import trio

from tests.stub_app import StreamSession, StubApp, is_speech
from tests.test_caller_wire import noise

CALLSIM = [sys.executable, "-m", "callsim.simulator"]


def test_help_lists_subcommands():
    out = subprocess.run(CALLSIM + ["--help"], capture_output=True, text=True, check=True).stdout
    assert "call" in out and "fixtures" in out
    call_help = subprocess.run(CALLSIM + ["call", "--help"], capture_output=True, text=True, check=True).stdout
    for flag in ("--target", "--auth-token", "--say", "--out", "--impair"):
        assert flag in call_help


def test_fixtures_lists_the_manifest():
    out = subprocess.run(CALLSIM + ["fixtures"], capture_output=True, text=True, check=True).stdout
    assert "caller_greeting" in out and "assistant_long_reply" in out


async def test_call_command_writes_recording_and_summary(tmp_path):
    reply = noise(2400, 9)  # 300 ms

    async def behaviour(sess: StreamSession) -> None:
        await sess.started.wait()
        for _ in range(2):  # answer each utterance once it has been said
            await sess.wait_for(is_speech,
                                timeout=20, since=len(sess.received))
            n = sess.media_count
            await sess.wait_for(lambda m: m.get("event") == "media" and int(m["media"]["chunk"]) > n + 60,
                                timeout=20)
            await sess.send_audio(reply)
            await sess.send_mark("reply-done")

    app = StubApp(behaviour)
    out_dir = tmp_path / "out"
    async with trio.open_nursery() as n:
        await n.start(app.serve)
        proc = await trio.run_process(
            CALLSIM + ["call", "--target", app.url, "--say", "caller_stop", "--say", "caller_stop",
                       "--quiet-ms", "400", "--out", str(out_dir), "--seed", "1"],
            capture_stdout=True, capture_stderr=True, check=False,
        )
        n.cancel_scope.cancel()
    stdout = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()
    assert "said 2 utterance(s)" in stdout and "heard 0.60 s" in stdout and "ended: hangup" in stdout
    doc = json.loads((out_dir / "timeline.json").read_text())
    assert doc["summary"]["marks_echoed"] == {"played": 2}
    info = sf.info(out_dir / "heard.wav")
    assert info.samplerate == 8000 and info.channels == 1
    assert abs(info.frames / 8 - doc["summary"]["duration_ms"]) <= 20
    assert len(app.sessions) == 1 and app.sessions[0].events("stop")


def test_call_command_rejects_unknown_fixture(tmp_path):
    proc = subprocess.run(CALLSIM + ["call", "--target", "ws://127.0.0.1:9/x", "--say", "nope",
                                     "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown fixture" in proc.stderr


# ------------------------------------------------- `call --scenario`: every option applies or is refused


def _scenario(tmp_path, name: str, steps: str, impairments: str = "") -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\n[caller]\nimpairments = "{impairments}"\nsteps = [{steps}]\n')
    return str(path)


def _timeline(report_dir, name: str) -> dict:
    return json.loads((report_dir / "calls" / f"{name}-0" / "timeline.json").read_text())


def _event(doc: dict, name: str) -> dict:
    return next(e for e in doc["timeline"] if e["event"] == name)


async def test_call_scenario_takes_parties_parameters_reply_timeout_and_max_duration(tmp_path):
    """Through the webhook: --from/--to in the form, --param in start, --reply-timeout-ms in each
    wait_for_reply step, --max-duration-s ending the call (defaults: 15 s and 300 s would not)."""
    from tests.test_webhook_flow import TOKEN, TwimlApp

    scenario = _scenario(tmp_path, "cli_overrides", '{ say = "caller_stop" }, { wait_for_reply = true }, '
                                                    '{ say = "caller_stop" }, { wait_for_reply = true }, '
                                                    '{ hangup = true }')
    app = TwimlApp(TOKEN)
    report = tmp_path / "report"
    async with trio.open_nursery() as n:
        await n.start(app.serve)
        proc = await trio.run_process(
            CALLSIM + ["call", "--target", app.base + "/incoming-call", "--auth-token", TOKEN,
                       "--scenario", scenario, "--from", "+15551230000", "--to", "+15559870000",
                       "--param", "team=qa", "--param", "callToken=mine", "--reply-timeout-ms", "400",
                       "--max-duration-s", "1.8", "--report", str(report), "--seed", "1"],
            capture_stdout=True, capture_stderr=True, check=False)
        n.cancel_scope.cancel()
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    (call,) = app.webhook_calls
    assert call["form"]["From"] == "+15551230000" and call["form"]["To"] == "+15559870000"
    (stream,) = app.streams
    start = next(m for m in stream["messages"] if m["event"] == "start")
    # --param adds to the TwiML's <Parameter>s and wins over them
    assert start["start"]["customParameters"] == {"callToken": "mine", "callerId": "+15551230000", "team": "qa"}
    doc = _timeline(report, "cli_overrides")
    timeout, max_duration = _event(doc, "wait_timeout"), _event(doc, "max_duration")
    assert timeout["t_ns"] < max_duration["t_ns"]  # the first wait gave up after 0.4 s, not 15 s
    assert max_duration["ms"] == 1800 and doc["summary"]["end_reason"] == "max_duration"
    assert any(n.startswith("<Say> before <Connect> (2 word(s))") for n in doc["notes"])  # "Connecting you."


async def test_call_scenario_takes_quiet_ms_and_impair_instead_of_the_files(tmp_path):
    """Straight to the stream: --impair replaces the file's impairments (on the wire: lost frames
    make the media timestamp skip; the file's gap=1.0x40 would skip every one), --quiet-ms is how
    long the caller waits after the reply before it hangs up."""
    reply = noise(2400, 9)  # 300 ms

    async def behaviour(sess: StreamSession) -> None:
        await sess.started.wait()
        await sess.wait_for(is_speech,
                            timeout=20)
        n = sess.media_count
        await sess.wait_for(lambda m: m.get("event") == "media" and int(m["media"]["chunk"]) > n + 50, timeout=20)
        await sess.send_audio(reply)

    scenario = _scenario(tmp_path, "cli_quiet", '{ pause_ms = 200 }, { say = "caller_stop" }, '
                                                '{ wait_for_reply = true }, { hangup = true }',
                         impairments="gap=1.0x40")
    app = StubApp(behaviour)
    report = tmp_path / "report"
    async with trio.open_nursery() as n:
        await n.start(app.serve)
        proc = await trio.run_process(
            CALLSIM + ["call", "--target", app.url, "--scenario", scenario, "--quiet-ms", "1500",
                       "--impair", "loss=0.2,seed=3", "--report", str(report), "--seed", "1"],
            capture_stdout=True, capture_stderr=True, check=False)
        n.cancel_scope.cancel()
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    said = " ".join(proc.stdout.decode().split())  # the console wraps at its width
    assert "in-process mock logged" in said and "bridge/mock" not in said  # the bridge is the target's
    (sess,) = app.sessions
    stamps = [int(m["media"]["timestamp"]) for m in sess.events("media")]
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert steps.count(20) > len(steps) // 2  # not the file's gap on every frame
    assert any(s > 20 and s % 20 == 0 for s in steps)  # but frames lost, as --impair says
    doc = _timeline(report, "cli_quiet")
    quiet_ms = _event(doc, "stop")["t_ms"] - _event(doc, "audio_offset")["tick"] * 20
    assert 1400 <= quiet_ms <= 2000, quiet_ms  # the default 800 would have hung up ~700 ms sooner


def _fixture_folder(tmp_path):
    """A one-fixture library of the user's own: a 600 ms tone nobody else has."""
    import numpy as np

    folder = tmp_path / "my_fixtures"
    folder.mkdir()
    t = np.arange(8000 * 6 // 10) / 8000
    sf.write(folder / "beep.wav", (np.sin(2 * np.pi * 440 * t) * 12000).astype(np.int16), 8000, subtype="PCM_16")
    (folder / "manifest.json").write_text(json.dumps({"files": [{
        "name": "custom_beep", "file": "beep.wav", "role": "caller", "text": "beep", "sample_rate": 8000,
        "channels": 1, "frames": len(t), "duration_ms": 600.0, "speech_segments_ms": [[0.0, 600.0]]}]}))
    return folder


async def test_call_scenario_says_fixtures_from_the_fixtures_folder(tmp_path):
    from callsim.simulator.audio.fixtures import FixtureLibrary
    from callsim.simulator.audio.utterances import UtteranceBank

    folder = _fixture_folder(tmp_path)
    scenario = _scenario(tmp_path, "cli_fixtures", '{ pause_ms = 100 }, { say = "custom_beep" }, { hangup = true }')
    refused = subprocess.run(CALLSIM + ["call", "--target", "ws://127.0.0.1:9/x", "--scenario", scenario,
                                        "--report", str(tmp_path / "r0")], capture_output=True, text=True)
    assert refused.returncode == 2 and 'steps[2] say: unknown fixture "custom_beep"' in refused.stderr
    app = StubApp()
    async with trio.open_nursery() as n:
        await n.start(app.serve)
        proc = await trio.run_process(
            CALLSIM + ["call", "--target", app.url, "--scenario", scenario, "--fixtures", str(folder),
                       "--report", str(tmp_path / "r1")],
            capture_stdout=True, capture_stderr=True, check=False)
        n.cancel_scope.cancel()
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    sent = [m["media"]["payload"] for m in app.sessions[0].events("media")]
    beep = list(UtteranceBank(FixtureLibrary(folder)).get("custom_beep").frames_b64)
    assert any(sent[i:i + len(beep)] == beep for i in range(len(sent))), "the tone was not sent whole"


@pytest.mark.parametrize(("argv", "reason"), [
    (["--scenario", "hangup_mid_reply", "--say", "caller_stop"],
     "--say cannot be combined with --scenario: the scenario's steps say what the caller says"),
    (["--scenario", "hangup_mid_reply", "--out", "x"], "--out is for a single call"),
    (["--scenario", "hangup_mid_reply", "--impair", "loss=2"], "loss_prob must be a probability"),
    (["--scenario", "hangup_mid_reply", "--param", "novalue"], "--param wants NAME=VALUE"),
    (["--scenario", "hangup_mid_reply", "--fixtures", "/nonexistent"], "no fixture manifest"),
    (["--scenario", "hangup_mid_reply", "--calls", "0"], "--calls: must be at least 1, got 0"),
    (["--scenario", "no_such_scenario"], "no scenario 'no_such_scenario'"),
    (["--mock-url", "http://127.0.0.1:9"], "--mock-url only applies to --scenario runs"),
    (["--calls", "2"], "--calls only applies to --scenario runs"),
    (["--report", "r"], "--report only applies to --scenario runs"),
])
def test_call_refuses_what_it_cannot_honour(argv, reason, capsys):
    from callsim.simulator.cli import main

    assert main(["call", "--target", "ws://127.0.0.1:9/x", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("callsim call: ") and reason in err and err.count("\n") == 1, err


def test_demo_refuses_zero_calls(capsys):
    from callsim.simulator.cli import main

    assert main(["demo", "--calls", "0"]) == 2
    assert "--calls: must be at least 1" in capsys.readouterr().err


async def test_each_scenario_call_gets_the_scenarios_fixture_bank(tmp_path):
    """In process, with no $CALLSIM_FIXTURES: Scenario.fixtures reaches the caller through the runner."""
    from callsim.simulator.runner import run_external
    from callsim.simulator.scenario import find_scenario

    folder = _fixture_folder(tmp_path)
    scenario = find_scenario(_scenario(tmp_path, "bank", '{ say = "custom_beep" }, { hangup = true }'), fixtures=folder)
    app = StubApp()
    async with trio.open_nursery() as n:
        await n.start(app.serve)
        run = await run_external(scenario.with_overrides(fixtures=folder), app.url)
        n.cancel_scope.cancel()
    (call,) = run.calls
    assert call.result.ok, call.result.error
    from callsim.simulator.measure.timeline import UtteranceStart
    assert [e.fixture for e in call.result.core.timeline.of(UtteranceStart)] == ["custom_beep"]
