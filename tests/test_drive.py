"""The shared trio loop (callsim.simulator.net.drive) around a sans-IO core.

One core, fed the same messages at the same (mocked) times over a real
WebSocket, must give the same outputs at the same times whichever task
handles a message: the reactor's (the connection's receiver parked) or the
receiver's own (no reactor: a TLS stream, or reactors switched off). Both go
through the one function that carries out a core's outputs
(:func:`~callsim.simulator.net.drive.apply_nowait`), so the wire cannot tell.
"""

from __future__ import annotations

import heapq
from typing import Any

import pytest
import trio
import trio.testing
from callsim.simulator.core_io import NOTHING, Abort, Close, Outputs
from callsim.simulator.net.clocks import TrioClock
from callsim.simulator.net.drive import FLUSH, apply_nowait, drive, open_call_services
from callsim.simulator.net.wsconn import ConnectionClosed

from tests.test_reactor import ws_pair

MS = 1_000_000


class ScriptCore:
    """A small sans-IO core. ``echo X`` is answered at once; ``later N X`` schedules ``timer X``
    N ms on (a message that brings the next deadline earlier); ``bye`` is answered and closes."""

    def __init__(self) -> None:
        self.log: list[tuple[int, str, str]] = []  # (time, in | out | closed, text)
        self.timers: list[tuple[int, int, str]] = []
        self.finished = False
        self._n = 0

    def receive(self, now_ns: int, data: str | bytes) -> Outputs:
        text = data if isinstance(data, str) else data.decode()
        self.log.append((now_ns, "in", text))
        word, _, rest = text.partition(" ")
        if word == "echo":
            return self._out(now_ns, [rest])
        if word == "later":
            ms, _, what = rest.partition(" ")
            self._n += 1
            heapq.heappush(self.timers, (now_ns + int(ms) * MS, self._n, what))
            return NOTHING
        if word == "bye":
            self.finished = True
            return [*self._out(now_ns, ["bye to you"]), Close(4000, "bye")]
        return NOTHING

    def advance(self, now_ns: int) -> Outputs:
        due = []
        while self.timers and self.timers[0][0] <= now_ns:
            due.append("timer " + heapq.heappop(self.timers)[2])
        return self._out(now_ns, due) if due else NOTHING

    def next_deadline_ns(self) -> int | None:
        return None if self.finished or not self.timers else self.timers[0][0]

    def peer_closed(self, now_ns: int, code: int | None = None, reason: str | None = None) -> None:
        self.finished = True
        self.log.append((now_ns, "closed", f"{code} {reason}"))

    def _out(self, now_ns: int, texts: list[str]) -> list[str]:
        self.log += [(now_ns, "out", t) for t in texts]
        return texts


# client messages: (trio time in s, text); off the timers' grid, so no two tasks wake at once
SCRIPT = [
    (0.1003, "echo one"),
    (0.2003, "later 50 far"),   # timer at 0.2503
    (0.2305, "later 5 near"),   # brings the deadline forward: 0.2355
    (0.2307, "echo two"),
    (0.3009, "later 30 last"),  # 0.3309
    (0.4001, "bye"),
]


async def _serve_once(reactor: bool) -> tuple[ScriptCore, list[tuple[int, str]], Any, int]:
    clock = TrioClock()
    core = ScriptCore()
    heard: list[tuple[int, str]] = []
    async with open_call_services(clock, reactor=reactor) as services, ws_pair() as (server, client):
        async def peer() -> Any:
            async def send_all() -> None:
                for t, text in SCRIPT:
                    await trio.sleep_until(t)
                    await client.send_text(text)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_all)
                try:
                    while True:
                        message = await client.receive_message()
                        heard.append((clock.now_ns(), str(message)))
                except ConnectionClosed as exc:
                    return exc.code, exc.reason

        result: list[Any] = []

        async def run_peer() -> None:
            result.append(await peer())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_peer)
            assert await drive(core, server, clock, services, rewake=True) is None  # the core closed
        callbacks = services.reactor.callbacks if services.reactor is not None else 0
    return core, heard, result[0], callbacks


def test_the_reactor_path_and_the_awaited_path_give_the_same_outputs_and_timeline() -> None:
    runs = {}
    for reactor in (True, False):
        runs[reactor] = trio.run(_serve_once, reactor, clock=trio.testing.MockClock(autojump_threshold=0))
    (core_r, heard_r, close_r, callbacks_r), (core_a, heard_a, close_a, callbacks_a) = runs[True], runs[False]
    assert callbacks_r >= len(SCRIPT) and callbacks_a == 0  # the first run really went through the reactor
    assert core_r.log == core_a.log
    assert heard_r == heard_a
    assert close_r == close_a == (4000, "bye")
    # and the timeline is the core's own: answers at once, timers at their deadlines
    assert heard_r == [
        (100_300_000, "one"),
        (230_700_000, "two"),
        (235_500_000, "timer near"),
        (250_300_000, "timer far"),
        (330_900_000, "timer last"),
        (400_100_000, "bye to you"),
    ]


class RecordingSocket:
    """Only what apply_nowait needs: ``send_texts_nowait`` taking ``takes`` batches whole."""

    def __init__(self, takes: bool = True) -> None:
        self.batches: list[list[Any]] = []
        self.takes = takes

    def send_texts_nowait(self, messages: list[Any]) -> bool:
        self.batches.append(list(messages))
        return self.takes


@pytest.mark.parametrize("outs, takes, left, batches", [
    (NOTHING, True, None, []),
    (["a", b"b"], True, None, [["a", b"b"]]),
    (["a"], False, FLUSH, [["a"]]),
    ([b"x", Close(1011, "r")], True, Close(1011, "r"), [[b"x"]]),
    ([b"x", Close(1011, "r")], False, Close(1011, "r"), [[b"x"]]),
    ((Abort(),), True, Abort(), []),
])
def test_apply_nowait_sends_the_messages_and_leaves_what_needs_awaiting(outs: Outputs, takes: bool,
                                                                          left: object, batches: list) -> None:
    ws = RecordingSocket(takes)
    assert apply_nowait(ws, outs) == left
    assert ws.batches == batches


def test_a_batch_is_handed_to_the_socket_as_it_is() -> None:
    """No copy on the hot path: the list the core returned is what the socket gets."""
    seen: list[object] = []

    class Identity:
        def send_texts_nowait(self, messages: object) -> bool:
            seen.append(messages)
            return True

    outs = ["m1", "m2"]
    assert apply_nowait(Identity(), outs) is None and seen[0] is outs


async def test_finish_flushes_then_ends_as_the_core_asked(autojump_clock: trio.testing.MockClock) -> None:
    from callsim.simulator.net.drive import finish

    done: list[str] = []

    class Ws:
        async def flush(self) -> None:
            done.append("flush")

        async def aclose(self, code: int = 1000, reason: str = "") -> None:
            done.append(f"close {code} {reason}")

    async def abort() -> None:
        done.append("abort")

    assert await finish(Ws(), FLUSH, abort) is True
    assert await finish(Ws(), Close(4000, "x"), abort) is False
    assert await finish(Ws(), Abort(), abort) is False
    assert done == ["flush", "flush", "close 4000 x", "flush", "abort"]

