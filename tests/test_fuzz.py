"""The fuzzer, short, in the suite: both servers we ship, as processes, under generated abuse.

A few seconds per server of what ``loadtests/fuzz.py`` does for minutes: Hypothesis draws
malformed Twilio and Realtime messages, framing abuse, bad upgrades and malformed HTTP
requests (``loadtests/fuzzgen.py``), each played over its own connection and judged
(``loadtests/fuzzcheck.py``), derandomized with a fixed number of examples so CI sees the
same run every time. While it runs a good call goes through the bridge (and so through the
mock); afterwards every server must be alive, the good calls passed, nothing leaked.

Below the fuzz runs, one deterministic repro per finding the fuzzer made against the bridge
before issue 18's fixes (each failed then: a killed process, a head or a request closed with
no status, a socket kept open), and the framing-abuse table both servers answer right.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "loadtests"))
import fuzz  # noqa: E402
import fuzzcheck  # noqa: E402
import fuzzgen  # noqa: E402
import fuzzwire as fw  # noqa: E402
import servers  # noqa: E402
from goodcall import GoodCaller  # noqa: E402

EXAMPLES = 120  # per server: about 2 s of examples each

# Kinds of finding the fuzzer may still make on the bridge without failing the run: none (the
# two it made before issue 18, heads and requests closed with no status, have repros below).
KNOWN_BRIDGE_FINDINGS: set[str] = set()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    mock = servers.start_mock(tmp)
    bridge = servers.start_bridge(tmp, mock)
    auth = servers.start_bridge(tmp, mock, name="bridge_auth", auth_token=fuzz.AUTH_TOKEN)
    # good calls through the bridge (and the mock behind it) while the first two tests fuzz
    good = GoodCaller(bridge.url + "/incoming-call", seconds=8, every=4, log=tmp / "goodcall.log")
    yield {"mock": mock, "bridge": bridge, "bridge_auth": auth, "good": good}
    good.wait(5)
    for s in (bridge, auth, mock):
        s.stop()


def targets(stack, name: str) -> list[fuzzgen.Target]:
    s = stack[name]
    if name == "mock":
        return [fuzzgen.Target("mock", s.port, "/v1/realtime", ws_headers=(("Authorization", "Bearer sk-x"),),
                               http_paths=fuzz.MOCK_PATHS)]
    if name == "bridge":
        return [fuzzgen.Target("bridge", s.port, "/media-stream", http_paths=fuzz.BRIDGE_PATHS)]
    return [fuzzgen.Target("bridge_auth", s.port, "/media-stream",
                           ws_headers=(("X-Twilio-Signature", fuzz.stream_signature(s)),),
                           http_paths=fuzz.BRIDGE_PATHS, tokens=tuple(fuzz.call_tokens(s, 4)),
                           sign=fuzz.sign_webhook(s.url))]


def run_fuzz(server: servers.Server, tgts: list[fuzzgen.Target]) -> fuzzcheck.Tally:
    """EXAMPLES derandomized examples against ``server``; stops sending once it has died."""
    tally = fuzzcheck.Tally()
    last: list[fuzzgen.Case] = []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(fuzzgen.cases(tgts))
    def one(case: fuzzgen.Case) -> None:
        if not server.alive:
            return
        last[:] = [case]
        tally.add(case, fuzzcheck.play(case, tgts[0].port))

    one()
    assert server.alive, (f"{server.name} died (exit {server.exit_code}) on: {last[0].short(500) if last else '?'}\n"
                          f"{fuzz.last_exception(server.log)}")
    return tally


def test_fuzz_the_mock(stack):
    tally = run_fuzz(stack["mock"], targets(stack, "mock"))
    assert tally.cases == EXAMPLES and tally.by_kind["mock/messages"] > 20
    assert not tally.findings, json.dumps(tally.examples, indent=1)[:3000]
    assert servers.log_tracebacks(stack["mock"].log) == 0, stack["mock"].tail(40)
    assert not servers.log_lines(stack["mock"].log, fuzz.MOCK_SDK_REJECTS)  # what it sent, the SDK can parse


def test_fuzz_the_bridge(stack):
    tally = run_fuzz(stack["bridge"], targets(stack, "bridge"))
    assert tally.by_kind["bridge/messages"] > 20
    unknown = {k: n for k, n in tally.findings.items() if k.split("/", 1)[1] not in KNOWN_BRIDGE_FINDINGS}
    assert not unknown, json.dumps({k: tally.examples[k] for k in unknown}, indent=1)[:3000]


def test_good_calls_passed_while_fuzzing_and_nothing_leaked(stack):
    good = stack["good"]
    good.wait(40)
    assert good.results and not good.failed, good.results
    settled = servers.wait_settled(stack["bridge"], stack["mock"], 3.0)
    assert settled == {"bridge_active_calls": 0, "mock_open_sessions": 0}
    assert stack["bridge"].alive and stack["mock"].alive


def test_fuzz_the_bridge_with_an_auth_token(stack):
    """Signed upgrades, per-call tokens from the bridge's own webhook. (These examples do not
    happen to hit the non-string callSid that kills this branch's bridge: its repro is below.)"""
    tally = run_fuzz(stack["bridge_auth"], targets(stack, "bridge_auth"))
    unknown = {k: n for k, n in tally.findings.items() if k.split("/", 1)[1] not in KNOWN_BRIDGE_FINDINGS}
    assert not unknown, json.dumps({k: tally.examples[k] for k in unknown}, indent=1)[:3000]


# ------------------------------------------------------------ repros of the findings


def _start(call_sid: object, token: str = "x") -> bytes:
    return fw.text(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": "MZ" + "0" * 32, "start": {
        "accountSid": "AC" + "0" * 32, "streamSid": "MZ" + "0" * 32, "callSid": call_sid, "tracks": ["inbound"],
        "customParameters": {"token": token}, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                                              "channels": 1}}}))


@pytest.mark.parametrize("call_sid", [123, ["CA1"], {"deep": 1}])
def test_a_start_with_a_callsid_that_is_not_a_string_does_not_kill_the_bridge(tmp_path, call_sid):
    """Found by the fuzzer: with TWILIO_AUTH_TOKEN set, the per-call token check calls
    ``call_sid.encode`` and the AttributeError ends the process (every call on it)."""
    mock = servers.start_mock(tmp_path)
    bridge = servers.start_bridge(tmp_path, mock, auth_token=fuzz.AUTH_TOKEN)
    try:
        case = fuzzgen.Case("bridge_auth", "messages", [_start(call_sid)],
                            upgrade=fw.upgrade("/media-stream", bridge.port,
                                               [("X-Twilio-Signature", fuzz.stream_signature(bridge))]))
        v = fuzzcheck.play(case, bridge.port)
        assert v.status == 101
        try:
            bridge.proc.wait(1)
        except Exception:
            pass
        assert bridge.alive, fuzz.last_exception(bridge.log)
    finally:
        bridge.stop()
        mock.stop()


@pytest.mark.parametrize("head", ["big", "http/1.0", "http/2.0"])
def test_a_media_stream_head_the_websocket_parser_refuses_is_answered_with_a_status(stack, head):
    """Found by the fuzzer: ``/media-stream`` heads that websockets' parser rejects — over the
    16 KiB the front door reads, or not HTTP/1.1 — get the connection closed with no HTTP answer."""
    port = stack["bridge"].port
    req = {"big": fw.upgrade("/media-stream", port, [("X-Big", "b" * 17_000)]),
           "http/1.0": fw.upgrade("/media-stream", port).replace(b"HTTP/1.1", b"HTTP/1.0", 1),
           "http/2.0": b"GET /media-stream HTTP/2.0\r\nHost: x\r\n\r\n"}[head]
    v = fuzzcheck.play(fuzzgen.Case("bridge", "handshake", [req], note="whole"), port)
    assert v.status is not None and 400 <= v.status < 500, v


def test_the_webhook_honours_connection_close(stack):
    """Found by the probe: after answering a request that said ``Connection: close`` the bridge
    keeps the socket open (RFC 9112 9.6: the server closes after the response)."""
    w = fw.Wire(stack["bridge"].port)
    try:
        w.send(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        a = w.read_until(lambda a: w.response_complete(), 3)
        assert a.status == 200
        w.read_until(None, 2)
        assert a.eof, "the connection was still open 2 s after the response"
    finally:
        w.close()


ABUSE = {  # frame -> the close code RFC 6455 asks for (None: no close; a ping is answered by a pong)
    "reserved opcode": (fw.frame(3, b"x"), 1002),
    "reserved bits": (fw.text(b"{}", rsv=4), 1002),
    "unmasked client frame": (fw.text(b"{}", mask=False), 1002),
    "fragmented ping": (fw.frame(fw.OP_PING, b"p", fin=False), 1002),
    "ping over 125 bytes": (fw.frame(fw.OP_PING, b"p" * 126), 1002),
    "continuation of nothing": (fw.frame(fw.OP_CONT, b"x"), 1002),
    "close code 1005 sent": (fw.close(1005), 1002),
    "close code 999": (fw.close(999), 1002),
    "1-byte close payload": (fw.frame(fw.OP_CLOSE, b"\x03"), 1002),
    "close reason not UTF-8": (fw.close(1000, b"\xff"), 1007),
    "text not UTF-8": (fw.text(b"\xff\xfe"), 1007),
    "17 MiB message declared": (fw.frame(fw.OP_TEXT, b"", length=17 * 2**20), 1009),
    "ping": (fw.frame(fw.OP_PING, b"hi"), None),
}


@pytest.mark.parametrize("server", ["mock", "bridge"])
@pytest.mark.parametrize("abuse", list(ABUSE))
def test_framing_abuse_is_answered_with_the_rfc_close_code(stack, server, abuse):
    data, code = ABUSE[abuse]
    s = stack[server]
    path, headers = ("/v1/realtime", [("Authorization", "Bearer sk-x")]) if server == "mock" else ("/media-stream", [])
    w = fw.Wire(s.port)
    try:
        w.send(fw.upgrade(path, s.port, headers))
        a = w.read_until(lambda a: a.status is not None, 5)
        assert a.status == 101
        w.send(data)
        if code is None:
            w.read_until(lambda a: any(op == fw.OP_PONG for op, _ in a.frames), 5)
            assert (fw.OP_PONG, b"hi") in a.frames
        else:
            w.read_until(lambda a: a.close_code is not None, 5)
            assert a.close_code == code
    finally:
        w.close()


def test_a_chunked_body_cut_short_by_eof_does_not_kill_the_bridge(tmp_path):
    """hypercorn answers the incomplete chunked body (h11 RemoteProtocolError) with a 400 while its
    ``_close`` half-closes the same socket: trio raises BusyResourceError in the connection's
    task, nothing in ``bridge/frontdoor.py`` catches it, and the process exits (a few tries)."""
    mock = servers.start_mock(tmp_path)
    bridge = servers.start_bridge(tmp_path, mock)
    try:
        for _ in range(20):
            w = fw.Wire(bridge.port)
            w.send(b"POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc")
            w.half_close()
            w.read_until(None, 3)
            w.close()
            try:
                bridge.proc.wait(0.2)
            except Exception:
                pass
            assert bridge.alive, fuzz.last_exception(bridge.log)
    finally:
        bridge.stop()
        mock.stop()
