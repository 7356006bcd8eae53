"""One trio task that reads many sockets: readiness callbacks instead of a task wake per message.

Why: a mock session receives a caller frame every 20 ms (and a caller the app's
audio as often), and waking the connection's own task for each one costs
trio's scheduler a task switch and an ``epoll_ctl`` (trio arms each fd one-shot
per wait) on top of the read. One task waiting on an epoll set that holds all
the sockets, reading whichever are ready, costs markedly less CPU per message,
and the busier the process, the more sockets each wake-up finds ready; it also
cuts the mock's decision lag under load (``loadtests/mock_capacity.py``
measures both).

How: a task that wants its socket read calls :meth:`Reactor.wait` with a
synchronous callback and parks. The reactor's task (:meth:`Reactor.run`, started
by whoever runs the connections, in their nursery: one per mock server, one per
batch of calls, see :func:`~.drive.open_call_services`) waits until the epoll set
has something ready, then calls each ready socket's callback in turn. The
callback does the whole hot path without yielding (read, parse, answer with a
write the kernel takes whole) and returns
True to stay parked, or False when its task must take over (something to await:
a write that did not go out whole, a close; or the socket ended): the reactor
then drops the socket from its set and wakes that task. An exception from a
callback wakes its task with that exception, so it ends that session and no
other; the reactor keeps serving.

The set is level-triggered, so a socket is registered once per park rather
than re-armed per message, and what one wake-up leaves unread (at most
``MAX_EVENTS`` sockets are served per wake-up, so that timers and other tasks
get their turn between batches) is reported again at the next.

Sockets are keyed by fd number, which the kernel reuses once a socket is
closed (the kernel also drops a closed fd from the epoll set by itself). So an
entry is only ever removed by its own task (the owner check in :meth:`_drop`),
and a stale entry is simply replaced when its number comes back.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import NoReturn

import outcome
import trio

__all__ = ["MAX_EVENTS", "Reactor"]

MAX_EVENTS = 64  # sockets served per wake-up (see the module docstring)


class Reactor:
    """An epoll set of parked sockets and the one task that serves them (see the module docstring)."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._entries: dict[int, tuple[Callable[[], bool], trio.lowlevel.Task]] = {}
        self.wakeups = 0  # how often the reactor's task woke (introspection: messages per wake-up)
        self.callbacks = 0  # how many callbacks it ran

    @property
    def parked(self) -> int:
        """How many tasks are parked here now."""
        return len(self._entries)

    async def run(self) -> NoReturn:
        """Serve parked sockets until cancelled (start it in the nursery that runs the connections)."""
        epoll, entries = self._epoll, self._entries
        try:
            while True:
                await trio.lowlevel.wait_readable(epoll.fileno())
                self.wakeups += 1
                for fd, _ in epoll.poll(0, MAX_EVENTS):
                    entry = entries.get(fd)
                    if entry is None:  # dropped by a callback earlier in this batch
                        continue
                    callback, task = entry
                    self.callbacks += 1
                    try:
                        if callback():
                            continue
                        result: outcome.Outcome = outcome.Value(None)
                    except Exception as exc:  # noqa: BLE001 -- that session's problem: its task raises it
                        result = outcome.Error(exc)
                    self._drop(fd, task)
                    trio.lowlevel.reschedule(task, result)
        finally:
            for fd, (_, task) in list(entries.items()):  # cancelled: wake anyone still parked
                self._drop(fd, task)
                trio.lowlevel.reschedule(task, outcome.Error(trio.ClosedResourceError("the reactor stopped")))
            self._epoll.close()

    async def wait(self, fd: int, on_readable: Callable[[], bool]) -> None:
        """Park the calling task while the reactor calls ``on_readable()`` each time
        ``fd`` is readable; return once it returns False, raise what it raised.
        Cancellable: a cancel takes the socket out of the set."""
        task = trio.lowlevel.current_task()
        self._epoll.register(fd, select.EPOLLIN)  # FileExistsError: another task is parked on this socket
        self._entries[fd] = (on_readable, task)  # replaces the entry of a closed socket with this number

        def abort(_: object) -> trio.lowlevel.Abort:
            self._drop(fd, task)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def release(self, fd: int, task: trio.lowlevel.Task) -> None:
        """Wake ``task``, parked on ``fd``, as if its callback had returned False.

        For whoever is about to close that socket: the kernel drops a closed fd
        from the set without telling anyone, so its task would never be woken.
        """
        if self._drop(fd, task):
            trio.lowlevel.reschedule(task, outcome.Value(None))

    def _drop(self, fd: int, task: trio.lowlevel.Task) -> bool:
        """Take ``fd`` out of the set if ``task`` is the one parked on it (True)."""
        entry = self._entries.get(fd)
        if entry is None or entry[1] is not task:
            return False
        del self._entries[fd]
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):  # closed meanwhile: the kernel dropped it from the set already
            pass
        return True

