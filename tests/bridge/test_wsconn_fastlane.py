"""The fast lane (:mod:`callsim.bridge.wsframes`, under :mod:`callsim.bridge.wsconn`) gives exactly
what ``websockets``' protocol alone gives.

The lane cuts frames itself and hands only whole frames it does not handle to the
protocol; these tests feed the same byte streams, split at arbitrary points, to a
``WebSocket`` and to a bare ``websockets`` protocol, and compare messages, the
bytes sent back (pongs, close replies) and how the connection ends.
"""

from __future__ import annotations

import itertools
import os

import pytest
import trio
import trio.testing
from callsim.bridge import fdstream
from callsim.bridge.httphead import MAX_HEAD_BYTES, split_head
from callsim.bridge.wsconn import (
    ConnectionClosed,
    WebSocket,
    accept,
    connect,
    text_frame,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Close,
    Frame,
)
from websockets.protocol import Protocol, Side, State

MAX = 70_000  # above 65,535 so the 8-byte length form is exercised too


class Chunks(trio.abc.Stream):
    """A peer that delivers pre-cut chunks, then EOF, and records what is sent back."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.sent = bytearray()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        return self.chunks.pop(0) if self.chunks else b""

    async def send_all(self, data) -> None:  # type: ignore[no-untyped-def]
        await trio.lowlevel.checkpoint()
        self.sent += data

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def _client_frames(frames: list[Frame]) -> bytes:
    return b"".join(f.serialize(mask=True) for f in frames)


def _each(frames: list[Frame]) -> list[bytes]:
    return [f.serialize(mask=True) for f in frames]


def _reference(frames: list[bytes]) -> tuple[list[str | bytes], bytes, int]:
    """What a bare server-side protocol makes of these frames, fed one whole frame at a time
    (frames judged strictly in order): messages, bytes to send back, close code."""
    p = Protocol(Side.SERVER, state=State.OPEN, max_size=MAX)
    messages: list[str | bytes] = []
    out = bytearray()
    parts: list[bytes] = []
    code: int | None = None
    for chunk in frames + [b""]:
        if chunk:
            p.receive_data(chunk)
        else:
            p.receive_eof()
        for f in p.events_received():
            if f.opcode in (OP_TEXT, OP_BINARY, OP_CONT):
                parts.append(f.data)
                if f.opcode is not OP_CONT:
                    kind = f.opcode
                if f.fin:
                    data = b"".join(parts)
                    parts = []
                    try:
                        messages.append(data.decode() if kind is OP_TEXT else data)
                    except UnicodeDecodeError:
                        p.fail(1007, "invalid UTF-8 in a text frame")
                        code = 1007
                        break  # nothing after a failed frame counts
            elif f.opcode is OP_CLOSE:
                code = Close.parse(f.data).code
                break
        out += b"".join(p.data_to_send())
        if code is not None or p.parser_exc is not None:
            break
    if code is None:
        close = p.close_rcvd or p.close_sent
        code = close.code if close is not None else 1006
    return messages, bytes(out), code


def _cut(wire: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    return [wire[a:b] for a, b in itertools.pairwise(points) if b > a]


async def _through_wsconn(wire: bytes, cuts: list[int]) -> tuple[list[str | bytes], bytes, int]:
    stream = Chunks(_cut(wire, cuts))
    conn = WebSocket(stream, Protocol(Side.SERVER, state=State.OPEN, max_size=MAX))
    messages: list[str | bytes] = []
    while True:
        try:
            messages.append(await conn.receive_message())
        except ConnectionClosed as exc:
            return messages, bytes(stream.sent), exc.code


_payload = st.one_of(
    st.text(max_size=40).map(str.encode),
    st.binary(max_size=40),
    st.sampled_from([b"x" * 125, b"y" * 126, b"z" * 65_535, b"w" * 65_536]),
    st.just("é".encode()[:1]),  # invalid UTF-8 in a text frame: 1007
)


@st.composite
def _frames(draw) -> list[Frame]:  # type: ignore[no-untyped-def]
    frames: list[Frame] = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["text", "binary", "fragmented", "ping", "pong"]))
        data = draw(_payload)
        if kind == "text":
            frames.append(Frame(OP_TEXT, data))
        elif kind == "binary":
            frames.append(Frame(OP_BINARY, data))
        elif kind == "fragmented":
            half = len(data) // 2
            frames += [Frame(OP_TEXT, data[:half], fin=False), Frame(OP_CONT, data[half:])]
        elif kind == "ping":
            frames.append(Frame(OP_PING, data[:100]))
        else:
            frames.append(Frame(OP_PONG, data[:100]))
    if draw(st.booleans()):
        frames.append(Frame(OP_CLOSE, Close(1000, "bye").serialize()))
    return frames


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=_frames(), cuts=st.lists(st.integers(0, 10**6), max_size=12))
def test_the_fast_lane_gives_what_the_protocol_gives(frames: list[Frame], cuts: list[int]) -> None:
    """Wherever the bytes are cut, the result is the protocol's, frame by frame."""
    each = _each(frames)
    assert trio.run(_through_wsconn, b"".join(each), cuts) == _reference(each)


@pytest.mark.parametrize("frames", [
    [Frame(OP_TEXT, b"unmasked from a client").serialize(mask=False)],  # wrong masking: 1002
    [bytes([0xC1, 0x80, 0, 0, 0, 0])],  # RSV1 set with no extension: 1002
    [bytes([0x8B, 0x80, 0, 0, 0, 0])],  # a reserved opcode: 1002
    _each([Frame(OP_CONT, b"no message to continue")]),  # 1002
    _each([Frame(OP_TEXT, b"a", fin=False), Frame(OP_TEXT, b"b")]),  # expected a continuation: 1002
])
async def test_frames_the_lane_does_not_take_fail_as_the_protocol_says(frames: list[bytes]) -> None:
    wire = b"".join(frames)
    assert await _through_wsconn(wire, [3, 7]) == _reference(frames)
    assert (await _through_wsconn(wire, []))[2] == 1002


async def test_an_oversized_length_fails_from_the_header_without_waiting_for_the_body() -> None:
    header = bytes([0x81, 0x80 | 127]) + (10**9).to_bytes(8, "big") + os.urandom(4)
    stream = Chunks([header])  # the body never comes: 1009 must not wait for it
    conn = WebSocket(stream, Protocol(Side.SERVER, state=State.OPEN, max_size=MAX))
    with pytest.raises(ConnectionClosed) as exc:
        await conn.receive_message()
    assert exc.value.code == 1009
    reader = Protocol(Side.CLIENT, state=State.OPEN, max_size=None)
    reader.receive_data(bytes(stream.sent))
    [close] = reader.events_received()  # the close frame went out
    assert close.opcode is OP_CLOSE and Close.parse(close.data).code == 1009


@given(data=st.one_of(st.binary(max_size=300).map(lambda b: b.decode("latin-1").encode()),
                      st.sampled_from([b"a" * 125, b"b" * 126, b"c" * 65_535, b"d" * 65_536])))
@settings(max_examples=100, deadline=None)
def test_text_frame_is_the_frame_websockets_would_send(data: bytes) -> None:
    assert text_frame(data, mask=False) == Frame(OP_TEXT, data).serialize(mask=False)
    masked = text_frame(data, mask=True)
    p = Protocol(Side.SERVER, state=State.OPEN, max_size=None)
    p.receive_data(masked)
    [frame] = p.events_received()
    assert (frame.opcode, frame.fin, frame.data) == (OP_TEXT, True, data)


async def test_sends_queue_behind_what_the_protocol_has_queued() -> None:
    """A pong the protocol owes goes out before a text sent after it (order on the wire)."""
    stream = Chunks([])
    p = Protocol(Side.SERVER, state=State.OPEN, max_size=MAX)
    conn = WebSocket(stream, p)
    p.receive_data(_client_frames([Frame(OP_PING, b"p")]))  # queued, not yet flushed
    p.events_received()
    await conn.send_text("after")
    reader = Protocol(Side.CLIENT, state=State.OPEN, max_size=None)
    reader.receive_data(bytes(stream.sent))
    assert [(f.opcode, f.data) for f in reader.events_received()] == [(OP_PONG, b"p"), (OP_TEXT, b"after")]


def test_split_head() -> None:
    assert split_head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x81\x00") == (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x81\x00")
    assert split_head(b"GET / HTTP/1.1\r\nHost: x\r\n") == (b"", b"")
    big = b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * (MAX_HEAD_BYTES // 6)
    assert split_head(big) == (big, b"")


async def test_frames_in_the_same_read_as_the_upgrade_request_are_not_lost() -> None:
    """A client that sends frames right behind its upgrade request (one segment)."""
    a, b = trio.socket.socketpair()
    server, client = trio.SocketStream(a), trio.SocketStream(b)
    request = (b"GET /media-stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    first, second = (Frame(OP_TEXT, b"one" * 50).serialize(mask=True),
                     Frame(OP_TEXT, b"two" * 50).serialize(mask=True))
    await client.send_all(request + first + second[:5])
    head = await server.receive_some(65536)
    conn = await accept(server, head, max_message_size=MAX, refuse=lambda r: None)
    await client.send_all(second[5:])
    assert await conn.receive_message() == "one" * 50
    assert await conn.receive_message() == "two" * 50


async def test_frames_in_the_same_read_as_the_101_are_not_lost() -> None:
    """A server whose first frames share a segment with its 101, the second cut mid-frame."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    first, second = Frame(OP_TEXT, b"hello" * 30).serialize(mask=False), Frame(OP_TEXT, b"again" * 30).serialize(mask=False)

    async def server(task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
        task_status.started()
        stream = await listener.accept()
        raw = b""
        while b"\r\n\r\n" not in raw:
            raw += await stream.receive_some(65536)
        from websockets.server import ServerProtocol
        sp = ServerProtocol()
        sp.receive_data(raw)
        [req] = sp.events_received()
        sp.send_response(sp.accept(req))
        response = b"".join(sp.data_to_send())
        await stream.send_all(response + first + second[:7])
        await trio.sleep(0.01)
        await stream.send_all(second[7:])
        await stream.receive_some(65536)  # until the client closes
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        await nursery.start(server)
        conn = await connect(f"ws://127.0.0.1:{port}/", [], timeout=5, max_message_size=MAX)
        assert await conn.receive_message() == "hello" * 30
        assert await conn.receive_message() == "again" * 30
        await conn.aclose(1000, "done", timeout=0.5)
    await listener.aclose()


async def test_a_short_read_is_followed_by_a_wait_not_a_failed_read(monkeypatch) -> None:
    """After a read that emptied the socket, the next receive waits for the fd first."""
    a, b = trio.socket.socketpair()
    fd_stream = fdstream.FdStream(trio.SocketStream(a))
    peer = trio.SocketStream(b)
    real_read, eagain = os.read, []

    def counting_read(fd: int, n: int) -> bytes:
        try:
            return real_read(fd, n)
        except BlockingIOError:
            eagain.append(fd)
            raise

    monkeypatch.setattr(fdstream.os, "read", counting_read)
    async with trio.open_nursery() as nursery:
        async def talk() -> None:
            for i in range(20):
                await peer.send_all(b"m%d" % i)
                await trio.sleep(0.001)

        nursery.start_soon(talk)
        got, reads = b"", 0
        while len(got) < sum(len(b"m%d" % i) for i in range(20)):
            got += await fd_stream.receive_some(65536)
            reads += 1
    assert reads > 5  # the messages came one by one, mostly
    assert len(eagain) <= 1  # only the very first read, before anything was known; was one per read
    await fd_stream.aclose()
    await peer.aclose()
