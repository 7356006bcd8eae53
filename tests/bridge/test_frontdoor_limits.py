"""The front door under abuse: raw sockets on 127.0.0.1 against ``running_bridge``.

Each test writes the bytes a misbehaving (or merely old-fashioned) client
sends and checks what a well-behaved HTTP server answers: the connection
closed when asked or when idle, a 408 for a request that never completes, a
503 over the connection cap, 414/431/400 for heads the WebSocket parser cannot
take — and, after each, that the bridge still serves requests and calls.
Timeouts are settings, set to fractions of a second here; the slack allowed
above them is for a loaded CI machine.
"""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
import time
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
from callsim.bridge.httphead import MAX_HEAD_BYTES
from callsim.bridge.server import running_bridge
from callsim.bridge.settings import Settings
from callsim.simulator.caller.script import Hangup, Say, WaitForReply
from callsim.simulator.caller.trio_driver import place_call
from callsim.simulator.mock.behaviour import Behaviour, ThinkTime
from callsim.simulator.mock.server import MockConfig, running_mock
from hypercorn.protocol.h11 import H11Protocol

KEY = "sk-test-frontdoor"
SLACK_S = 2.0


@asynccontextmanager
async def bridge(tmp_path, **settings):
    s = Settings(_env_file=None, openai_api_key=KEY, port=0,  # type: ignore[call-arg]
                 openai_realtime_url=settings.pop("openai_realtime_url", "ws://127.0.0.1:9/v1/realtime"),
                 database_path=tmp_path / "bridge.sqlite3", **settings)
    async with running_bridge(s) as (app, base):
        yield app, base, int(base.rsplit(":", 1)[1])


async def connect(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port)


async def read_response(stream: trio.abc.Stream, buf: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response (Content-Length framed, as all of the bridge's are); extra bytes stay in ``buf``."""
    while b"\r\n\r\n" not in buf:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise EOFError(f"closed before a whole response head: {bytes(buf)!r}")
        buf += chunk
    head, _, _ = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    start = len(head) + 4
    end = start + int(headers.get("content-length", "0"))
    while len(buf) < end:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise EOFError("closed mid-body")
        buf += chunk
    body = bytes(buf[start:end])
    del buf[:end]
    return status, headers, body


async def seconds_until_closed(stream: trio.abc.Stream, limit: float) -> float | None:
    """Seconds until the server closes (EOF or reset; data before it is dropped), None if still open at ``limit``."""
    t0 = time.monotonic()
    with trio.move_on_after(limit):
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
        return time.monotonic() - t0
    return None


async def still_serves(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=5) as http:
        assert (await http.get("/health")).json()["status"] == "ok"


GET_HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
FORM = b"CallSid=CA0001&From=%2B15550001&To=%2B15550002"


# -------------------------------------------------------------- connections end


@pytest.mark.parametrize("request_bytes", [
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    b"POST /incoming-call HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s" % (len(FORM), FORM),
    b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",  # HTTP/1.0 closes by default
], ids=["get", "post-webhook", "http1.0"])
async def test_connection_close_is_honoured(tmp_path, request_bytes):
    async with bridge(tmp_path) as (_app, _base, port):
        stream = await connect(port)
        await stream.send_all(request_bytes)
        buf = bytearray()
        status, _, _ = await read_response(stream, buf)
        assert status == 200
        closed = await seconds_until_closed(stream, SLACK_S)
        assert closed is not None, "the bridge kept the connection open after a Connection: close request"


async def test_idle_keep_alive_is_closed_after_the_timeout(tmp_path):
    timeout = 0.5
    async with bridge(tmp_path, http_keep_alive_timeout_s=timeout) as (_app, _base, port):
        stream = await connect(port)
        buf = bytearray()
        for _ in range(2):  # still a keep-alive connection: the second request is served on it
            await stream.send_all(GET_HEALTH)
            status, _, _ = await read_response(stream, buf)
            assert status == 200
        closed = await seconds_until_closed(stream, timeout + SLACK_S)
        assert closed is not None, "an idle keep-alive connection was never closed"
        assert closed >= timeout - 0.05, f"closed after {closed:.3f} s, before the {timeout} s keep-alive timeout"


async def test_a_request_head_that_never_completes_gets_408(tmp_path):
    timeout = 0.5
    async with bridge(tmp_path, http_head_timeout_s=timeout) as (app, base, port):
        stream = await connect(port)
        await stream.send_all(b"GET /health HTTP/1.1\r\nHo")
        t0 = time.monotonic()
        status, headers, _ = await read_response(stream, bytearray())
        assert status == 408 and headers["connection"] == "close"
        assert time.monotonic() - t0 < timeout + SLACK_S
        assert await seconds_until_closed(stream, SLACK_S) is not None
        assert app.metrics.errors["http_head_timeout"] == 1
        await still_serves(base)


async def test_a_body_trickled_slower_than_the_request_timeout_gets_408(tmp_path):
    """A byte every 50 ms: never idle long enough for a per-read timeout, yet never complete."""
    timeout = 0.6
    async with bridge(tmp_path, http_request_timeout_s=timeout) as (app, base, port):
        stream = await connect(port)
        await stream.send_all(b"POST /incoming-call HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nCa")
        t0 = time.monotonic()

        async def trickle() -> None:
            try:
                while True:
                    await trio.sleep(0.05)
                    await stream.send_all(b"x")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            with trio.fail_after(timeout + SLACK_S):
                status, headers, _ = await read_response(stream, bytearray())
            nursery.cancel_scope.cancel()
        assert status == 408 and headers["connection"] == "close"
        assert time.monotonic() - t0 >= timeout - 0.05
        assert await seconds_until_closed(stream, SLACK_S) is not None
        assert app.metrics.errors["http_request_timeout"] == 1
        await still_serves(base)


# ------------------------------------------------------------ the connection cap


async def test_connections_over_the_cap_get_503_and_calls_still_work_after(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="callsim.bridge")
    cap, extra = 4, 3
    cfg = MockConfig(api_key=KEY, behaviour=Behaviour(think=ThinkTime("fixed", 100.0), seed=7))
    async with running_mock(cfg) as mock, \
            bridge(tmp_path, max_connections=cap, openai_realtime_url=mock.realtime_url) as (app, base, port):
        held = [await connect(port) for _ in range(cap)]
        for _ in range(extra):
            over = await connect(port)
            await over.send_all(GET_HEALTH)  # before the refusal comes: closing on it must not reset the 503 away
            status, headers, _ = await read_response(over, bytearray())
            assert (status, headers["connection"]) == (503, "close")
            assert await seconds_until_closed(over, SLACK_S) is not None
            await over.aclose()
        assert app.metrics.errors["connection_cap"] == extra
        reports = [r for r in caplog.records if "connection cap reached" in r.getMessage()]
        assert len(reports) == 1, "one log line per interval, not one per refusal"
        assert f"({cap} open)" in reports[0].getMessage() and "127.0.0.1:" in reports[0].getMessage()

        for stream in held:  # the bridge frees a place before it closes: once we see the close, it is free
            await stream.send_eof()
            assert await seconds_until_closed(stream, SLACK_S) is not None
            await stream.aclose()
        await still_serves(base)
        result = await place_call(base + "/incoming-call", [Say("caller_greeting"), WaitForReply(), Hangup()])
        assert result.ok, result.error
        assert app.metrics.errors["connection_cap"] == extra
        assert await app.wait_idle(2.0)


# ------------------------------------------------------- media-stream heads


def _media_head(*lines: bytes, target: bytes = b"/media-stream") -> bytes:
    return (b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            + b"".join(line + b"\r\n" for line in lines) + b"\r\n")


@pytest.mark.parametrize("head, status, logged", [
    (_media_head(b"X-Big: " + b"a" * 9000), 431, "media stream from 127.0.0.1:{port} not accepted: HTTP 431"),
    (_media_head(*(b"X-H%d: y" % i for i in range(200))), 431, "media stream from 127.0.0.1:{port} not accepted: HTTP 431"),
    (_media_head(*(b"X-H%d: %s" % (i, b"y" * 4000) for i in range(6))), 431,
     f"request head from 127.0.0.1:{{port}} over {MAX_HEAD_BYTES} bytes: 431"),
    (_media_head(target=b"/media-stream?x=" + b"a" * 9000), 414, "media stream from 127.0.0.1:{port} not accepted: HTTP 414"),
    (_media_head(b"this line has no colon"), 400, "media stream from 127.0.0.1:{port} not accepted: HTTP 400"),
    (b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"p" * MAX_HEAD_BYTES + b"\r\n\r\n", 431,
     f"request head from 127.0.0.1:{{port}} over {MAX_HEAD_BYTES} bytes: 431"),
], ids=["header-line-over-8k", "over-128-headers", "head-over-16k", "request-line-over-8k", "garbage", "http-head-over-16k"])
async def test_oversized_or_broken_heads_are_answered(tmp_path, caplog, head, status, logged):
    caplog.set_level(logging.INFO, logger="callsim.bridge")
    async with bridge(tmp_path) as (_app, base, port):
        stream = await connect(port)
        await stream.send_all(head)
        answered, headers, _ = await read_response(stream, bytearray())
        assert (answered, headers["connection"]) == (status, "close")
        assert await seconds_until_closed(stream, SLACK_S) is not None
        local_port = stream.socket.getsockname()[1]
        assert any(logged.format(port=local_port) in r.getMessage() for r in caplog.records), \
            [r.getMessage() for r in caplog.records]
        await still_serves(base)


def _head_of_size(start: bytes, size: int) -> bytes:
    """``start`` (a request line and headers, each ending in CRLF) padded with headers of at most
    4 KB (under every per-line limit) to exactly ``size`` bytes through the blank line."""
    room = size - len(start) - 2
    n = -(-room // 4000)
    values = [(room - 11 * n) // n] * n
    values[-1] += room - 11 * n - sum(values)
    head = start + b"".join(b"X-Pad%02d: %s\r\n" % (i, b"p" * v) for i, v in enumerate(values)) + b"\r\n"
    assert len(head) == size
    return head


@pytest.mark.parametrize("start, accepted", [
    (_media_head()[:-2], 101),
    (b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n", 200),
], ids=["websocket-upgrade", "plain-http"])
@pytest.mark.parametrize("first_read", [None, 1000], ids=["one-read", "two-reads"])
async def test_one_head_size_limit_on_both_paths(tmp_path, caplog, start, accepted, first_read):
    """A head of MAX_HEAD_BYTES through its blank line is served, one byte more is 431, on the media
    stream's path and hypercorn's alike, whether or not the read that ends the head crosses the limit."""
    caplog.set_level(logging.INFO, logger="callsim.bridge")
    async with bridge(tmp_path) as (app, base, port):
        for size, status in [(MAX_HEAD_BYTES, accepted), (MAX_HEAD_BYTES + 1, 431)]:
            head = _head_of_size(start, size)
            stream = await connect(port)
            if first_read:
                await stream.send_all(head[:first_read])
                await trio.sleep(0.05)  # the front door reads the first part on its own
                head = head[first_read:]
            await stream.send_all(head)
            answered, _, _ = await read_response(stream, bytearray())
            assert answered == status, size
            await stream.aclose()
        assert app.metrics.errors["http_head_too_large"] == 1
        assert any(f"over {MAX_HEAD_BYTES} bytes: 431" in r.getMessage() for r in caplog.records)
        await still_serves(base)


async def test_after_an_error_answer_the_bridge_reads_on_instead_of_resetting(tmp_path):
    """RFC 9112 §9.6: closing on unread bytes sends a reset that may destroy the answer at the
    client (Linux keeps it; other stacks and middleboxes do not), so the bridge half-closes and
    reads what the client is still sending. A client still writing sees no reset."""
    async with bridge(tmp_path) as (_app, _base, port):
        stream = await connect(port)
        await stream.send_all(b"GET /media-stream HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"p" * MAX_HEAD_BYTES)
        status, _, _ = await read_response(stream, bytearray())
        assert status == 431
        with trio.move_on_after(0.5):  # 50 writes of 1 KB; a reset fails one of them within a few ms
            while True:
                await stream.send_all(b"p" * 1024)  # raises BrokenResourceError once reset
                await trio.sleep(0.01)
        await stream.send_eof()
        assert await seconds_until_closed(stream, SLACK_S) is not None


async def test_a_chunked_body_cut_short_is_answered_without_two_tasks_sending_at_once(tmp_path, caplog):
    """Found by the fuzzer: on a chunked body cut short by the client's EOF, hypercorn answers
    400 from the connection's task while Quart's task still sends its own response on the same
    stream; trio refused the second sender (``BusyResourceError``, ~1 try in 8), a crash of the
    whole bridge before the front door's catch-all. Sends on the stream are now serialised."""
    async with bridge(tmp_path) as (_app, _base, port):
        for _ in range(60):
            stream = await connect(port)
            await stream.send_all(b"POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc")
            await stream.send_eof()
            assert await seconds_until_closed(stream, SLACK_S) is not None
            await stream.aclose()
        await still_serves(_base)
    busy = [r for r in caplog.records if r.exc_info and "BusyResourceError" in repr(r.exc_info[1])
            or "BusyResourceError" in r.getMessage()]
    assert busy == [], busy[0].getMessage()


# ------------------------------------------------- one connection's exception


async def test_an_exception_in_the_media_path_does_not_stop_the_bridge(tmp_path, caplog, monkeypatch):
    async with bridge(tmp_path) as (app, base, port):
        def broken(signature, peer):
            raise RuntimeError("injected: a broken refusal check")
        monkeypatch.setattr(app, "media_stream_refusal", broken)
        stream = await connect(port)
        await stream.send_all(_media_head())
        assert await seconds_until_closed(stream, SLACK_S) is not None
        local_port = stream.socket.getsockname()[1]
        await still_serves(base)
    (record,) = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert f"127.0.0.1:{local_port}" in record.getMessage() and "injected" in str(record.exc_info[1].exceptions)
    assert app.metrics.errors["connection_crash"] == 1


async def test_an_exception_in_hypercorn_does_not_stop_the_bridge(tmp_path, caplog, monkeypatch):
    async with bridge(tmp_path) as (app, base, port):
        async def broken(self, event):  # stands for a bug in the HTTP stack, as hypercorn#203 was
            raise RuntimeError("injected: a protocol bug")
        with monkeypatch.context() as patch:
            patch.setattr(H11Protocol, "_check_protocol", broken)
            stream = await connect(port)
            await stream.send_all(GET_HEALTH)
            assert await seconds_until_closed(stream, SLACK_S) is not None
        await still_serves(base)
    assert any("unexpected error" in r.getMessage() for r in caplog.records)
    assert app.metrics.errors["connection_crash"] == 1


# --------------------------------------------------------------------- TLS


def _certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
async def test_over_tls_connection_close_and_keep_alive_timeout_hold(tmp_path):
    cert, key = _certificate(tmp_path)
    ctx = ssl.create_default_context(cafile=str(cert))
    timeout = 0.5
    async with bridge(tmp_path, tls_cert_file=cert, tls_key_file=key, http_keep_alive_timeout_s=timeout) \
            as (_app, _base, port):
        for request_bytes, limit in [(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", SLACK_S),
                                     (GET_HEALTH, timeout + SLACK_S)]:
            stream = trio.SSLStream(await connect(port), ctx, server_hostname="127.0.0.1")
            await stream.send_all(request_bytes)
            status, _, _ = await read_response(stream, bytearray())
            assert status == 200
            assert await seconds_until_closed(stream, limit) is not None, request_bytes
            await trio.aclose_forcefully(stream)
