"""``callsim mock-openai`` as a user runs it: a real subprocess on a free port."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import httpx
import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

CALLSIM = [sys.executable, "-m", "callsim.simulator"]
# -X faulthandler: SIGABRT then dumps every thread's stack, so a hang explains itself
CALLSIM_DIAG = [sys.executable, "-X", "faulthandler", "-m", "callsim.simulator"]
KEY = "sk-test-cli"
URL_LINE = re.compile(r"^mock OpenAI Realtime on (ws://127\.0\.0\.1:(\d+)/v1/realtime) \(ga, key sk-test-cli\)$")

OPTIONS = ("--host", "--port", "--api-key", "--any-key", "--dialect", "--model", "--reply", "--rule", "--echo",
           "--think-ms", "--realtime-factor", "--chunk-ms", "--fault", "--seed", "--behaviour", "--no-validate",
           "--keep-sessions", "--max-session-s")


def _default_sigint() -> None:
    """The child must get Ctrl-C as KeyboardInterrupt even when this test runs
    in a shell that ignores SIGINT for background jobs (the disposition is inherited)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_help_documents_every_option():
    out = subprocess.run(CALLSIM + ["mock-openai", "--help"], capture_output=True, text=True, check=True).stdout
    for flag in OPTIONS:
        assert re.search(rf"(^|[\s,]){re.escape(flag)}\b", out), flag
    assert "0 = any free port" in out
    for kind in ("refuse", "drop", "close", "stall", "error", "expire", "fail_response", "slow_start"):
        assert kind in out, kind
    assert "/_mock/sessions" in out and "/_mock/behaviour" in out
    top = subprocess.run(CALLSIM + ["--help"], capture_output=True, text=True, check=True).stdout
    assert "mock-openai" in top


@pytest.mark.parametrize("args, message", [
    (["--fault", "explode"], "unknown fault 'explode'"),
    (["--fault", "drop:after=5"], "unknown fault option 'after'"),
    (["--fault", "drop:after_ms"], "want key=value"),
    (["--rule", "caller_stop"], "--rule wants HEARD=REPLY"),
    (["--rule", "caller_stop=tool:lookup:{not json"], "unknown fixture(s) {not json; known: caller_greeting"),
    (["--rule", 'caller_stop=tool:lookup:{"a": 1, }'], "Expecting property name"),
    (["--rule", "caller_stopp=assistant_short_reply"], "unknown fixture(s) caller_stopp"),
    (["--reply", "assistant_short_reply", "--reply", "nope"], "unknown fixture(s) nope"),
    (["--think-ms", "soon"], '--think-ms: expected MS, "uniform:LO-HI" or "normal:MEAN,SD", got "soon"'),
])
def test_bad_fault_rule_or_think_time_exits_2_with_a_message(args, message):
    proc = subprocess.run(CALLSIM + ["mock-openai", "--port", "0", *args], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""  # refused before it ever listened
    assert proc.stderr.startswith("callsim mock-openai: ") and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_max_session_s_reaches_the_behaviour_and_a_bad_one_exits_2():
    from callsim.simulator import cli

    args = cli.build_parser().parse_args(["mock-openai", "--max-session-s", "20"])
    assert cli._mock_behaviour(args).max_session_s == 20.0
    assert cli._mock_behaviour(cli.build_parser().parse_args(["mock-openai"])).max_session_s == 3600.0
    proc = subprocess.run(CALLSIM + ["mock-openai", "--max-session-s", "0"], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2 and "--max-session-s" in proc.stderr


def test_bad_dialect_is_an_argparse_error():
    proc = subprocess.run(CALLSIM + ["mock-openai", "--dialect", "klingon"], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2 and "invalid choice: 'klingon'" in proc.stderr


async def _read_line(stream: trio.abc.ReceiveStream, buf: bytearray) -> str:
    while b"\n" not in buf:
        data = await stream.receive_some(4096)
        assert data, "mock-openai exited before printing its URL"
        buf += data
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line.decode()


async def _read_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


async def test_the_command_serves_a_session_and_stops_cleanly_on_ctrl_c():
    proc = await trio.lowlevel.open_process(
        CALLSIM_DIAG + ["mock-openai", "--port", "0", "--api-key", KEY, "--think-ms", "50", "--seed", "7"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_default_sigint,
    )
    try:
        buf = bytearray()
        with trio.fail_after(20):  # the first line is the URL, with the port actually bound
            first = await _read_line(proc.stdout, buf)
            second = await _read_line(proc.stdout, buf)
            third = await _read_line(proc.stdout, buf)
        m = URL_LINE.match(first)
        assert m, first
        url, port = m.group(1), int(m.group(2))
        assert port != 0
        assert second.strip() == f"point a bridge at it: OPENAI_REALTIME_URL={url} OPENAI_API_KEY={KEY}"
        assert third.strip() == f"sessions: http://127.0.0.1:{port}/_mock/sessions"

        with trio.fail_after(10):
            with pytest.raises(ConnectionRejected) as info:  # the key is enforced
                async with open_websocket_url(url + "?model=gpt-realtime"):
                    pass
            assert info.value.status_code == 401
            async with open_websocket_url(url + "?model=gpt-realtime",
                                          extra_headers=[(b"authorization", f"Bearer {KEY}".encode())]) as ws:
                created = json.loads(await ws.get_message())
                assert created["type"] == "session.created"
                await ws.send_message(json.dumps({"type": "session.update", "event_id": "evt_cli", "session": {
                    "type": "realtime", "audio": {"output": {"format": {"type": "audio/pcmu"}}}}}))
                updated = json.loads(await ws.get_message())
                assert updated["type"] == "session.updated"
                assert updated["session"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
                    listing = (await http.get("/_mock/sessions")).json()
            assert listing["open_sessions"] == 1 and listing["sessions_total"] == 1 and listing["refused"] == 1
            assert listing["sessions"][0]["id"] == created["session"]["id"]

        proc.send_signal(signal.SIGINT)  # Ctrl-C
        with trio.move_on_after(20) as hung:  # it takes ~0.3 s; 20 s only for a very loaded machine
            await proc.wait()
        if hung.cancelled_caught:
            proc.send_signal(signal.SIGABRT)
            await proc.wait()
        err = (await _read_all(proc.stderr)).decode()
        assert not hung.cancelled_caught, f"mock-openai did not exit on Ctrl-C; its stacks:\n{err}"
        assert proc.returncode == 0, err
        assert "stopped after 1 session(s)" in err  # a 401 does not use up a session index
        assert "Traceback" not in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_sigterm_stops_the_command_cleanly():
    proc = await trio.lowlevel.open_process(CALLSIM + ["mock-openai", "--port", "0", "--any-key"],
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with trio.fail_after(20):
            first = await _read_line(proc.stdout, bytearray())
        assert first.startswith("mock OpenAI Realtime on ws://127.0.0.1:") and first.endswith("(ga, any key)")
        proc.terminate()
        with trio.fail_after(10):
            await proc.wait()
        err = (await _read_all(proc.stderr)).decode()
        assert proc.returncode == 0, err  # a container's stop is an orderly stop, like Ctrl-C
        assert "stopped after 0 session(s)" in err and "Traceback" not in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_keep_sessions_bounds_the_records_of_closed_sessions():
    """A soak keeps few records, so the mock's memory levels off early (loadtests/soak.py)."""
    proc = await trio.lowlevel.open_process(CALLSIM + ["mock-openai", "--port", "0", "--api-key", KEY,
                                                       "--keep-sessions", "2"], stdout=subprocess.PIPE)
    try:
        buf = bytearray()
        with trio.fail_after(20):
            m = URL_LINE.match(await _read_line(proc.stdout, buf))
        assert m, buf
        url, port = m.group(1), int(m.group(2))
        with trio.fail_after(20):
            for _ in range(4):
                async with open_websocket_url(url + "?model=gpt-realtime",
                                              extra_headers=[(b"authorization", f"Bearer {KEY}".encode())]) as ws:
                    assert json.loads(await ws.get_message())["type"] == "session.created"
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
                while (listing := (await http.get("/_mock/sessions")).json())["open_sessions"]:
                    await trio.sleep(0.05)
        assert listing["sessions_total"] == 4 and len(listing["sessions"]) == 2
        assert [s["index"] for s in listing["sessions"]] == [3, 4]
    finally:
        proc.kill()
        await proc.wait()
