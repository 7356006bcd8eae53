"""callsim.simulator.net.reactor and WebSocket.receive_via over real sockets, and the mock using them.

Why these exist: the reactor moves the mock's per-message work out of each
session's task into one task that reads every ready socket (see
simulator/net/reactor.py). That trades trio's own bookkeeping (one-shot fd
registration, wake-ups, cancellation, closing) for ours, so each rule the module
states is pinned here: callbacks run in the reactor's task while the waiter stays
parked; False wakes it and takes the fd out; an exception goes to its own task
only; a cancel takes the fd out; a burst of more than ``MAX_EVENTS`` ready sockets
is served in several wake-ups; a reused fd number cannot be dropped by the stale
owner; a stopped reactor wakes whoever is still parked. Then the same for a
WebSocket parked with ``receive_via`` (messages, pings, closes, ``aclose`` from
another task, the cases where it must not park) and, end to end, the mock
serving appends through its reactor with the same answers as without it.

Real sockets only: ``socket.socketpair`` for the reactor, loopback TCP for the
WebSockets (our server side facing our client, or a wsproto client where a test
must see pongs and close frames itself; our client side facing a wsproto server).
No sleeps: tests wait for events or for ``trio.testing.wait_all_tasks_blocked``
(after which a readable fd in the set would have been served: trio polls I/O
before declaring the run idle), each under a ``trio.fail_after`` guard.

``aclose`` giving up on the close handshake must wake a task parked in
``receive_via`` as it wakes one in ``receive_message`` (the kernel drops a closed
fd from the epoll set silently); that test runs on both paths.
"""

from __future__ import annotations

import base64
import json
import math
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import pytest
import trio
import trio.testing
from callsim.simulator.mock.behaviour import Behaviour, ThinkTime
from callsim.simulator.mock.server import MockConfig, running_mock
from callsim.simulator.mock.session import MockSession
from callsim.simulator.net import wsconn
from callsim.simulator.net.reactor import MAX_EVENTS, Reactor
from callsim.simulator.net.wsconn import ConnectionClosed, ServerHandshake, WebSocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from tests.test_wsconn import (
    read_head,  # the same request-head reader as the wsconn tests
)

HOST = "127.0.0.1"
GUARD = 10.0  # seconds: every test's deadline (none needs more than a fraction of it)
Task = trio.lowlevel.Task
P = TypeVar("P")


class Boom(Exception):
    """What a test's callback or handler raises on purpose."""


# ------------------------------------------------------------------ reactor helpers


async def _serve_reactor(reactor: Reactor, *, task_status: trio.TaskStatus[Task] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started(trio.lowlevel.current_task())
    await reactor.run()


@asynccontextmanager
async def running_reactor() -> AsyncIterator[tuple[Reactor, Task]]:
    """A Reactor served in a background task; yields it and that task."""
    reactor = Reactor()
    async with trio.open_nursery() as nursery:
        task = await nursery.start(_serve_reactor, reactor)
        try:
            yield reactor, task
        finally:
            nursery.cancel_scope.cancel()


@contextmanager
def socketpairs(n: int) -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    """``n`` non-blocking (reader, writer) socketpairs, closed at the end."""
    pairs = [socket.socketpair() for _ in range(n)]
    try:
        for a, b in pairs:
            a.setblocking(False)
            b.setblocking(False)
        yield pairs
    finally:
        for a, b in pairs:
            a.close()
            b.close()


class Parked:
    """A task parked in ``reactor.wait`` on ``sock``, with a callback that reads what
    arrives and records it with the task it ran in: ``!`` in the data returns False
    (wake the task), ``?`` raises :class:`Boom`, anything else returns True.

    ``start`` it in a nursery: when that returns, the fd is in the reactor's set.
    ``done`` is set when the task leaves ``wait``: ``woke`` (returned), ``error``
    (raised) or ``scope.cancelled_caught`` (cancelled through ``scope``).
    """

    def __init__(self, reactor: Reactor, sock: socket.socket) -> None:
        self.reactor = reactor
        self.sock = sock
        self.fd = sock.fileno()
        self.reads: list[tuple[bytes, Task]] = []
        self.wakeups_at_read: list[int] = []  # reactor.wakeups when each callback ran
        self.scope = trio.CancelScope()
        self.done = trio.Event()
        self.woke = False
        self.error: BaseException | None = None
        self.task: Task | None = None
        self._tx, self._rx = trio.open_memory_channel[bytes](math.inf)

    async def start(self, nursery: trio.Nursery) -> Parked:
        await nursery.start(self._park)
        return self

    async def _park(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.task = trio.lowlevel.current_task()
        with self.scope:
            task_status.started()  # we run on into wait() before the starter resumes
            try:
                await self.reactor.wait(self.fd, self._on_readable)
            except Exception as exc:  # noqa: BLE001 -- what the callback raised, for the test to check
                self.error = exc
            else:
                self.woke = True
        self.done.set()

    def _on_readable(self) -> bool:
        data = self.sock.recv(65536)
        self.reads.append((data, trio.lowlevel.current_task()))
        self.wakeups_at_read.append(self.reactor.wakeups)
        self._tx.send_nowait(data)
        if b"?" in data:
            raise Boom(data)
        return b"!" not in data

    async def next_read(self) -> bytes:
        """What the callback read next (waits for the reactor to run it)."""
        return await self._rx.receive()


# ------------------------------------------------------------------ websocket helpers


async def _accept_one(listener: trio.SocketListener, got: list[WebSocket]) -> None:
    stream = await listener.accept()
    got.append(await ServerHandshake(stream, await read_head(stream)).accept())


class RawPeer:
    """A wsproto peer on a bare trio socket (a client; a server with :meth:`accept`):
    it sees pongs and close frames itself, answers nothing on its own, and can
    vanish (close the TCP connection)."""

    def __init__(self, stream: trio.SocketStream, role: ConnectionType = ConnectionType.CLIENT) -> None:
        self.stream = stream
        self.conn = WSConnection(role)
        self._events: list[Event] = []

    @classmethod
    async def open(cls, port: int) -> RawPeer:
        peer = cls(await trio.open_tcp_stream(HOST, port))
        await peer.stream.send_all(peer.conn.send(Request(host=f"{HOST}:{port}", target="/")))
        await peer.next(AcceptConnection)
        return peer

    @classmethod
    async def accept(cls, stream: trio.SocketStream) -> RawPeer:
        """The server role instead: take the upgrade on ``stream`` and accept it."""
        peer = cls(stream, ConnectionType.SERVER)
        await peer.next(Request)
        await peer.stream.send_all(peer.conn.send(AcceptConnection()))
        return peer

    async def send(self, *events: Event) -> None:
        await self.stream.send_all(b"".join(self.conn.send(e) for e in events))

    async def next(self, kind: type[Event]) -> Any:
        """The next event of type ``kind`` (earlier ones of other types are dropped)."""
        while True:
            while self._events:
                ev = self._events.pop(0)
                if isinstance(ev, kind):
                    return ev
            data = await self.stream.receive_some(65536)
            assert data, f"EOF while waiting for {kind.__name__}"
            self.conn.receive_data(data)
            self._events.extend(self.conn.events())


async def open_client(port: int) -> WebSocket:
    return await wsconn.connect(f"ws://{HOST}:{port}/")


@asynccontextmanager
async def ws_pair(open_peer: Callable[[int], Awaitable[P]] = open_client) -> AsyncIterator[tuple[WebSocket, P]]:
    """Our WebSocket server side and a peer (``open_peer(port)``) connected on loopback;
    both sockets are closed at the end."""
    listener = (await trio.open_tcp_listeners(0, host=HOST))[0]
    got: list[WebSocket] = []
    async with listener, trio.open_nursery() as nursery:
        nursery.start_soon(_accept_one, listener, got)
        peer = await open_peer(listener.socket.getsockname()[1])
    server = got[0]
    try:
        yield server, peer
    finally:
        await server.stream.aclose()
        await peer.stream.aclose()  # type: ignore[attr-defined]


@asynccontextmanager
async def raw_server_pair() -> AsyncIterator[tuple[WebSocket, RawPeer]]:
    """Our WebSocket client side and a wsproto server peer connected on loopback."""
    listener = (await trio.open_tcp_listeners(0, host=HOST))[0]
    got: list[RawPeer] = []

    async def accept() -> None:
        got.append(await RawPeer.accept(await listener.accept()))

    async with listener, trio.open_nursery() as nursery:
        nursery.start_soon(accept)
        client = await open_client(listener.socket.getsockname()[1])
    try:
        yield client, got[0]
    finally:
        await client.stream.aclose()
        await got[0].stream.aclose()


class Via:
    """A task in ``server.receive_via(reactor, handle)``; ``handle`` records each message
    with the task it ran in, raises :class:`Boom` on ``"boom"`` and returns False on
    ``"stop"``. ``done`` is set when receive_via returns (``result``) or raises (``error``)."""

    def __init__(self, server: WebSocket, reactor: Reactor) -> None:
        self.server = server
        self.reactor = reactor
        self.handled: list[tuple[str | bytes, Task]] = []
        self.done = trio.Event()
        self.result: bool | None = None
        self.error: BaseException | None = None
        self._tx, self._rx = trio.open_memory_channel[str | bytes](math.inf)

    def start(self, nursery: trio.Nursery) -> Via:
        nursery.start_soon(self._run)
        return self

    async def start_parked(self, nursery: trio.Nursery) -> Via:
        """:meth:`start`, then wait until its task is parked in the reactor."""
        self.start(nursery)
        await trio.testing.wait_all_tasks_blocked()
        assert not self.done.is_set() and self.server.stream._fd() in self.reactor._entries  # type: ignore[attr-defined]
        return self

    async def _run(self) -> None:
        try:
            self.result = await self.server.receive_via(self.reactor, self._handle)
        except Exception as exc:  # noqa: BLE001 -- what handle raised, for the test to check
            self.error = exc
        self.done.set()

    def _handle(self, msg: str | bytes) -> bool:
        self.handled.append((msg, trio.lowlevel.current_task()))
        self._tx.send_nowait(msg)
        if msg == "boom":
            raise Boom(msg)
        return msg != "stop"

    async def next_handled(self) -> str | bytes:
        return await self._rx.receive()


async def receive_via_without_parking(ws: WebSocket, reactor: Reactor) -> bool:
    """``ws.receive_via`` under an already cancelled scope: parking would raise Cancelled
    (caught by the scope), so a result means it returned without parking."""
    handled: list[str | bytes] = []
    result: bool | None = None
    with trio.CancelScope() as scope:
        scope.cancel()
        result = await ws.receive_via(reactor, lambda m: handled.append(m) is None)
    assert not scope.cancelled_caught, "receive_via parked"
    assert handled == [] and reactor.parked == 0
    assert result is not None
    return result


# ====================================================================== Reactor


async def test_callbacks_run_in_the_reactor_task_while_the_waiter_stays_parked() -> None:
    with trio.fail_after(GUARD), socketpairs(1) as [(a, b)]:
        async with running_reactor() as (reactor, reactor_task), trio.open_nursery() as nursery:
            p = await Parked(reactor, a).start(nursery)
            assert reactor.parked == 1
            before = reactor.callbacks
            for i in range(5):
                b.send(b"msg%d" % i)
                assert await p.next_read() == b"msg%d" % i
                assert not p.done.is_set() and not p.woke  # the code after wait() has not run
                assert reactor.parked == 1
            assert reactor.callbacks - before == 5
            assert [task for _, task in p.reads] == [reactor_task] * 5 and reactor_task is not p.task

            b.send(b"last!")  # the callback returns False: the task wakes, the fd leaves the set
            assert await p.next_read() == b"last!"
            await p.done.wait()
            assert p.woke and p.error is None and reactor.parked == 0

            b.send(b"nobody listens")
            await trio.testing.wait_all_tasks_blocked()  # also: the reactor is not spinning on it
            assert len(p.reads) == 6 and reactor.callbacks - before == 6


async def test_an_exception_goes_to_its_own_task_and_the_others_are_still_served() -> None:
    with trio.fail_after(GUARD), socketpairs(2) as [(a1, b1), (a2, b2)]:
        async with running_reactor() as (reactor, _), trio.open_nursery() as nursery:
            bad = await Parked(reactor, a1).start(nursery)
            good = await Parked(reactor, a2).start(nursery)
            b1.send(b"?")  # bad's callback raises
            await bad.done.wait()
            assert isinstance(bad.error, Boom) and bad.error.args == (b"?",) and not bad.woke
            assert not good.done.is_set() and reactor.parked == 1

            for i in range(3):
                b2.send(b"after %d" % i)
                assert await good.next_read() == b"after %d" % i
            assert not good.done.is_set()
            b2.send(b"bye!")
            await good.done.wait()
            assert good.woke and good.error is None and reactor.parked == 0


async def test_cancelling_a_parked_task_takes_its_fd_out_of_the_set() -> None:
    with trio.fail_after(GUARD), socketpairs(2) as [(a, b), (other_a, other_b)]:
        async with running_reactor() as (reactor, _), trio.open_nursery() as nursery:
            p = await Parked(reactor, a).start(nursery)
            other = await Parked(reactor, other_a).start(nursery)
            p.scope.cancel()
            await p.done.wait()
            assert p.scope.cancelled_caught and not p.woke and p.error is None
            assert reactor.parked == 1
            before = reactor.callbacks

            b.send(b"too late")
            other_b.send(b"ping")  # both readable before the reactor next looks
            assert await other.next_read() == b"ping"
            await trio.testing.wait_all_tasks_blocked()  # hangs if the fd stayed in epoll (spinning)
            assert p.reads == [] and reactor.callbacks - before == 1
            other.scope.cancel()
            await other.done.wait()
            assert reactor.parked == 0


async def test_more_ready_sockets_than_max_events_are_all_served_over_several_wakeups() -> None:
    n = 150
    with trio.fail_after(GUARD), socketpairs(n) as pairs:
        async with running_reactor() as (reactor, _), trio.open_nursery() as nursery:
            parked = [await Parked(reactor, a).start(nursery) for a, _ in pairs]
            assert reactor.parked == n
            wakeups, callbacks = reactor.wakeups, reactor.callbacks
            for i, (_, b) in enumerate(pairs):  # no checkpoint in between: all ready at once
                b.send(b"%d" % i)
            for i, p in enumerate(parked):
                assert await p.next_read() == b"%d" % i
            await trio.testing.wait_all_tasks_blocked()
            assert reactor.callbacks - callbacks == n  # each exactly once
            assert all(len(p.reads) == 1 and not p.done.is_set() for p in parked)
            assert reactor.wakeups - wakeups >= math.ceil(n / MAX_EVENTS) >= 2
            per_wakeup: dict[int, int] = {}
            for p in parked:
                per_wakeup[p.wakeups_at_read[0]] = per_wakeup.get(p.wakeups_at_read[0], 0) + 1
            assert len(per_wakeup) >= 3 and max(per_wakeup.values()) <= MAX_EVENTS, per_wakeup
            nursery.cancel_scope.cancel()
        assert reactor.parked == 0


def _socketpair_with_fd(fd: int, spare: list[socket.socket]) -> tuple[socket.socket, socket.socket]:
    """A socketpair one of whose ends has number ``fd`` (free now): the kernel hands out
    the lowest free number, so pairs are made until one gets it (the others go to ``spare``)."""
    for _ in range(64):
        x, y = socket.socketpair()
        if x.fileno() == fd:
            return x, y
        if y.fileno() == fd:
            return y, x
        spare += [x, y]
    raise AssertionError(f"fd {fd} never came back")


async def test_a_reused_fd_number_serves_the_new_owner_and_the_stale_cancel_leaves_it() -> None:
    spare: list[socket.socket] = []
    with trio.fail_after(GUARD), socketpairs(1) as [(a, _b)]:
        async with running_reactor() as (reactor, _), trio.open_nursery() as nursery:
            stale = await Parked(reactor, a).start(nursery)
            fd = a.fileno()
            a.close()  # behind the parked task's back: the kernel drops it from the epoll set
            c, d = _socketpair_with_fd(fd, spare)
            try:
                c.setblocking(False)
                fresh = await Parked(reactor, c).start(nursery)
                assert fresh.fd == stale.fd == fd and reactor.parked == 1

                d.send(b"for the new one")
                assert await fresh.next_read() == b"for the new one"
                assert stale.reads == []

                stale.scope.cancel()  # its cancel must not take the new owner's entry
                await stale.done.wait()
                assert stale.scope.cancelled_caught and reactor.parked == 1
                d.send(b"still there")
                assert await fresh.next_read() == b"still there"
                assert not fresh.done.is_set() and stale.reads == []

                d.send(b"done!")
                await fresh.done.wait()
                assert fresh.woke and reactor.parked == 0
            finally:
                for s in (c, d, *spare):
                    s.close()


async def test_cancelling_run_wakes_the_parked_tasks_with_closed_resource_error() -> None:
    with trio.fail_after(GUARD), socketpairs(2) as pairs:
        reactor = Reactor()
        async with trio.open_nursery() as nursery:
            run_scope = trio.CancelScope()

            async def serve(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                with run_scope:
                    task_status.started()
                    await reactor.run()

            await nursery.start(serve)
            parked = [await Parked(reactor, a).start(nursery) for a, _ in pairs]
            pairs[0][1].send(b"served")
            assert await parked[0].next_read() == b"served"  # the reactor is running
            run_scope.cancel()
            for p in parked:
                await p.done.wait()
                assert isinstance(p.error, trio.ClosedResourceError), p.error
                assert not p.woke and not p.scope.cancelled_caught
            assert reactor.parked == 0


# ====================================================================== WebSocket.receive_via


async def test_receive_via_hands_messages_in_order_in_the_reactor_task_and_stop_leaves_the_rest_queued() -> None:
    with trio.fail_after(GUARD):
        async with running_reactor() as (reactor, reactor_task), ws_pair() as (server, client):
            async with trio.open_nursery() as nursery:
                via = Via(server, reactor).start(nursery)
                for i in range(5):  # one at a time: the task stays parked throughout
                    await client.send_text(f"m{i}")
                    assert await via.next_handled() == f"m{i}"
                    assert not via.done.is_set() and reactor.parked == 1
                # one write, so one read: handle stops at "stop", the rest waits in the queue
                await client.send_texts(["a", "stop", "b", b"c"])
                await via.done.wait()
            assert via.result is True and via.error is None
            assert [m for m, _ in via.handled] == [f"m{i}" for i in range(5)] + ["a", "stop"]
            assert {t for _, t in via.handled} == {reactor_task}
            assert reactor.parked == 0
            assert await server.receive_message() == "b"
            assert await server.receive_message() == "c"


async def test_a_ping_while_parked_is_answered_without_waking_the_task() -> None:
    with trio.fail_after(GUARD):
        async with running_reactor() as (reactor, _), ws_pair(RawPeer.open) as (server, peer):
            async with trio.open_nursery() as nursery:
                via = await Via(server, reactor).start_parked(nursery)
                assert reactor.parked == 1
                callbacks = reactor.callbacks
                await peer.send(Ping(b"are you there"))
                pong = await peer.next(Pong)
                assert pong.payload == b"are you there"
                assert not via.done.is_set() and reactor.parked == 1 and via.handled == []
                assert reactor.callbacks > callbacks  # the reactor read the ping and wrote the pong
                await peer.send(TextMessage("after the ping"))
                assert await via.next_handled() == "after the ping"
                assert not via.done.is_set()
                nursery.cancel_scope.cancel()
            assert reactor.parked == 0


async def test_a_close_frame_while_parked_is_echoed_and_reported() -> None:
    with trio.fail_after(GUARD):
        async with running_reactor() as (reactor, _), ws_pair(RawPeer.open) as (server, peer):
            async with trio.open_nursery() as nursery:
                via = Via(server, reactor).start(nursery)
                await peer.send(TextMessage("before"), CloseConnection(4001, "bye"))
                echo = await peer.next(CloseConnection)
                await via.done.wait()
            assert echo.code == 4001  # written by the reactor's read: the parked task writes nothing
            assert via.result is True and reactor.parked == 0
            assert [m for m, _ in via.handled] in (["before"], [])  # one read or two
            if not via.handled:
                assert await server.receive_message() == "before"
            with pytest.raises(ConnectionClosed) as info:
                await server.receive_message()
            assert (info.value.code, info.value.reason) == (4001, "bye")
            await server.flush()  # what the caller does next: the half-close goes out
            assert await peer.stream.receive_some(4096) == b""


async def test_on_the_client_side_a_close_frame_while_parked_is_echoed_and_reported() -> None:
    # The client side differs: its echo is not followed by a half-close (the server
    # closes TCP), so only the closed state can end receive_via; this server keeps
    # the TCP connection open until the end of the test.
    with trio.fail_after(GUARD):
        async with running_reactor() as (reactor, _), raw_server_pair() as (client, peer):
            async with trio.open_nursery() as nursery:
                via = Via(client, reactor).start(nursery)
                await peer.send(CloseConnection(4003, "going away"))
                echo = await peer.next(CloseConnection)
                await via.done.wait()
            assert echo.code == 4003
            assert via.result is True and via.handled == [] and reactor.parked == 0
            with pytest.raises(ConnectionClosed) as info:
                await client.receive_message()
            assert (info.value.code, info.value.reason) == (4003, "going away")


async def test_a_peer_vanishing_while_parked_gives_1006() -> None:
    with trio.fail_after(GUARD):
        async with running_reactor() as (reactor, _), ws_pair(RawPeer.open) as (server, peer):
            async with trio.open_nursery() as nursery:
                via = await Via(server, reactor).start_parked(nursery)
                assert reactor.parked == 1
                await peer.stream.aclose()  # no close frame
                await via.done.wait()
            assert via.result is True and via.handled == [] and reactor.parked == 0
            with pytest.raises(ConnectionClosed) as info:
                await server.receive_message()
            assert (info.value.code, info.value.reason) == (1006, None)


async def test_aclose_from_another_task_completes_the_handshake_and_ends_receive_via() -> None:
    with trio.fail_after(GUARD):
        async with running_reactor() as (reactor, _), ws_pair() as (server, client):
            peer_saw: list[ConnectionClosed] = []

            async def peer_reads() -> None:  # our client echoes the close while receiving
                with pytest.raises(ConnectionClosed) as info:
                    await client.receive_message()
                peer_saw.append(info.value)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer_reads)
                via = await Via(server, reactor).start_parked(nursery)
                assert reactor.parked == 1
                # a long handshake timeout: only the echo read by the reactor ends it within GUARD
                await server.aclose(4002, "shutting down", timeout=60)
                await via.done.wait()
            assert via.result is True and via.error is None and reactor.parked == 0
            assert [(e.code, e.reason) for e in peer_saw] == [(4002, "shutting down")]
            assert server._proto.close_rcvd is not None and server._proto.close_rcvd.code == 4002  # the echo
            assert server.closed is not None and server.closed.code == 4002


@pytest.mark.parametrize("via_reactor", [False, True])  # False: the control, a task in receive_message()
async def test_aclose_giving_up_on_the_handshake_ends_the_parked_receiver(via_reactor: bool) -> None:
    with trio.fail_after(GUARD):
        async with running_reactor() as (reactor, _), ws_pair() as (server, _client):
            ended: list[object] = []

            async def receiver() -> None:
                try:
                    if via_reactor:
                        ended.append(await server.receive_via(reactor, lambda m: True))
                    else:
                        ended.append(await server.receive_message())
                except ConnectionClosed as exc:
                    ended.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(receiver)
                await trio.testing.wait_all_tasks_blocked()
                assert reactor.parked == int(via_reactor)
                await server.aclose(timeout=0)  # the client is not reading: no echo; the socket is closed
                await trio.testing.wait_all_tasks_blocked()
                try:
                    assert len(ended) == 1, "the receiving task is still parked after the socket was closed"
                    assert reactor.parked == 0
                finally:
                    nursery.cancel_scope.cancel()
            if via_reactor:
                assert ended == [True]
            else:
                assert isinstance(ended[0], ConnectionClosed) and ended[0].code == 1000


async def test_receive_via_returns_false_without_parking_when_it_cannot_park() -> None:
    with trio.fail_after(GUARD):
        async with running_reactor() as (reactor, _), ws_pair() as (server, client):
            # messages already queued: one write of two, so one read
            await client.send_texts(["one", "two"])
            assert await server.receive_message() == "one"
            assert await receive_via_without_parking(server, reactor) is False
            assert await server.receive_message() == "two"

            async with trio.open_nursery() as nursery:
                # another task receiving (receive_message), then another task in receive_via
                got: list[str | bytes] = []
                nursery.start_soon(lambda: _append(got, server.receive_message()))
                await trio.testing.wait_all_tasks_blocked()
                assert await receive_via_without_parking(server, reactor) is False
                await client.send_text("three")
                await trio.testing.wait_all_tasks_blocked()
                assert got == ["three"]

                via = await Via(server, reactor).start_parked(nursery)
                assert reactor.parked == 1
                with trio.CancelScope() as scope:
                    scope.cancel()
                    assert await server.receive_via(reactor, lambda m: True) is False
                assert not scope.cancelled_caught and reactor.parked == 1
                await client.send_text("stop")
                await via.done.wait()
                assert via.result is True and [m for m, _ in via.handled] == ["stop"]

            # closed
            await client.stream.aclose()
            with pytest.raises(ConnectionClosed):
                await server.receive_message()
            assert await receive_via_without_parking(server, reactor) is False


async def _append(into: list[Any], aw: Awaitable[Any]) -> None:
    into.append(await aw)


async def test_an_exception_from_handle_is_raised_from_receive_via_and_other_connections_go_on() -> None:
    with trio.fail_after(GUARD):
        async with running_reactor() as (reactor, _), ws_pair() as (s1, c1), ws_pair() as (s2, c2):
            async with trio.open_nursery() as nursery:
                v1 = Via(s1, reactor).start(nursery)
                v2 = Via(s2, reactor).start(nursery)
                await trio.testing.wait_all_tasks_blocked()
                assert reactor.parked == 2
                await c1.send_texts(["boom", "after"])
                await v1.done.wait()
                assert isinstance(v1.error, Boom) and v1.result is None
                assert reactor.parked == 1 and not v2.done.is_set()

                for i in range(3):
                    await c2.send_text(f"still served {i}")
                    assert await v2.next_handled() == f"still served {i}"
                assert not v2.done.is_set()

                # the failed connection is usable again: the rest is there, and it can park anew
                assert await s1.receive_message() == "after"
                v1b = Via(s1, reactor).start(nursery)
                await c1.send_text("again")
                assert await v1b.next_handled() == "again"
                assert reactor.parked == 2
                nursery.cancel_scope.cancel()
            assert reactor.parked == 0


# ====================================================================== the mock server

KEY = "sk-test-reactor"
PCMU_MANUAL = {"type": "session.update", "session": {
    "type": "realtime",
    "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
              "output": {"format": {"type": "audio/pcmu"}}},
}}
APPENDS = 25  # 500 ms of silence, 20 ms per append
APPEND = json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\xff" * 160).decode()})
QUICK = Behaviour(think=ThinkTime("fixed", 20.0), realtime_factor=50.0, seed=7)  # a whole reply in ~0.1 s


async def _scripted_exchange(reactor: bool) -> tuple[list[str], int | None]:
    """session.update (pcmu, no VAD), ``APPENDS`` appends each read on its own, commit,
    response.create: the event types received, and the reactor callbacks the appends took."""
    async with running_mock(MockConfig(api_key=KEY, behaviour=QUICK, reactor=reactor)) as mock:
        assert (mock.reactor is not None) == reactor
        ws = await wsconn.connect(mock.realtime_url + "?model=gpt-realtime",
                                  [(b"authorization", f"Bearer {KEY}".encode())])
        types: list[str] = []

        async def until(etype: str) -> None:
            while not types or types[-1] != etype:
                types.append(json.loads(await ws.receive_message())["type"])

        try:
            await until("session.created")
            await ws.send_text(json.dumps(PCMU_MANUAL))
            await until("session.updated")
            session: MockSession = next(iter(mock.sessions.values()))
            callbacks = mock.reactor.callbacks if mock.reactor else 0
            for k in range(1, APPENDS + 1):
                await ws.send_text(APPEND)
                while len(session.append_ns) < k:  # the server took this one before the next goes
                    await trio.testing.wait_all_tasks_blocked()
            appends_via_reactor = mock.reactor.callbacks - callbacks if mock.reactor else None
            await ws.send_text(json.dumps({"type": "input_audio_buffer.commit"}))
            await until("conversation.item.done")
            await ws.send_text(json.dumps({"type": "response.create"}))
            await until("rate_limits.updated")
        finally:
            await ws.aclose()
        return types, appends_via_reactor


async def test_the_mock_serves_appends_through_its_reactor_with_the_same_answers_as_without() -> None:
    with trio.fail_after(GUARD * 2):
        with_reactor, appends_via_reactor = await _scripted_exchange(reactor=True)
        without, none = await _scripted_exchange(reactor=False)
    assert none is None
    assert appends_via_reactor is not None and appends_via_reactor >= APPENDS  # one read each
    assert with_reactor == without
    assert with_reactor[:6] == ["session.created", "session.updated", "input_audio_buffer.committed",
                                "conversation.item.added", "conversation.item.done", "response.created"]
    assert with_reactor[-3:] == ["conversation.item.done", "response.done", "rate_limits.updated"]
    assert with_reactor.count("response.output_audio.delta") > 3 and "error" not in with_reactor
