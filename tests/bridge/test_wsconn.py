"""The bridge's lean WebSocket (:mod:`callsim.bridge.wsconn`) and its front door, against independent
peers: wsproto driven by hand over a real socket pair, trio-websocket, raw HTTP."""

from __future__ import annotations

import logging
import shutil
import socket
import ssl
import subprocess
from functools import partial

import httpx
import pytest
import trio
import trio.testing
from callsim.bridge import fdstream
from callsim.bridge.httphead import MAX_HEAD_BYTES
from callsim.bridge.server import running_bridge
from callsim.bridge.settings import Settings
from callsim.bridge.wsconn import (
    ConnectionClosed,
    HandshakeError,
    WebSocket,
    accept,
    connect,
)
from trio_websocket import ConnectionClosed as TWClosed
from trio_websocket import open_websocket_url, serve_websocket
from websockets.protocol import State
from wsproto import ConnectionType
from wsproto import WSConnection as WSProto
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)


class Peer:
    """A WebSocket client made of wsproto and a socket: every byte is under the test's control."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSProto(ConnectionType.CLIENT)
        self.events: list = []

    async def send(self, event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def next_event(self):
        while not self.events:
            data = await self.stream.receive_some(65536)
            self.ws.receive_data(data or None)
            self.events += list(self.ws.events())
            if not data and not self.events:
                raise EOFError
        return self.events.pop(0)


async def _pair(max_size: int = 2**20) -> tuple[WebSocket, Peer]:
    """A handshaken WebSocket (server side) and its wsproto peer, over a real socket pair."""
    a, b = trio.socket.socketpair()
    server_stream, client_stream = trio.SocketStream(a), trio.SocketStream(b)
    peer = Peer(client_stream)
    await peer.send(Request(host="127.0.0.1", target="/media-stream"))
    head = await server_stream.receive_some(65536)
    conn = await accept(server_stream, head, max_message_size=max_size, refuse=lambda request: None)
    assert isinstance(await peer.next_event(), AcceptConnection)
    return conn, peer


async def test_messages_both_ways_including_fragmented_ones():
    conn, peer = await _pair()
    await peer.send(TextMessage('{"event":"connected"}'))
    assert await conn.receive_message() == '{"event":"connected"}'
    await peer.send(TextMessage('{"event":', message_finished=False))
    await peer.send(TextMessage('"media"}', message_finished=True))
    await peer.send(BytesMessage(b"\x00\xff", message_finished=True))
    assert await conn.receive_message() == '{"event":"media"}'
    assert await conn.receive_message() == b"\x00\xff"
    await conn.send_text('{"event":"clear"}')
    event = await peer.next_event()
    assert isinstance(event, TextMessage) and event.data == '{"event":"clear"}'


async def test_a_ping_is_answered_while_reading():
    conn, peer = await _pair()
    await peer.send(Ping(b"are you there"))
    await peer.send(TextMessage("after the ping"))
    assert await conn.receive_message() == "after the ping"
    event = await peer.next_event()
    assert isinstance(event, Pong) and event.payload == b"are you there"


async def test_an_oversized_message_closes_with_1009():
    conn, peer = await _pair(max_size=1024)
    await peer.send(TextMessage("x" * 5000))
    with pytest.raises(ConnectionClosed) as info:
        await conn.receive_message()
    assert info.value.code == 1009
    event = await peer.next_event()
    assert isinstance(event, CloseConnection) and event.code == 1009


async def test_invalid_utf8_in_a_text_frame_closes_with_1007():
    conn, peer = await _pair()
    # a text frame whose payload is not UTF-8 (wsproto would refuse to build one)
    frame = bytearray([0x81, 0x80 | 2, 1, 2, 3, 4])
    frame += bytes(b ^ m for b, m in zip(b"\xff\xfe", b"\x01\x02"))
    await peer.stream.send_all(bytes(frame))
    with pytest.raises(ConnectionClosed) as info:
        await conn.receive_message()
    assert info.value.code == 1007
    raw = await peer.stream.receive_some(65536)
    assert raw[0] == 0x88 and int.from_bytes(raw[2:4], "big") == 1007  # the close frame went out


async def test_the_peers_close_is_answered_and_reported():
    conn, peer = await _pair()
    await peer.send(CloseConnection(code=4000, reason="bye"))
    with pytest.raises(ConnectionClosed) as info:
        await conn.receive_message()
    assert (info.value.code, info.value.reason) == (4000, "bye")
    event = await peer.next_event()
    assert isinstance(event, CloseConnection) and event.code == 4000
    with pytest.raises(ConnectionClosed):
        await conn.send_text("too late")


async def test_a_peer_that_vanishes_gives_1006():
    conn, peer = await _pair()
    await peer.stream.aclose()
    with pytest.raises(ConnectionClosed) as info:
        await conn.receive_message()
    assert info.value.code == 1006


async def test_concurrent_senders_never_interleave_frames():
    """60 senders, messages up to 150 KB: the socket buffer fills, writes block
    part-way, and the others must queue behind them in order."""
    conn, peer = await _pair()
    texts = {f'{{"event":"media","n":{i},"pad":"{"p" * (i * 7919 % 150_000)}"}}' for i in range(60)}
    got: set[str] = set()

    async def read_all() -> None:
        part = ""
        while len(got) < len(texts):
            event = await peer.next_event()
            assert isinstance(event, Message)
            part += event.data  # wsproto hands a big message over in pieces
            if event.message_finished:
                got.add(part)
                part = ""

    async with trio.open_nursery() as n:
        for t in texts:
            n.start_soon(conn.send_text, t)
        n.start_soon(read_all)
    assert got == texts


async def test_close_while_another_task_reads_ends_that_read():
    conn, peer = await _pair()
    seen: list[BaseException] = []

    async def reader() -> None:
        try:
            await conn.receive_message()
        except ConnectionClosed as exc:
            seen.append(exc)

    async with trio.open_nursery() as n:
        n.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        await conn.aclose(1000, "hang up")
    assert len(seen) == 1 and isinstance(seen[0], ConnectionClosed)
    event = await peer.next_event()
    assert isinstance(event, CloseConnection) and event.code == 1000 and event.reason == "hang up"


async def test_aclose_completes_the_close_handshake():
    conn, peer = await _pair()

    async def answer() -> None:
        event = await peer.next_event()
        assert isinstance(event, CloseConnection)
        await peer.send(event.response())

    async with trio.open_nursery() as n:
        n.start_soon(answer)
        await conn.aclose(1000, "done")
    assert conn.protocol.close_rcvd is not None and conn.protocol.close_rcvd.code == 1000
    assert conn.protocol.state in (State.CLOSING, State.CLOSED)
    with pytest.raises(trio.ClosedResourceError):  # and the socket is closed
        await conn.stream.send_all(b"x")


# ------------------------------------------------------------------ client


async def test_client_connect_sends_headers_and_talks():
    seen: dict = {}

    async def handler(request) -> None:
        seen["auth"] = dict(request.headers).get(b"authorization")
        ws = await request.accept()
        await ws.send_message('{"type":"session.created"}')
        seen["echo"] = await ws.get_message()
        with pytest.raises(TWClosed):
            await ws.get_message()
        seen["close"] = ws.closed.code

    async with trio.open_nursery() as n:
        server = await n.start(serve_websocket, handler, "127.0.0.1", 0, None)
        port = server.port
        conn = await connect(f"ws://127.0.0.1:{port}/v1/realtime?model=m", [(b"Authorization", b"Bearer k")],
                             timeout=5, max_message_size=2**20)
        assert await conn.receive_message() == '{"type":"session.created"}'
        await conn.send_text('{"type":"session.update"}')
        await conn.aclose(1000, "call ended")
        await trio.testing.wait_all_tasks_blocked()
        n.cancel_scope.cancel()
    assert seen == {"auth": b"Bearer k", "echo": '{"type":"session.update"}', "close": 1000}


async def test_client_connect_reports_the_refusals_http_status():
    async def handler(request) -> None:
        await request.reject(401, body=b'{"error":"bad key"}')

    async with trio.open_nursery() as n:
        server = await n.start(serve_websocket, handler, "127.0.0.1", 0, None)
        with pytest.raises(HandshakeError) as info:
            await connect(f"ws://127.0.0.1:{server.port}/v1/realtime", [], timeout=5, max_message_size=2**20)
        n.cancel_scope.cancel()
    assert info.value.status_code == 401 and b"bad key" in info.value.body


async def test_client_connect_to_a_closed_port_is_an_oserror():
    s = trio.socket.socket()
    await s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(OSError):
        await connect(f"ws://127.0.0.1:{port}/v1/realtime", [], timeout=5, max_message_size=2**20)


# ------------------------------------------------------------------ front door


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(_env_file=None, port=0, openai_realtime_url="ws://127.0.0.1:9/v1/realtime",  # type: ignore[call-arg]
                    database_path=tmp_path / "t.db")


async def test_http_routes_share_the_port_with_keep_alive(settings):
    async with running_bridge(settings) as (app, base):
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            for _ in range(3):  # one kept-alive connection: the replayed head, then hypercorn reads on
                r = await http.get("/health")
                assert r.status_code == 200 and r.json()["status"] == "ok"
            r = await http.post("/incoming-call", data={"CallSid": "CA" + "0" * 32})
            assert r.status_code == 200 and "<Stream" in r.text
            assert (await http.get("/nope")).status_code == 404


async def test_a_plain_get_of_the_stream_path_is_refused(settings):
    async with running_bridge(settings) as (app, base):
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            r = await http.get("/media-stream")
        assert r.status_code in (400, 426)
        assert not app.calls


async def test_a_huge_frame_on_the_stream_closes_that_call_only(settings, caplog):
    caplog.set_level(logging.INFO)
    async with running_bridge(settings) as (app, base):
        url = base.replace("http", "ws") + "/media-stream"
        async with open_websocket_url(url) as healthy:
            async with open_websocket_url(url) as bad:
                with pytest.raises(TWClosed):  # the bridge closes as soon as it reads the frame's length
                    await bad.send_message("x" * (2 * 2**20))
                    await bad.get_message()
                assert bad.closed.code == 1009
                assert any("closed with 1009" in r.getMessage() for r in caplog.records)
            # the other call is still served: a malformed message gets the bridge's answer, not a close
            await healthy.send_message('{"event":"connected","protocol":"Call","version":"1.0.0"}')
            with trio.move_on_after(0.3):
                await healthy.get_message()
            assert healthy.closed is None
        assert await app.wait_idle(2.0)


def _certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
async def test_tls_serves_https_and_wss_on_one_port(tmp_path):
    cert, key = _certificate(tmp_path)
    s = Settings(_env_file=None, port=0, openai_realtime_url="ws://127.0.0.1:9/v1/realtime",  # type: ignore[call-arg]
                 database_path=tmp_path / "t.db", tls_cert_file=cert, tls_key_file=key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    async with running_bridge(s) as (app, base):
        port = base.rsplit(":", 1)[1]
        async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", verify=client_ctx, timeout=5) as http:
            assert (await http.get("/health")).json()["status"] == "ok"
        async with open_websocket_url(f"wss://127.0.0.1:{port}/media-stream", ssl_context=client_ctx) as ws:
            await ws.send_message("not json")  # answered by the bridge's bad-input handling, not a TLS error
            with trio.move_on_after(0.3):
                await ws.get_message()
            assert ws.closed is None
        assert await app.wait_idle(2.0)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
async def test_client_connects_over_wss(tmp_path):
    cert, key = _certificate(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def echo(request) -> None:
        ws = await request.accept()
        await ws.send_message(await ws.get_message())

    async with trio.open_nursery() as n:
        server = await n.start(partial(serve_websocket, echo, "127.0.0.1", 0, server_ctx))
        conn = await connect(f"wss://127.0.0.1:{server.port}/v1/realtime", [], timeout=5, max_message_size=2**20,
                             ssl_context=ssl.create_default_context(cafile=str(cert)))
        await conn.send_text("over tls")
        assert await conn.receive_message() == "over tls"
        await conn.aclose()
        n.cancel_scope.cancel()


async def test_accept_sends_the_refusal_and_raises():
    a, b = trio.socket.socketpair()
    server_stream, peer = trio.SocketStream(a), Peer(trio.SocketStream(b))
    await peer.send(Request(host="127.0.0.1", target="/media-stream"))
    head = await server_stream.receive_some(65536)
    seen = {}

    def refuse(request):
        seen["path"] = request.path
        return 403, "invalid signature"

    with pytest.raises(HandshakeError) as info:
        await accept(server_stream, head, max_message_size=2**20, refuse=refuse)
    assert info.value.status_code == 403 and seen == {"path": "/media-stream"}
    event = await peer.next_event()
    assert isinstance(event, RejectConnection) and event.status_code == 403


async def test_accept_answers_a_request_that_is_not_an_upgrade_with_an_error():
    a, b = trio.socket.socketpair()
    server_stream, client = trio.SocketStream(a), trio.SocketStream(b)
    with pytest.raises(HandshakeError) as info:
        await accept(server_stream, b"GET /media-stream HTTP/1.1\r\nHost: x\r\n\r\n", max_message_size=2**20,
                     refuse=lambda request: None)
    assert info.value.status_code in (400, 426)
    answer = await client.receive_some(65536)
    assert answer.startswith(f"HTTP/1.1 {info.value.status_code}".encode())


@pytest.mark.parametrize("extra, status", [(0, 101), (1, 431)])
async def test_accept_takes_a_head_of_the_limit_and_refuses_one_byte_more(extra, status):
    """The front door refuses bigger heads before :func:`accept` sees them; accept holds the same line."""
    a, b = trio.socket.socketpair()
    server_stream, client = trio.SocketStream(a), trio.SocketStream(b)
    start = (b"GET /media-stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
    pad = MAX_HEAD_BYTES + extra - len(start) - 2 - 4 * len(b"X-PadN: \r\n")  # 4 lines, each under 8 KiB
    head = start + b"".join(b"X-Pad%d: %s\r\n" % (i, b"p" * (pad // 4 + (i < pad % 4))) for i in range(4)) + b"\r\n"
    assert len(head) == MAX_HEAD_BYTES + extra
    if status == 101:
        conn = await accept(server_stream, head, max_message_size=2**20, refuse=lambda request: None)
        await conn.aclose(timeout=0)
    else:
        with pytest.raises(HandshakeError) as info:
            await accept(server_stream, head, max_message_size=2**20, refuse=lambda request: None)
        assert info.value.status_code == 431
    answer = await client.receive_some(65536)
    assert answer.startswith(f"HTTP/1.1 {status}".encode())


async def test_a_socket_closed_behind_the_fd_streams_back_is_never_touched_again():
    """The front door closes a connection's trio ``SocketStream`` itself, not through the FdStream
    the WebSocket made of it. The FdStream must then neither wait on, read nor write that fd
    number, which the kernel may already have handed to a new connection."""
    a, b = trio.socket.socketpair()
    raw = trio.SocketStream(a)
    fd = raw.socket.fileno()
    stream = fdstream.FdStream(raw)

    async def reader() -> None:
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive_some()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.sleep(0.05)  # the reader waits for the fd to be readable
        await raw.aclose()  # not stream.aclose(): trio wakes the reader anyway
    with socket.socket() as reused:  # the lowest free fd number: very likely the same
        assert reused.fileno() == fd
        reused.setblocking(False)
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"must not go anywhere")
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive_some()
        with pytest.raises(trio.ClosedResourceError):
            await stream.wait_send_all_might_not_block()
    b.close()
