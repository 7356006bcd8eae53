"""``callsim twilio-emulator`` as a user runs it: flags, the start-up line, the twilio client
against it, status callbacks from it, and Ctrl-C / SIGTERM ending it with exit 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

import pytest
from callsim.simulator.cli import main
from callsim.simulator.twilio_emu.command import DEFAULT_ACCOUNT_SID
from callsim.simulator.twilio_emu.numbers import PhoneNumber, parse_number
from twilio.request_validator import RequestValidator
from twilio.rest import Client

START = re.compile(r"^Twilio emulator on (http://127\.0\.0\.1:\d+) \(account (AC\w+), auth token (\S+)\); "
                   r'point the twilio client at it: client\.api\.base_url = "(http://[^"]+)"$')


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy") and k != "TWILIO_AUTH_TOKEN"}
    env.update(NO_PROXY="127.0.0.1", PYTHONUNBUFFERED="1", **extra)
    return env


def _start(*flags: str, **env: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "callsim.simulator.cli", "twilio-emulator", "--port", "0", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(**env))
    first = proc.stdout.readline().rstrip("\n")
    if not first:
        proc.kill()
        pytest.fail(f"no start-up line; stderr: {proc.stderr.read()}")
    return proc, first


class _Receiver(BaseHTTPRequestHandler):
    got: list[tuple[str, dict[str, str], str]] = []
    arrived = threading.Event()

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        self.got.append((self.path, dict(parse_qsl(body)), self.headers.get("X-Twilio-Signature", "")))
        if self.path == "/incoming-call":  # the number's voice webhook: keep the call up
            twiml = b'<Response><Pause length="30"/></Response>'
            self.send_response(200)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(twiml)))
            self.end_headers()
            self.wfile.write(twiml)
            return
        self.send_response(204)
        self.end_headers()
        self.arrived.set()

    def log_message(self, *args):
        pass



@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_serves_the_twilio_client_sends_callbacks_and_stops_cleanly(stop):
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    _Receiver.got, _Receiver.arrived = [], threading.Event()
    local = f"http://127.0.0.1:{receiver.server_address[1]}"
    cb = f"{local}/status"
    proc, first = _start("--number", "+15550001111=https://agent.example/incoming-call",
                         "--tunnel", f"https://agent.example={local}")
    try:
        m = START.match(first)
        assert m, first
        url, sid, token, base_url = m.groups()
        assert sid == DEFAULT_ACCOUNT_SID and base_url == url and re.fullmatch(r"[0-9a-f]{32}", token)
        assert proc.stdout.readline().strip() == "number +15550001111 -> https://agent.example/incoming-call"
        assert proc.stdout.readline().strip() == f"tunnel https://agent.example -> {local}"
        client = Client(sid, token)
        client.api.base_url = url
        call = client.calls.create(to="+15550001111", from_="+15550002222",
                                   twiml='<Response><Pause length="30"/></Response>', status_callback=cb)
        assert call.status == "queued" and call.sid.startswith("CA")
        deadline = time.monotonic() + 10
        while client.calls(call.sid).fetch().status != "in-progress" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.calls(call.sid).update(status="completed").status == "completed"
        assert _Receiver.arrived.wait(10)
        (hook_path, hook, hook_signature), (path, form, signature) = _Receiver.got[:2]
        # the number's webhook: signed for its public URL, reached through the tunnel
        assert hook_path == "/incoming-call" and hook["Direction"] == "inbound" and hook["From"] == "+15550002222"
        assert RequestValidator(token).validate("https://agent.example/incoming-call", hook, hook_signature)
        assert form["CallSid"] == call.sid and form["CallStatus"] == "completed"
        assert RequestValidator(token).validate(cb, form, signature)
    finally:
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=15)
        receiver.shutdown()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopped after 2 call(s)" in err  # the call and the inbound call it made


def test_token_from_the_environment_is_used_and_not_echoed():
    proc, first = _start("--account-sid", "AC" + "ab" * 16, TWILIO_AUTH_TOKEN="secret-from-env")
    try:
        assert "secret-from-env" not in first and "auth token from $TWILIO_AUTH_TOKEN" in first
        url = re.search(r"on (http://127\.0\.0\.1:\d+) ", first).group(1)
        client = Client("AC" + "ab" * 16, "secret-from-env")
        client.api.base_url = url
        assert client.calls.list() == []
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0 and "Traceback" not in err


@pytest.mark.parametrize("flags, says", [
    (["--number", "5550001111=http://127.0.0.1:5050/x"], "not an E.164 number"),
    (["--number", "+15550001111"], "expected NUMBER=URL"),
    (["--number", "+15550001111=ftp://host/x"], "not an http(s) URL"),
    (["--number", "+15550001111=http://h:99999/x"], "invalid port"),
    (["--port", "70000"], "at most 65535"),
    (["--account-sid", "AC123"], "not an account SID"),
    (["--tunnel", "https://a.example"], "expected PUBLIC_ORIGIN=LOCAL_ORIGIN"),
    (["--tunnel", "https://a.example/path=http://127.0.0.1:1"], "origin only"),
    (["--tunnel", "https://a.example=http://127.0.0.1:1", "--tunnel", "wss://a.example=ws://127.0.0.1:2"],
     "tunnelled twice"),
    (["--number", "+15550001111=http://a/x", "--number", "+15550001111=http://b/x"], "given twice"),
])
def test_bad_flags_exit_2_with_one_line(capsys, flags, says):
    assert main(["twilio-emulator", *flags]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_parse_number():
    assert parse_number("+15550001111=http://127.0.0.1:5050/incoming-call") == \
        PhoneNumber("+15550001111", "http://127.0.0.1:5050/incoming-call")
    assert parse_number(" +442071838750 = https://agent.example/voice ").number == "+442071838750"
    with pytest.raises(ValueError):
        parse_number("+0123=http://h/x")
