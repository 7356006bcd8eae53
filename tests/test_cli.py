"""`callsim` as a user runs it: a real subprocess against a stream app in this test."""

from __future__ import annotations

import json
import subprocess
import sys

import soundfile as sf
import trio

from tests.stub_app import StreamSession, StubApp
from tests.test_caller_wire import noise

CALLSIM = [sys.executable, "-m", "simulator"]


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
            await sess.wait_for(lambda m: m.get("event") == "media" and m["media"]["payload"][:8] != "////////",
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
