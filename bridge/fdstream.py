"""A connected TCP socket read and written with ``os.read``/``os.write`` on its fd.

Why: in the bridge's profile, trio's ``SocketStream`` layers (conflict detector
context managers, ``_nonblocking_helper``, and a reschedule after *every* send
that completed at once) were about half of all CPU. Here a send that the kernel
takes whole returns without yielding (a bridge's sends almost always fit), and
a read yields only by waiting for the fd or once when data was already there,
so each call's loop still checkpoints on every message.

The simulator has its own (``callsim.simulator.net.fdstream``, design.md rule 1).
"""

from __future__ import annotations

import os

import trio

RECEIVE_BYTES = 65536


class FdStream(trio.abc.HalfCloseableStream):
    """A plain trio ``SocketStream`` read and written through its fd (see the module docstring).

    Several tasks may send: a write that would block takes ``_send_lock``, and
    a sender that finds it held queues behind it, so bytes keep their order.

    The fd number is read from the trio socket on every use, never cached:
    once anyone closes that socket (this stream's :meth:`aclose`, or the trio
    ``SocketStream`` closed directly, as the front door does when a connection
    ends), its ``fileno()`` is -1 and every operation raises
    ``ClosedResourceError`` rather than touching a number the kernel may already
    have given to another connection. trio's ``close()`` calls ``notify_closing``
    first, so a task waiting on the fd is woken with ``ClosedResourceError`` too.
    Holding the ``SocketStream`` also keeps the socket from being
    garbage-collected (and its fd closed behind epoll's back) while in use.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self.socket = stream.socket
        self._fileno = stream.socket.fileno  # bound once: called on every operation
        self._send_lock = trio.Lock()
        self._drained = False  # the last read returned less than asked: the socket had no more

    def _fd(self) -> int:
        fd = self._fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the socket was closed")
        return fd

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Read what is there, waiting for the fd only when needed.

        After a short read the socket is known to be empty, so the next call
        waits for readability first instead of paying for a read that fails
        with EAGAIN (a syscall and a Python exception per message).
        """
        want = max_bytes or RECEIVE_BYTES
        fd = self._fd()
        waited = self._drained
        if waited:
            await trio.lowlevel.wait_readable(fd)
            fd = self._fd()
        while True:
            try:
                data = os.read(fd, want)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)
                fd = self._fd()
                waited = True
                continue
            except OSError as exc:  # ECONNRESET and the like
                raise trio.BrokenResourceError(str(exc)) from exc
            self._drained = len(data) < want
            if not waited:
                await trio.lowlevel.checkpoint()
            return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._send_lock.locked():  # another sender is blocked mid-write: keep the order
            async with self._send_lock:
                await self._send_rest(memoryview(data))
            return
        view = memoryview(data)
        sent = self._write(view)
        if sent == len(view):
            return
        async with self._send_lock:
            await self._send_rest(view[sent:])

    def _write(self, view: memoryview) -> int:
        try:
            return os.write(self._fd(), view)
        except BlockingIOError:
            return 0
        except OSError as exc:  # EPIPE, ECONNRESET
            raise trio.BrokenResourceError(str(exc)) from exc

    async def _send_rest(self, view: memoryview) -> None:
        while view:
            sent = self._write(view)
            view = view[sent:]
            if view:
                await trio.lowlevel.wait_writable(self._fd())

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.wait_writable(self._fd())

    async def send_eof(self) -> None:
        if self._fileno() >= 0:
            await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()  # trio wakes any task waiting on the fd with ClosedResourceError


__all__ = ["RECEIVE_BYTES", "FdStream"]
