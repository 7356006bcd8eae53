"""A connected TCP socket read and written with ``os.read``/``os.write`` on its fd.

:mod:`.wsconn` wraps every plain TCP connection in one (the why is
:class:`FdStream`'s); a TLS connection keeps trio's stream.

The bridge has its own (``callsim.bridge.fdstream``, design.md rule 1).
"""

from __future__ import annotations

import errno
import os
from collections import deque

import trio

__all__ = ["RECEIVE_BYTES", "FdStream"]

RECEIVE_BYTES = 65536


class FdStream(trio.abc.HalfCloseableStream):
    """A connected TCP socket read and written with ``os.read``/``os.write`` on its fd.

    Why: in the harness profile trio's ``SocketStream`` layers (the conflict
    detector's context managers, ``_nonblocking_helper``, a reschedule after every
    send) cost more CPU than the WebSocket protocol itself. Here:

    * a send the kernel takes whole returns without yielding, and
      :meth:`send_nowait` does it from synchronous code; what the kernel does not
      take goes into an ordered backlog that :meth:`flush` writes out (one task
      at a time; any task may do it), so bytes never reorder whoever sends;
    * a read that came back short emptied the kernel's buffer, so the next
      :meth:`receive_some` waits for readability instead of first trying a read
      that would only fail with ``EAGAIN``. A read that returns at once still
      checkpoints, so a receive loop always yields.

    The fd number is read from the trio socket on every use, never cached: once
    anyone closes that socket (this stream's :meth:`aclose`, or the trio
    ``SocketStream`` closed directly, as the mock does to drop a session), its
    ``fileno()`` is -1 and every operation raises ``ClosedResourceError`` rather
    than touching a number the kernel may already have given to another socket.
    trio's ``close()`` calls ``notify_closing`` first, so a task waiting on the fd
    is woken with ``ClosedResourceError`` too. Holding the ``SocketStream`` also
    keeps the socket from being garbage-collected (and its fd closed behind
    epoll's back) while this stream is in use.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self.socket = stream.socket
        self._fileno = stream.socket.fileno  # bound once: called on every operation
        self._backlog: deque[memoryview] = deque()
        self._flush_lock = trio.Lock()
        # the last read came back short: nothing left to read. True at first: the
        # handshake's reads emptied the socket, as far as anyone knows
        self._drained = True

    def _fd(self) -> int:
        fd = self._fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the socket was closed")
        return fd

    # -------------------------------------------------------------- receive

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        size = max_bytes or RECEIVE_BYTES
        fd = self._fd()
        waited = self._drained
        if waited:
            await trio.lowlevel.wait_readable(fd)
            fd = self._fd()
        while True:
            try:
                data = os.read(fd, size)
                break
            except BlockingIOError:  # woken without data (another reader, a spurious wake-up)
                await trio.lowlevel.wait_readable(fd)
                fd = self._fd()
                waited = True
            except OSError as exc:  # ECONNRESET, ETIMEDOUT, ...
                raise trio.BrokenResourceError(_os_reason(exc)) from exc
        self._drained = 0 < len(data) < size
        if not waited:
            await trio.lowlevel.checkpoint()
        return data

    def read_nowait(self, size: int = RECEIVE_BYTES) -> bytes | None:
        """One read without waiting (for a :class:`~callsim.simulator.net.reactor.Reactor` that saw
        the socket readable): the bytes, ``b""`` at the end of the stream, None when
        there is nothing to read after all."""
        try:
            data = os.read(self._fd(), size)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise trio.BrokenResourceError(_os_reason(exc)) from exc
        self._drained = 0 < len(data) < size
        return data

    # ----------------------------------------------------------------- send

    @property
    def backlog_bytes(self) -> int:
        """Bytes accepted by :meth:`send_nowait` that the kernel has not taken yet."""
        return sum(len(v) for v in self._backlog)

    def send_nowait(self, data: bytes | bytearray | memoryview) -> bool:
        """Write ``data`` now if the kernel takes it whole (True). Otherwise keep
        what is left, after anything already waiting, and return False: someone
        must then ``await flush()``. Never yields."""
        fd = self._fd()
        if self._backlog:  # earlier bytes are still waiting: these go after them
            self._backlog.append(memoryview(data))
            return False
        sent = _write(fd, data)
        if sent == len(data):
            return True
        self._backlog.append(memoryview(data)[sent:])
        return False

    async def flush(self) -> None:
        """Write the whole backlog, waiting for the socket to drain as needed."""
        if not self._backlog:
            return
        async with self._flush_lock:  # only one task may wait for writability on the fd
            backlog = self._backlog
            while backlog:
                fd = self._fd()
                view = backlog[0]
                sent = _write(fd, view)
                if sent == len(view):
                    backlog.popleft()
                else:
                    backlog[0] = view[sent:]
                    await trio.lowlevel.wait_writable(fd)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """As trio's, except that a send the kernel takes whole does not yield."""
        if not self.send_nowait(data):
            await self.flush()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.wait_writable(self._fd())

    async def send_eof(self) -> None:
        await self.flush()
        await self._stream.send_eof()

    async def aclose(self) -> None:
        self._backlog.clear()
        await self._stream.aclose()  # trio wakes any task waiting on the fd with ClosedResourceError


def _write(fd: int, data: bytes | bytearray | memoryview) -> int:
    """``os.write`` that answers 0 for a full socket buffer and trio's error for a broken socket."""
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0
    except OSError as exc:  # EPIPE, ECONNRESET
        raise trio.BrokenResourceError(_os_reason(exc)) from exc


def _os_reason(exc: OSError) -> str:
    return f"{errno.errorcode.get(exc.errno or 0, exc.errno)}: {exc.strerror}"
