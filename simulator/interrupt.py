"""Ctrl-C in a run: the first stops it and keeps what finished; the second exits at once.

A user who presses Ctrl-C during ``callsim demo`` or ``callsim call`` wants the run to stop now,
the calls that had finished written up, and the shell back — not an exception group. So during
the trio run SIGINT is taken as a *message* (:func:`trio.open_signal_receiver`) rather than as
trio's ``KeyboardInterrupt``: that one is raised wherever the main thread happens to be (inside a
bridge handler mid-write, inside a shielded hang-up) and surfaces as a group of ``Cancelled`` and
``KeyboardInterrupt`` with the finished work lost in the unwinding. As a message it cancels one
scope — the one around the running calls — so each call hangs up as Twilio would (the caller's
shielded ``stop``), the servers close, and the scenarios that had finished are still in hand for
the reports.

Outside the receiver (before the run, while the reports are written) and from the second SIGINT
on, the handler exits the process at once with status 130 (128 + SIGINT, what a shell reports):
cleaning up or writing can take seconds, and a user who presses Ctrl-C twice means *now*.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TypeVar

import trio

#: exit status of a run stopped by Ctrl-C: 128 + SIGINT, as a shell reports a process killed by it
EXIT_INTERRUPTED = 128 + signal.SIGINT

__all__ = ["EXIT_INTERRUPTED", "CtrlC", "exit_at_once"]

T = TypeVar("T")


def exit_at_once(message: str = "interrupted again: exiting at once") -> None:
    """Leave now: one line on stderr, the terminal's cursor shown again, status 130.

    ``os._exit`` because unwinding (finalisers, threads, atexit) is what the user is cutting short.
    """
    out = b""
    if sys.stdout.isatty():
        out += b"\x1b[?25h\n"  # a live progress bar hides the cursor; give it back
    out += f"callsim: {message}\n".encode()
    try:
        os.write(2, out)
    finally:
        os._exit(EXIT_INTERRUPTED)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class CtrlC:
    """One run's Ctrl-C: :attr:`cancel_scope` is what the first one cancels.

    Use it as ``with ctrl_c.exits_at_once():`` around the whole command and run the work to stop
    through :meth:`run` inside the trio run (or start :meth:`watch` in a nursery yourself and put
    that work inside ``with ctrl_c.cancel_scope:``).
    ``on_first`` tells the user what is happening (called once, from the trio run).
    """

    def __init__(self, on_first: Callable[[], None] | None = None) -> None:
        self.interrupted = False
        self.cancel_scope = trio.CancelScope()
        self._on_first = on_first

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        exit_at_once("interrupted: exiting at once" if not self.interrupted
                     else "interrupted again: exiting at once")

    @contextmanager
    def exits_at_once(self) -> Iterator[None]:
        """While the block runs, a SIGINT not taken by :meth:`watch` exits at once.

        Installing a handler also keeps trio from installing its ``KeyboardInterrupt`` one.
        Off the main thread (where signals cannot be handled) this does nothing.
        """
        if not _in_main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, self._handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Until cancelled: the first SIGINT cancels :attr:`cancel_scope`, the second exits at once."""
        if not _in_main_thread():
            task_status.started()
            await trio.sleep_forever()
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            task_status.started()
            async for _ in signals:
                if self.interrupted:
                    exit_at_once()
                self.interrupted = True
                if self._on_first is not None:
                    self._on_first()
                self.cancel_scope.cancel()

    async def run(self, fn: Callable[[], Awaitable[T]]) -> T | None:
        """``await fn()`` while watching; None if the first Ctrl-C cancelled it."""
        result: T | None = None
        async with trio.open_nursery() as guard:
            await guard.start(self.watch)
            with self.cancel_scope:
                result = await fn()
            guard.cancel_scope.cancel()
        return result
