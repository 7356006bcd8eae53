"""The simulator's WebSocket fast lanes give exactly what the ``websockets`` protocol gives.

:class:`callsim.simulator.net.wsconn.WebSocket` (its framing in
:class:`callsim.simulator.net.wsframes.FrameLane`) cuts received bytes into frames
itself and turns plain text/binary frames into messages without the protocol; it
frames text messages itself too. The reference here is what the WebSocket did before
(the old path): every frame through a bare ``websockets`` protocol, one frame per
read. The same peer bytes, cut into reads at arbitrary points, must give the same
messages, the same bytes written back (pongs, close echoes, EOF) and the same
close code and reason, on both sides of a connection: the mock (server) receives
masked frames, the caller (client) unmasked ones.
"""

from __future__ import annotations

import itertools
import struct
from collections import deque
from typing import Literal

import pytest
import trio
import trio.testing
from callsim.simulator.net.wsconn import (
    ConnectionClosed,
    ServerHandshake,
    WebSocket,
    connect,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
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
from websockets.protocol import OPEN, Protocol, Side
from websockets.server import ServerProtocol
from websockets.uri import parse_uri
from websockets.utils import apply_mask

SIDES = [pytest.param(Side.SERVER, id="server-mock"), pytest.param(Side.CLIENT, id="client-caller")]

Written = tuple[tuple[tuple[int, bytes], ...], bytes | None, int | None]
Outcome = tuple[list[str | bytes], Written, tuple[int, str | None], tuple[object, ...]]


class Reads(trio.abc.HalfCloseableStream):
    """A peer whose bytes arrive in the given reads, then EOF (or nothing ever, if it
    ``stalls``); records what is written back."""

    def __init__(self, reads: list[bytes], *, stalls: bool = False) -> None:
        self.reads = deque(reads)
        self.stalls = stalls
        self.sent = bytearray()
        self.eof_at: int | None = None  # how many bytes were written before the half-close

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if not self.reads and self.stalls:
            await trio.sleep_forever()
        return self.reads.popleft() if self.reads else b""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        assert self.eof_at is None, "written after the half-close"
        self.sent += data

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()
        self.eof_at = len(self.sent)

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


# ------------------------------------------------------------------ wire helpers
# (independent of wsconn: even apply_mask is websockets' pure-Python one, not the C one wsconn uses)


def raw_frame(b0: int, payload: bytes, key: bytes | None) -> bytes:
    """Any frame, even one ``Frame.serialize`` refuses to make (a reserved opcode, a long
    ping), masked with ``key`` unless it is None."""
    n = len(payload)
    m = 0 if key is None else 0x80
    if n < 126:
        head = bytes((b0, m | n))
    elif n < 65536:
        head = bytes((b0, m | 126)) + struct.pack("!H", n)
    else:
        head = bytes((b0, m | 127)) + struct.pack("!Q", n)
    return head + payload if key is None else head + key + apply_mask(payload, key)


def split_frames(data: bytes) -> list[tuple[int, bool, bytes]]:
    """(first header byte, masked?, unmasked payload) of every frame in ``data``."""
    frames, pos = [], 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        length, pos = b1 & 0x7F, pos + 2
        if length == 126:
            (length,), pos = struct.unpack_from("!H", data, pos), pos + 2
        elif length == 127:
            (length,), pos = struct.unpack_from("!Q", data, pos), pos + 8
        key = b""
        if b1 & 0x80:
            key, pos = data[pos:pos + 4], pos + 4
        payload = data[pos:pos + length]
        assert len(payload) == length, "a frame cut short"
        frames.append((b0, bool(key), apply_mask(payload, key) if key else payload))
        pos += length
    return frames


def written(stream: Reads, side: Side) -> Written:
    """What a WebSocket of ``side`` wrote: its frames unmasked, and for a server (which
    masks nothing, so the bytes are deterministic) the bytes themselves; and where EOF came."""
    frames = split_frames(bytes(stream.sent))
    assert all(masked is (side is Side.CLIENT) for _, masked, _ in frames)  # RFC 6455 5.1
    raw = bytes(stream.sent) if side is Side.SERVER else None
    return tuple((b0, payload) for b0, masked, payload in frames), raw, stream.eof_at


def cut(wire: bytes, cuts: list[int] | Literal["bytewise"]) -> list[bytes]:
    if cuts == "bytewise":  # every byte its own read (coarser for long wires, to stay quick)
        step = 1 if len(wire) <= 4096 else len(wire) // 512 + 1
        return [wire[i:i + step] for i in range(0, len(wire), step)]
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    return [wire[a:b] for a, b in itertools.pairwise(points) if b > a]


# ------------------------------------------------------------------ the two paths


def old_path(side: Side, max_size: int, frames: list[bytes]) -> Outcome:
    """What the WebSocket did before the lanes, each read one frame (the last maybe cut
    short): the bare protocol parses it, then messages are assembled and text decoded
    (invalid UTF-8 fails the connection with 1007) as ``WebSocket._handle`` does."""
    p = Protocol(side, state=OPEN, max_size=max_size)
    messages: list[str | bytes] = []
    parts: list[bytes] | None = None
    is_text = False
    closed: tuple[int, str | None] | None = None
    sent, eof_at = bytearray(), None

    def info() -> tuple[int, str | None]:
        close = p.close_rcvd if p.close_rcvd is not None else p.close_sent
        return (1006, None) if close is None else (close.code, close.reason or None)

    def deliver(data: bytes, text: bool) -> None:
        nonlocal closed
        if closed is not None:
            return
        if not text:
            messages.append(data)
            return
        try:
            messages.append(data.decode())
        except UnicodeDecodeError as exc:
            if p.state is OPEN:
                p.fail(1007, f"{exc.reason} at position {exc.start}")
            closed = info()

    for frame in [*frames, b""]:
        if frame:
            p.receive_data(frame)
        else:
            p.receive_eof()
        for f in p.events_received():
            if f.opcode in (OP_TEXT, OP_BINARY):
                if f.fin:
                    deliver(f.data, f.opcode is OP_TEXT)
                else:
                    parts, is_text = [f.data], f.opcode is OP_TEXT
            elif f.opcode is OP_CONT and parts is not None:
                parts.append(f.data)
                if f.fin:
                    data, parts = b"".join(parts), None
                    deliver(data, is_text)
        if closed is None and (not frame or p.close_rcvd is not None or p.parser_exc is not None):
            closed = info()
        for chunk in p.data_to_send():
            if chunk:
                sent += chunk
            else:
                eof_at = len(sent)
        if closed is not None:
            break
    assert closed is not None
    late = ("sent",) if p.state is OPEN else ("refused", *closed)  # a send after the end
    stream = Reads([])
    stream.sent, stream.eof_at = sent, eof_at
    return messages, written(stream, side), closed, late


async def new_path(side: Side, max_size: int, reads: list[bytes]) -> Outcome:
    stream = Reads(reads)
    ws = WebSocket(stream, Protocol(side, state=OPEN, max_size=max_size))
    messages: list[str | bytes] = []
    while True:
        try:
            messages.append(await ws.receive_message())
        except ConnectionClosed as exc:
            closed = (exc.code, exc.reason)
            break
    try:
        await ws.send_text("late")
        late: tuple[object, ...] = ("sent",)
    except ConnectionClosed as exc:
        late = ("refused", exc.code, exc.reason)
    return messages, written(stream, side), closed, late


# ------------------------------------------------------------------ what a peer may send

FIN, CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x80, 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
SIZES = st.sampled_from([0, 1, 125, 126, 127, 65_535, 65_536]) | st.integers(0, 300)
# binary payloads made of what looks like frames: a cutter that lost its place takes them for some
FRAME_LIKE = st.sampled_from([b"\x81\x01x", b"\x82\x81\x00\x00\x00\x00y"])
# a peer's masking keys: a zero key (legal, if not wise) leaves such payloads readable on the wire
KEYS = st.just(bytes(4)) | st.binary(min_size=4, max_size=4)
SOUND = ["text", "text", "text", "binary", "binary", "fragmented", "ping", "pong"]
FAULTY = ["close", "invalid utf-8", "bad rsv", "bad opcode", "wrong masking", "long ping", "stray continuation",
          "bad close"]


@st.composite
def payloads(draw: st.DrawFn, text: bool) -> bytes:
    """Exactly ``size`` bytes; valid UTF-8 (often multi-byte) when ``text``."""
    size = draw(SIZES)
    unit = (draw(st.text(min_size=1, max_size=4)).encode() if text
            else draw(st.binary(min_size=1, max_size=8) | FRAME_LIKE))
    whole = unit * (size // len(unit))
    return whole + b"a" * (size - len(whole))


@st.composite
def peer_frames(draw: st.DrawFn, side: Side) -> list[bytes]:
    """Frames as the peer of a ``side`` WebSocket sends them (masked to a server), with
    everything it may get wrong; frames after a close or an error must come to nothing."""
    masks = side is Side.SERVER
    frames: list[bytes] = []

    def add(b0: int, payload: bytes, masked: bool = masks) -> None:
        frames.append(raw_frame(b0, payload, draw(KEYS) if masked else None))

    kinds = [draw(st.sampled_from(SOUND)) if draw(st.integers(0, 9)) else draw(st.sampled_from(FAULTY))
             for _ in range(draw(st.integers(1, 10)))]  # mostly sound, so that sequences go on
    if draw(st.integers(0, 2)) == 0:  # the last word a faulty one (and maybe cut short: see ENDINGS)
        kinds.append(draw(st.sampled_from(FAULTY)))
    for kind in kinds:
        if kind == "text":
            add(FIN | TEXT, draw(payloads(True)))
        elif kind == "binary":
            add(FIN | BINARY, draw(payloads(False)))
        elif kind == "fragmented":
            text = draw(st.booleans())
            data = draw(payloads(text)) + (b"\xff" if text and draw(st.integers(0, 5)) == 0 else b"")
            points = sorted(draw(st.lists(st.integers(0, len(data)), max_size=3)))
            pieces = [data[a:b] for a, b in itertools.pairwise([0, *points, len(data)])]  # may split a character
            for i, piece in enumerate(pieces):
                last = i == len(pieces) - 1
                add((FIN if last else 0) | ((TEXT if text else BINARY) if i == 0 else CONT), piece)
                between = "" if last else draw(st.sampled_from(["", "", "", "ping", "pong", "text"]))
                if between == "ping":
                    add(FIN | PING, b"between")
                elif between == "pong":
                    add(FIN | PONG, b"")
                elif between == "text":  # a data frame inside a fragmented message: 1002
                    add(FIN | TEXT, b"intruder")
        elif kind == "ping":
            add(FIN | PING, draw(st.binary(max_size=125)))
        elif kind == "pong":
            add(FIN | PONG, draw(st.binary(max_size=125)))
        elif kind == "close":
            add(FIN | CLOSE, draw(st.sampled_from([b"", Close(1000, "bye").serialize(), Close(4000, "").serialize(),
                                                   Close(1001, "gøing away").serialize()])))
        elif kind == "invalid utf-8":
            add(FIN | TEXT, draw(st.sampled_from([b"\xff", b"ok\xc3", b"\xed\xa0\x80", "é".encode() * 70 + b"\x80"])))
        elif kind == "bad rsv":  # RSV1..3 with no extension negotiated: 1002
            add(draw(st.sampled_from([0x40, 0x20, 0x10])) | FIN | draw(st.sampled_from([TEXT, BINARY])),
                draw(payloads(False)))
        elif kind == "bad opcode":
            add(FIN | draw(st.sampled_from([3, 4, 7, 0xB, 0xF])), draw(payloads(False)))
        elif kind == "wrong masking":
            add(FIN | draw(st.sampled_from([TEXT, BINARY])), draw(payloads(True)), masked=not masks)
        elif kind == "long ping":  # control frames carry at most 125 bytes: 1002
            add(FIN | PING, b"p" * draw(st.sampled_from([126, 65_536])))
        elif kind == "stray continuation":
            add(FIN | CONT, b"no message to continue")
        else:  # a close the protocol refuses: too short, a reserved code, a reason not UTF-8
            add(FIN | CLOSE, draw(st.sampled_from([b"\x03", struct.pack("!H", 999), struct.pack("!H", 1000) + b"\xff"])))
    return frames


CUTS = st.lists(st.integers(0, 2**18), max_size=16) | st.just("bytewise")
# how the peer's bytes end: all sent; or the peer hangs up inside the last frame, in its
# payload (short of a few bytes) or in its header (only its first few bytes sent)
ENDINGS = st.sampled_from([None, None]) | st.tuples(st.sampled_from(["short of", "only"]), st.integers(1, 13))


@pytest.mark.parametrize("side", SIDES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), max_size=st.sampled_from([2**20, 2**20, 70_000, 1000, 125]), cuts=CUTS, ending=ENDINGS)
def test_any_cut_of_the_peer_bytes_ends_as_the_protocol_alone_ends(
        side: Side, data: st.DataObject, max_size: int, cuts: list[int] | Literal["bytewise"],
        ending: tuple[str, int] | None) -> None:
    """Messages, bytes written back, close code and reason, and a send after the end: the same
    as the old path, wherever the reads cut the frames."""
    frames = data.draw(peer_frames(side))
    if ending is not None:
        how, k = ending
        frames[-1] = frames[-1][:-k] if how == "short of" else frames[-1][:k]
    wire = b"".join(frames)
    assert trio.run(new_path, side, max_size, cut(wire, cuts)) == old_path(side, max_size, [f for f in frames if f])


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize(("fault", "b0", "length"), [
    ("reserved opcode", 0x83, 200), ("reserved opcode", 0x8B, 70_000),
    ("wrong masking", 0x81, 200), ("wrong masking", 0x82, 70_000),
])
async def test_a_header_the_protocol_refuses_fails_as_soon_as_its_first_two_bytes_arrive(
        side: Side, fault: str, b0: int, length: int, autojump_clock: trio.testing.MockClock) -> None:
    """As before the lane: ``websockets`` refuses these from the first two bytes (RSV bits only
    once the frame is whole), so the 1002 must not wait for the extended length, even from a
    peer that then sends nothing more."""
    masked = (side is Side.SERVER) != (fault == "wrong masking")
    b1 = (0x80 if masked else 0) | (126 if length < 65536 else 127)
    for reads in ([bytes((b0, b1))], [bytes((b0,)), bytes((b1, 0))]):
        stream = Reads(reads, stalls=True)
        ws = WebSocket(stream, Protocol(side, state=OPEN, max_size=2**20))
        with trio.fail_after(60), pytest.raises(ConnectionClosed) as info:  # virtual seconds: no waiting
            await ws.receive_message()
        assert info.value.code == 1002
        assert [b0 for b0, _ in written(stream, side)[0]] == [0x88]  # the close frame went out


@pytest.mark.parametrize("side", SIDES)
async def test_many_frames_in_one_read_and_one_frame_over_many(side: Side) -> None:
    """The everyday shapes, spelled out: several whole frames per read; a 70 kB frame over 3 reads."""
    mask = side is Side.SERVER
    small = [Frame(OP_TEXT, f"m{i}".encode()).serialize(mask=mask) for i in range(5)]
    big = Frame(OP_BINARY, bytes(range(256)) * 280).serialize(mask=mask)
    reads = [b"".join(small), big[:1], big[1:40_000], big[40_000:] + small[0][:1], small[0][1:]]
    messages, _, closed, _ = await new_path(side, 2**20, reads)
    assert messages == [f"m{i}" for i in range(5)] + [bytes(range(256)) * 280, "m0"]
    assert closed == (1006, None)


# ------------------------------------------------------------------ the send lane


@pytest.mark.parametrize("side", SIDES)
@settings(max_examples=60, deadline=None)
@given(messages=st.lists(st.text(max_size=50) | st.sampled_from(["", "a" * 125, "b" * 126, "ç" * 70, "d" * 65_535,
                                                                    "e" * 65_536]), min_size=1, max_size=6),
       how=st.sampled_from(["send_text", "send_texts", "send_texts_nowait"]))
def test_sent_text_is_what_a_websockets_peer_reads(side: Side, messages: list[str], how: str) -> None:
    async def send() -> bytes:
        stream = Reads([])
        ws = WebSocket(stream, Protocol(side, state=OPEN, max_size=2**20))
        if how == "send_text":
            for m in messages:
                await ws.send_text(m if len(m) % 2 else m.encode())  # bytes are taken as UTF-8 already
        elif how == "send_texts":
            await ws.send_texts(messages)
        else:
            assert ws.send_texts_nowait(messages) is False  # not an FdStream: the caller must flush
            await ws.flush()
        return bytes(stream.sent)

    wire = trio.run(send)
    peer = Protocol(Side.CLIENT if side is Side.SERVER else Side.SERVER, state=OPEN, max_size=None)
    peer.receive_data(wire)
    assert [(f.opcode, f.fin, f.data.decode()) for f in peer.events_received()] == [(OP_TEXT, True, m) for m in messages]
    assert peer.parser_exc is None
    if side is Side.SERVER:  # unmasked: byte for byte what websockets would have written
        assert wire == b"".join(Frame(OP_TEXT, m.encode()).serialize(mask=False) for m in messages)


async def test_a_client_masks_every_frame_with_a_fresh_key() -> None:
    stream = Reads([])
    ws = WebSocket(stream, Protocol(Side.CLIENT, state=OPEN, max_size=2**20))
    await ws.send_texts(["same", "same"])
    first, second = bytes(stream.sent[:10]), bytes(stream.sent[10:])
    assert first[1] & 0x80 and second[1] & 0x80  # the MASK bit
    assert first[2:6] != second[2:6]  # RFC 6455 5.3: a new unpredictable key per frame
    assert apply_mask(first[6:], first[2:6]) == apply_mask(second[6:], second[2:6]) == b"same"


@pytest.mark.parametrize("side", SIDES)
async def test_text_goes_out_after_what_the_protocol_queued(side: Side) -> None:
    """A pong the protocol owes is written before a text sent after it (TLS path and FdStream)."""
    peer_side = Side.CLIENT if side is Side.SERVER else Side.SERVER
    ping = Frame(OP_PING, b"p").serialize(mask=side is Side.SERVER)

    stream = Reads([])
    ws = WebSocket(stream, proto := Protocol(side, state=OPEN, max_size=2**20))
    proto.receive_data(ping)  # parsed and answered, not yet written
    proto.events_received()
    await ws.send_text("after")
    peer = Protocol(peer_side, state=OPEN, max_size=None)
    peer.receive_data(bytes(stream.sent))
    assert [(f.opcode, f.data) for f in peer.events_received()] == [(OP_PONG, b"p"), (OP_TEXT, b"after")]

    a, b = trio.socket.socketpair()
    ws = WebSocket(trio.SocketStream(a), proto := Protocol(side, state=OPEN, max_size=2**20))
    proto.receive_data(ping)
    proto.events_received()
    assert ws.send_texts_nowait(["x", "y"]) is True
    peer = Protocol(peer_side, state=OPEN, max_size=None)
    peer.receive_data(await trio.SocketStream(b).receive_some(4096))
    assert [(f.opcode, f.data) for f in peer.events_received()] == [(OP_PONG, b"p"), (OP_TEXT, b"x"), (OP_TEXT, b"y")]
    a.close()
    b.close()


async def test_no_text_after_a_close_either_way() -> None:
    """After the peer's close (echoed) or our own, a send raises as before and writes nothing."""
    stream = Reads([Frame(OP_CLOSE, Close(4001, "peer done").serialize()).serialize(mask=True)])
    ws = WebSocket(stream, Protocol(Side.SERVER, state=OPEN, max_size=2**20))
    with pytest.raises(ConnectionClosed):
        await ws.receive_message()
    echoed = bytes(stream.sent)
    for send in (ws.send_text("late"), ws.send_texts(["late"])):
        with pytest.raises(ConnectionClosed) as info:
            await send
        assert (info.value.code, info.value.reason) == (4001, "peer done")
    with pytest.raises(ConnectionClosed):
        ws.send_texts_nowait(["late"])
    assert bytes(stream.sent) == echoed == Frame(OP_CLOSE, Close(4001, "peer done").serialize()).serialize(mask=False)

    stream = Reads([])  # the peer hangs up instead of answering our close
    ws = WebSocket(stream, Protocol(Side.CLIENT, state=OPEN, max_size=2**20))
    await ws.aclose(4002, "we are done")
    with pytest.raises(ConnectionClosed) as info:
        await ws.send_text("late")
    assert (info.value.code, info.value.reason) == (4002, "we are done")
    assert [f[0] for f in split_frames(bytes(stream.sent))] == [0x88]  # the close, and no text after it


# ------------------------------------------------------------------ frames that share a read with the handshake


async def test_frames_in_the_same_read_as_the_upgrade_request() -> None:
    """A client that sends frames right behind its request, the last one cut short: they
    are handled after the 101 goes out (the pong too: it follows the 101), none is lost."""
    a, b = trio.socket.socketpair()
    server, client = trio.SocketStream(a), trio.SocketStream(b)
    cp = ClientProtocol(parse_uri("ws://x/v1/realtime"))
    cp.send_request(cp.connect())
    one, two = (Frame(OP_TEXT, b"one" * 60).serialize(mask=True), Frame(OP_TEXT, b"two" * 60).serialize(mask=True))
    await client.send_all(b"".join(cp.data_to_send()) + one + Frame(OP_PING, b"hi").serialize(mask=True) + two[:9])
    head = await server.receive_some(65536)
    assert head.endswith(two[:9])  # one read: the request and the frames
    with trio.fail_after(5):  # a lost frame would leave the receive waiting
        ws = await ServerHandshake(server, head).accept()
        assert await ws.receive_message() == "one" * 60
        await client.send_all(two[9:])
        assert await ws.receive_message() == "two" * 60
        cp.receive_data(await client.receive_some(65536))
    events = cp.events_received()
    assert events[0].status_code == 101 and [(f.opcode, f.data) for f in events[1:]] == [(OP_PONG, b"hi")]
    await server.aclose()
    await client.aclose()


async def test_frames_in_the_same_read_as_the_101() -> None:
    """A server whose first frames share a read with its 101, the last one cut short."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    hello, again = Frame(OP_TEXT, b"hello" * 30).serialize(mask=False), Frame(OP_TEXT, b"again" * 30).serialize(mask=False)
    first_read = trio.Event()
    got_from_client: list[tuple[object, bytes]] = []

    async def server() -> None:
        stream = await listener.accept()
        sp = ServerProtocol()
        while not (events := sp.events_received()):
            sp.receive_data(await stream.receive_some(65536))
        sp.send_response(sp.accept(events[0]))
        await stream.send_all(b"".join(sp.data_to_send()) + hello + Frame(OP_PING, b"hi").serialize(mask=False)
                              + again[:7])
        await first_read.wait()
        await stream.send_all(again[7:])
        while sp.close_rcvd is None:  # until the client's close: record its frames, echo the close
            sp.receive_data(await stream.receive_some(65536))
            got_from_client.extend((f.opcode, f.data) for f in sp.events_received())
            await stream.send_all(b"".join(sp.data_to_send()))
        await stream.aclose()

    with trio.fail_after(5):  # a lost frame would leave the receive waiting
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server)
            ws = await connect(f"ws://127.0.0.1:{port}/")
            assert await ws.receive_message() == "hello" * 30
            first_read.set()
            assert await ws.receive_message() == "again" * 30
            await ws.aclose(1000, "done")
    assert got_from_client == [(OP_PONG, b"hi"), (OP_CLOSE, Close(1000, "done").serialize())]
    await listener.aclose()
