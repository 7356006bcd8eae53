"""simulator.wsconn against real peers on 127.0.0.1.

The other side is trio-websocket (wsproto underneath) or, where trio-websocket
cannot do it (fragments, a bare TCP peer), wsproto or raw bytes on a trio socket.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import struct
from contextlib import asynccontextmanager
from typing import AsyncIterator, Awaitable, Callable

import pytest
import trio
import trio_websocket
import wsproto
from wsproto.events import AcceptConnection, BytesMessage, Request, TextMessage

from simulator import wsconn
from simulator.wsconn import ConnectionClosed, ConnectionRejected, ConnectionTimeout, ServerHandshake

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
                              received: list[object]) -> None:
    """Accept one upgrade with wsproto, send ``events``, record what comes back until close."""
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
    frames = [BytesMessage(b"a" * 600, message_finished=False), BytesMessage(b"b" * 600, message_finished=True)]
    async with tcp_server(lambda s: wsproto_server_once(s, frames, received)) as port:
        async with wsconn.open_websocket(f"ws://{HOST}:{port}/", max_message_size=1000) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.receive_message()
            assert info.value.code == 1009
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
            await ws.send_text("secret")
            assert await ws.receive_message() == "secret"
            with pytest.raises(ConnectionClosed) as info:
                await ws.receive_message()
            assert (info.value.code, info.value.reason) == (1000, "tls bye")
        # an untrusted certificate fails the handshake with the TLS error in the message
        with pytest.raises(wsconn.HandshakeError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await wsconn.connect(url, ssl_context=ssl.create_default_context())
        nursery.cancel_scope.cancel()
