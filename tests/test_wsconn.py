"""callsim.simulator.net.wsconn against real peers on 127.0.0.1.

The other side is trio-websocket (wsproto underneath) or, where trio-websocket
cannot do it (fragments, a bare TCP peer), wsproto or raw bytes on a trio socket.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import struct
import subprocess
from contextlib import asynccontextmanager
from typing import AsyncIterator, Awaitable, Callable

import pytest
import trio
import trio_websocket
import wsproto
from callsim.simulator.net import wsconn
from callsim.simulator.net.wsconn import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    ServerHandshake,
)
from wsproto.events import AcceptConnection, BytesMessage, Request, TextMessage

HOST = "127.0.0.1"


# ------------------------------------------------------------------ helpers


@asynccontextmanager
async def tw_server(handler: Callable[[trio_websocket.WebSocketRequest], Awaitable[None]],
                    max_message_size: int = 2**20) -> AsyncIterator[str]:
    """A trio-websocket server; yields its ws:// URL."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(lambda task_status: trio_websocket.serve_websocket(
            handler, HOST, 0, ssl_context=None, max_message_size=max_message_size, task_status=task_status))
        try:
            yield f"ws://{HOST}:{server.port}/path?q=1"
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def tcp_server(handler: Callable[[trio.SocketStream], Awaitable[None]]) -> AsyncIterator[int]:
    """A bare TCP server; yields its port."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(lambda task_status: trio.serve_tcp(handler, 0, host=HOST, task_status=task_status))
        try:
            yield listeners[0].socket.getsockname()[1]
        finally:
            nursery.cancel_scope.cancel()


async def read_head(stream: trio.SocketStream) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        data = await stream.receive_some(4096)
        assert data
        head += data
    return head


def our_server(on_ws: Callable[[wsconn.WebSocket], Awaitable[None]], *, max_message_size: int = 2**20,
               subprotocol: str | None = None) -> Callable[[trio.SocketStream], Awaitable[None]]:
    """A tcp_server handler: wsconn's server side, then ``on_ws``."""
    async def handler(stream: trio.SocketStream) -> None:
        hs = ServerHandshake(stream, await read_head(stream), max_message_size=max_message_size)
        ws = await hs.accept(subprotocol=subprotocol)
        try:
            await on_ws(ws)
        finally:
            await ws.aclose()
    return handler


async def wsproto_server_once(stream: trio.SocketStream, events: list[wsproto.events.Event],
                              received: list[object], done: trio.Event | None = None) -> None:
    """Accept one upgrade with wsproto, send ``events``, record what comes back until close;
    then set ``done`` (a test waits on it: the client side may finish first, since a send
    that the kernel takes whole no longer yields, and leaving ``tcp_server`` cancels us)."""
    try:
        await _wsproto_server_once(stream, events, received)
    finally:
        if done is not None:
            done.set()


async def _wsproto_server_once(stream: trio.SocketStream, events: list[wsproto.events.Event],
                               received: list[object]) -> None:
    conn = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    while True:
        conn.receive_data(await stream.receive_some(4096))
        reqs = [e for e in conn.events() if isinstance(e, Request)]
        if reqs:
            break
    await stream.send_all(conn.send(AcceptConnection()))
    for ev in events:
        await stream.send_all(conn.send(ev))
    while True:
        data = await stream.receive_some(4096)
        if not data:
            return
        conn.receive_data(data)
        for ev in conn.events():
            received.append(ev)
            if isinstance(ev, wsproto.events.CloseConnection):
                await stream.send_all(conn.send(ev.response()))
                return


# ------------------------------------------------------------------ client side


async def test_text_and_binary_round_trip_with_extra_headers_and_subprotocol():
    seen: dict[str, object] = {}

    async def echo(request: trio_websocket.WebSocketRequest) -> None:
        seen["headers"] = dict(request.headers)
        seen["path"] = request.path
        seen["protocols"] = request.proposed_subprotocols
        ws = await request.accept(subprotocol="realtime")
        try:
            while True:
                await ws.send_message(await ws.get_message())
        except trio_websocket.ConnectionClosed:
            pass

    async with tw_server(echo) as url:
        async with wsconn.open_websocket(url, [(b"X-Twilio-Signature", b"sig"), ("User-Agent", "ua/1")],
                                         subprotocols=["realtime"]) as ws:
            assert ws.subprotocol == "realtime"
            await ws.send_text("héllo")
            assert await ws.receive_message() == "héllo"
            await ws.send_bytes(b"\x00\xff")
            got = await ws.receive_message()
            assert got == b"\x00\xff" and type(got) is bytes
            await ws.send_texts(["a", b"b", "c"])
            assert [await ws.receive_message() for _ in range(3)] == ["a", "b", "c"]
    assert seen["headers"][b"x-twilio-signature"] == b"sig"
    assert seen["headers"][b"user-agent"] == b"ua/1"
    assert seen["path"] == "/path?q=1"
    assert list(seen["protocols"]) == ["realtime"]


async def test_fragmented_messages_are_assembled():
    received: list[object] = []
    frames = [TextMessage("hél", message_finished=False), TextMessage("lo ", message_finished=False),
              TextMessage("wörld", message_finished=True),
              BytesMessage(b"\x01\x02", message_finished=False), BytesMessage(b"\x03", message_finished=True),
              TextMessage("after", message_finished=True)]

    async with tcp_server(lambda s: wsproto_server_once(s, frames, received)) as port:
        async with wsconn.open_websocket(f"ws://{HOST}:{port}/") as ws:
            assert await ws.receive_message() == "hél" + "lo " + "wörld"
            assert await ws.receive_message() == b"\x01\x02\x03"
            assert await ws.receive_message() == "after"


async def test_ping_is_answered_while_receiving():
    pongs = trio.Event()

    async def pinger(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        with trio.fail_after(2):
            await ws.ping(b"p1")  # returns when the pong arrives
            await ws.ping(b"p2")
        pongs.set()
        await ws.send_message("done")
        await ws.aclose()

    async with tw_server(pinger) as url:
        async with wsconn.open_websocket(url) as ws:
            assert await ws.receive_message() == "done"
    assert pongs.is_set()


async def test_oversized_message_closes_1009_both_sides():
    server_saw: list[int] = []

    async def big(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message("x" * 100)
        await ws.send_message("y" * 5000)
        try:
            await ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            server_saw.append(exc.reason.code)

    async with tw_server(big) as url:
        async with wsconn.open_websocket(url, max_message_size=1000) as ws:
            assert await ws.receive_message() == "x" * 100
            with pytest.raises(ConnectionClosed) as info:
                await ws.receive_message()
            assert info.value.code == 1009
            with pytest.raises(ConnectionClosed):  # and stays closed, for sends too
                await ws.send_text("late")
            with trio.fail_after(2):
                while not server_saw:
                    await trio.sleep(0.01)
    assert server_saw == [1009]


async def test_oversized_fragmented_message_closes_1009():
    received: list[object] = []
    done = trio.Event()
    frames = [BytesMessage(b"a" * 600, message_finished=False), BytesMessage(b"b" * 600, message_finished=True)]
    async with tcp_server(lambda s: wsproto_server_once(s, frames, received, done)) as port:
        async with wsconn.open_websocket(f"ws://{HOST}:{port}/", max_message_size=1000) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.receive_message()
            assert info.value.code == 1009
        with trio.fail_after(5):
            await done.wait()
    closes = [e for e in received if isinstance(e, wsproto.events.CloseConnection)]
    assert closes and closes[0].code == 1009


async def test_peer_vanishing_raises_connection_closed_1006():
    async def vanish(stream: trio.SocketStream) -> None:
        hs = ServerHandshake(stream, await read_head(stream))
        ws = await hs.accept()
        await ws.send_text("last words")
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()  # RST, no close frame

    async with tcp_server(vanish) as port:
        async with wsconn.open_websocket(f"ws://{HOST}:{port}/") as ws:
            assert await ws.receive_message() == "last words"
            with pytest.raises(ConnectionClosed) as info:
                await ws.receive_message()
            assert info.value.code == 1006 and info.value.reason is None
            with pytest.raises(ConnectionClosed) as info:
                await ws.send_text("anyone?")
            assert info.value.code == 1006


async def test_handshake_rejection_carries_status_and_body():
    async def refuse(request: trio_websocket.WebSocketRequest) -> None:
        await request.reject(403, extra_headers=[(b"x-why", b"because")], body=b"busy")

    async with tw_server(refuse) as url:
        with pytest.raises(ConnectionRejected) as info:
            await wsconn.connect(url)
    assert info.value.status_code == 403 and info.value.body == b"busy"
    assert info.value.headers["x-why"] == "because"
    assert str(info.value) == "HTTP 403"


async def test_connect_refused_is_an_os_error_and_silence_a_timeout():
    with socket.socket() as s:  # a port nobody listens on
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    with pytest.raises(OSError):
        await wsconn.connect(f"ws://{HOST}:{port}/")

    async def mute(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with tcp_server(mute) as port:
        with pytest.raises(ConnectionTimeout):
            await wsconn.connect(f"ws://{HOST}:{port}/", connect_timeout=0.2)


async def test_close_codes_and_reasons_both_ways_client_side():
    got: list[tuple[int, str | None]] = []

    async def server(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        msg = await ws.get_message()
        if msg == "close me":
            await ws.aclose(4002, "done here")
        else:
            try:
                await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                got.append((exc.reason.code, exc.reason.reason))

    async with tw_server(server) as url:
        # the server closes: the client sees its code and reason
        async with wsconn.open_websocket(url) as ws:
            await ws.send_text("close me")
            with pytest.raises(ConnectionClosed) as info:
                await ws.receive_message()
            assert (info.value.code, info.value.reason) == (4002, "done here")
        # the client closes: the server sees its code and reason
        ws = await wsconn.connect(url)
        await ws.send_text("wait")
        with trio.fail_after(3):
            await ws.aclose(4001, "bye")
            assert ws.closed is not None and ws.closed.code == 4001
            while not got:
                await trio.sleep(0.01)
    assert got == [(4001, "bye")]


async def test_many_tasks_sending_at_once_interleave_whole_messages():
    got: list[str] = []

    async def sink(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                got.append(await ws.get_message())
        except trio_websocket.ConnectionClosed:
            pass

    async with tw_server(sink, max_message_size=2**22) as url:
        async with wsconn.open_websocket(url) as ws:
            async def sender(k: int) -> None:
                for i in range(50):
                    await ws.send_text(f"{k}:{i}:" + "z" * (200_000 if i % 10 == 0 else 300))
            async with trio.open_nursery() as nursery:
                for k in range(8):
                    nursery.start_soon(sender, k)
        with trio.fail_after(5):
            while len(got) < 400:
                await trio.sleep(0.01)
    for k in range(8):  # every message whole, each sender's in order
        mine = [m for m in got if m.startswith(f"{k}:")]
        assert [int(m.split(":")[1]) for m in mine] == list(range(50))


# ------------------------------------------------------------------ server side


async def test_server_accepts_subprotocol_and_echoes():
    async def echo(ws: wsconn.WebSocket) -> None:
        try:
            while True:
                m = await ws.receive_message()
                await ws.send_message(m)
        except ConnectionClosed:
            pass

    async with tcp_server(our_server(echo, subprotocol="realtime")) as port:
        async with trio_websocket.open_websocket_url(
                f"ws://{HOST}:{port}/v1", subprotocols=["realtime", "openai-insecure-api-key.k"]) as ws:
            assert ws.subprotocol == "realtime"
            await ws.send_message("hi")
            assert await ws.get_message() == "hi"
            await ws.send_message(b"\x00\x01")
            assert await ws.get_message() == b"\x00\x01"


async def test_server_parses_the_head_it_is_given():
    seen: dict[str, object] = {}

    async def handler(stream: trio.SocketStream) -> None:
        hs = ServerHandshake(stream, await read_head(stream))
        seen.update(path=hs.path, protocols=hs.proposed_subprotocols, auth=hs.headers.get("authorization"))
        ws = await hs.accept()
        await ws.aclose()

    async with tcp_server(handler) as port:
        async with trio_websocket.open_websocket_url(
                f"ws://{HOST}:{port}/v1/realtime?model=m", extra_headers=[(b"Authorization", b"Bearer k")],
                subprotocols=["a", "b.c"]) as ws:
            with pytest.raises(trio_websocket.ConnectionClosed):
                await ws.get_message()
    assert seen == {"path": "/v1/realtime?model=m", "protocols": ["a", "b.c"], "auth": "Bearer k"}


async def test_server_reject_status_and_body():
    async def handler(stream: trio.SocketStream) -> None:
        hs = ServerHandshake(stream, await read_head(stream))
        await hs.reject(429, body=b'{"error": "slow down"}', extra_headers=[(b"content-type", b"application/json")])

    async with tcp_server(handler) as port:
        with pytest.raises(trio_websocket.ConnectionRejected) as info:
            async with trio_websocket.open_websocket_url(f"ws://{HOST}:{port}/"):
                pass
    assert info.value.status_code == 429 and info.value.body == b'{"error": "slow down"}'
    assert (b"content-type", b"application/json") in info.value.headers


async def test_server_oversized_message_closes_1009():
    result: list[int] = []

    async def on_ws(ws: wsconn.WebSocket) -> None:
        try:
            await ws.receive_message()
        except ConnectionClosed as exc:
            result.append(exc.code)

    async with tcp_server(our_server(on_ws, max_message_size=1000)) as port:
        async with trio_websocket.open_websocket_url(f"ws://{HOST}:{port}/") as ws:
            await ws.send_message(b"x" * 5000)
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason.code == 1009
    assert result == [1009]


async def test_server_assembles_fragments_from_a_wsproto_client():
    got: list[object] = []
    done = trio.Event()

    async def on_ws(ws: wsconn.WebSocket) -> None:
        got.append(await ws.receive_message())
        got.append(await ws.receive_message())
        done.set()

    async with tcp_server(our_server(on_ws)) as port:
        stream = await trio.open_tcp_stream(HOST, port)
        conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        await stream.send_all(conn.send(Request(host="x", target="/")))
        while not any(isinstance(e, AcceptConnection) for e in conn.events()):
            conn.receive_data(await stream.receive_some(4096))
        for ev in (BytesMessage(b"ab", message_finished=False), BytesMessage(b"cd", message_finished=True),
                   TextMessage("é", message_finished=False), TextMessage("", message_finished=False),
                   TextMessage("!", message_finished=True)):
            await stream.send_all(conn.send(ev))
        with trio.fail_after(2):
            await done.wait()
        await stream.aclose()
    assert got == [b"abcd", "é!"]


async def test_server_close_codes_both_ways_and_aclose_while_another_task_receives():
    closed_by_client: list[tuple[int, str | None]] = []

    async def on_ws(ws: wsconn.WebSocket) -> None:
        first = await ws.receive_message()
        if first == "close me":
            # like the mock: one task receives, another closes
            async with trio.open_nursery() as nursery:
                async def receiver() -> None:
                    try:
                        while True:
                            await ws.receive_message()
                    except ConnectionClosed:
                        pass
                nursery.start_soon(receiver)
                await trio.sleep(0.05)
                with trio.fail_after(2):
                    await ws.aclose(4321, "server says bye")
        else:
            try:
                await ws.receive_message()
            except ConnectionClosed as exc:
                closed_by_client.append((exc.code, exc.reason))

    async with tcp_server(our_server(on_ws)) as port:
        async with trio_websocket.open_websocket_url(f"ws://{HOST}:{port}/") as ws:
            await ws.send_message("close me")
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await ws.get_message()
            assert (info.value.reason.code, info.value.reason.reason) == (4321, "server says bye")
        async with trio_websocket.open_websocket_url(f"ws://{HOST}:{port}/") as ws:
            await ws.send_message("stay")
            await ws.aclose(4000, "client says bye")
        with trio.fail_after(2):
            while not closed_by_client:
                await trio.sleep(0.01)
    assert closed_by_client == [(4000, "client says bye")]


async def test_server_sees_a_vanished_client_as_1006():
    result: list[tuple[int, str | None]] = []

    async def on_ws(ws: wsconn.WebSocket) -> None:
        try:
            await ws.receive_message()
        except ConnectionClosed as exc:
            result.append((exc.code, exc.reason))

    async with tcp_server(our_server(on_ws)) as port:
        stream = await trio.open_tcp_stream(HOST, port)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert (await stream.receive_some(4096)).startswith(b"HTTP/1.1 101")
        await stream.aclose()
        with trio.fail_after(2):
            while not result:
                await trio.sleep(0.01)
    assert result == [(1006, None)]


async def test_bad_upgrade_request_is_answered_and_raises():
    async def handler(stream: trio.SocketStream) -> None:
        hs = ServerHandshake(stream, await read_head(stream))
        with pytest.raises(wsconn.HandshakeError):
            await hs.accept()

    async with tcp_server(handler) as port:
        stream = await trio.open_tcp_stream(HOST, port)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        answer = await stream.receive_some(4096)
        await stream.aclose()
    assert answer.startswith(b"HTTP/1.1 400") or answer.startswith(b"HTTP/1.1 426")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
async def test_wss_client_over_tls(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def echo(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message(await ws.get_message())
        await ws.aclose(1000, "tls bye")

    async with trio.open_nursery() as nursery:
        server = await nursery.start(lambda task_status: trio_websocket.serve_websocket(
            echo, HOST, 0, ssl_context=server_ctx, task_status=task_status))
        url = f"wss://{HOST}:{server.port}/"
        async with wsconn.open_websocket(url, ssl_context=client_ctx) as ws:
            assert ws.send_texts_nowait(["secret"]) is False  # a TLS stream cannot write synchronously ...
            await ws.flush()  # ... so the caller finishes the send
            assert await ws.receive_message() == "secret"
            with pytest.raises(ConnectionClosed) as info:
                await ws.receive_message()
            assert (info.value.code, info.value.reason) == (1000, "tls bye")
        # an untrusted certificate fails the handshake with the TLS error in the message
        with pytest.raises(wsconn.HandshakeError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await wsconn.connect(url, ssl_context=ssl.create_default_context())
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ FdStream: direct fd I/O


async def test_a_send_the_kernel_takes_whole_does_not_yield():
    """The point of FdStream: no task switch per message sent."""
    async def sink(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                await ws.get_message()
        except trio_websocket.ConnectionClosed:
            pass

    async def other_task() -> None:
        others_ran.append(True)

    others_ran: list[bool] = []
    async with tw_server(sink) as url:
        async with wsconn.open_websocket(url) as ws:
            assert isinstance(ws.stream, wsconn.FdStream)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(other_task)
                for i in range(20):
                    await ws.send_text(f"frame {i}")
                    await ws.send_texts(["a", "b"])
                    assert ws.send_texts_nowait(["c"]) is True
                assert others_ran == []  # not one of those sends yielded
            assert others_ran == [True]


async def _raw_ws_peer(stream: trio.SocketStream, received: list[str], start_reading: trio.Event,
                       done: trio.Event) -> None:
    """Accept with wsproto; read nothing until ``start_reading``; then record text messages until EOF."""
    conn = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    while True:
        conn.receive_data(await stream.receive_some(4096))
        if [e for e in conn.events() if isinstance(e, Request)]:
            break
    await stream.send_all(conn.send(AcceptConnection()))
    await start_reading.wait()
    text = ""
    try:
        while data := await stream.receive_some(1 << 20):
            conn.receive_data(data)
            for ev in conn.events():
                if isinstance(ev, TextMessage):
                    text += ev.data
                    if ev.message_finished:
                        received.append(text)
                        text = ""
    finally:
        done.set()


async def test_bytes_keep_their_order_when_a_write_would_block():
    """A write the kernel does not take whole waits in FdStream's backlog; whatever
    any task sends next, synchronously or not, goes out after it."""
    received: list[str] = []
    start_reading, done = trio.Event(), trio.Event()
    big = "A" * (32 << 20)  # far more than loopback's socket buffers hold
    async with tcp_server(lambda s: _raw_ws_peer(s, received, start_reading, done)) as port:
        ws = await wsconn.connect(f"ws://{HOST}:{port}/")
        assert ws.send_texts_nowait([big]) is False  # partly written: the rest is queued
        assert ws.stream.backlog_bytes > 0
        assert ws.send_texts_nowait(["B"]) is False  # behind the backlog, not written around it
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.send_text, "C")  # another task: waits its turn
            await trio.sleep(0.05)
            assert not received
            nursery.start_soon(ws.flush)  # two tasks flushing at once is fine
            start_reading.set()
        assert ws.stream.backlog_bytes == 0
        await ws.stream.aclose()
        with trio.fail_after(10):
            await done.wait()
    assert [m[:1] for m in received] == ["A", "B", "C"] and len(received[0]) == len(big)


async def test_after_a_short_read_the_next_receive_waits_instead_of_reading(monkeypatch):
    """A short read emptied the socket: trying another read first would only fail with EAGAIN."""
    reads: list[str] = []
    real_read = os.read
    fds: set[int] = set()

    def counting_read(fd: int, n: int) -> bytes:
        if fd not in fds:
            return real_read(fd, n)
        try:
            data = real_read(fd, n)
        except BlockingIOError:
            reads.append("EAGAIN")
            raise
        reads.append("data" if data else "eof")
        return data

    async def ping_pong(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        for i in range(20):
            await ws.send_message(f"m{i}")
            await ws.get_message()  # the ack: so each message arrives on its own

    monkeypatch.setattr(os, "read", counting_read)
    async with tw_server(ping_pong) as url:
        async with wsconn.open_websocket(url) as ws:
            fds.add(ws.stream.socket.fileno())
            for i in range(20):
                assert await ws.receive_message() == f"m{i}"
                await ws.send_text("ack")
            fds.clear()
    assert reads.count("data") == 20 and "EAGAIN" not in reads


async def test_a_socket_closed_behind_the_streams_back_is_never_touched_again():
    """The mock drops a session by closing the trio SocketStream directly. The
    FdStream must then neither wait on nor write to that fd number, which the
    kernel may already have handed to a new socket."""
    async def idle(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with tcp_server(idle) as port:
        raw = await trio.open_tcp_stream(HOST, port)
        fd = raw.socket.fileno()
        stream = wsconn.FdStream(raw)
        async with trio.open_nursery() as nursery:
            async def reader() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await stream.receive_some()
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


async def test_aclose_before_the_receiver_task_ran_does_not_fail_the_receiver():
    """The mock closes a refused session (beta header on a GA server) right after
    accepting, before its receiver task ran; the close frame goes out without
    yielding, so aclose() is the first to read. The receiver must then wait for
    it and see the close, not fail as a second reader."""
    seen: list[object] = []

    async def refuse(ws: wsconn.WebSocket) -> None:
        async def receiver() -> None:
            try:
                await ws.receive_message()
            except ConnectionClosed as exc:
                seen.append(exc.code)
            except trio.BusyResourceError as exc:
                seen.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            await ws.aclose(4000, "beta_api_shape_disabled")

    async with tcp_server(our_server(refuse)) as port:
        async with trio_websocket.open_websocket_url(f"ws://{HOST}:{port}/") as ws:
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason.code == 4000
        with trio.fail_after(2):
            while not seen:
                await trio.sleep(0.01)
    assert seen == [4000]
