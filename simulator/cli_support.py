"""What every ``callsim`` command shares: bounded-number flag types and serving until a signal.

A module of its own so that the commands kept beside their rooms (``dial/command.py``,
``twilio_emu/command.py``) use the same flag checks and the same Ctrl-C behaviour as the ones
in ``cli.py``, without importing the CLI that imports them.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

T = TypeVar("T")


def bounded_number(kind: type, *, minimum: float | None = None, above: float | None = None,
                   maximum: float | None = None, what: str = "") -> Callable[[str], Any]:
    """An argparse type: a number of ``kind`` within the bounds, else a one-line reason."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'a whole number' if kind is int else 'a number'}{what}, got {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}, got {value:g}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"must be more than {above:g}, got {value:g}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:g}, got {value:g}")
        return value
    return parse


PORT = bounded_number(int, minimum=0, maximum=65535, what=" (a port, 0..65535)")
AT_LEAST_1 = bounded_number(int, minimum=1)
MS = bounded_number(int, minimum=0, what=" of ms")


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    """The exceptions in a (nested) group: servers built of nurseries nest theirs."""
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out


def serve_until_signal(prog: str, where: str, serving: Callable[[], AbstractAsyncContextManager[T]],
                       announce: Callable[[T], None], stopped: Callable[[], str]) -> int:
    """Run ``serving()`` until Ctrl-C or SIGTERM; 0 then, 2 if it could not listen on ``where``.

    Ctrl-C and SIGTERM are taken as messages, not as KeyboardInterrupt: trio raises that
    wherever the main thread happens to be, and when that is inside a handler which must not
    die half-way (or a finaliser, where Python swallows it) the process would go on serving.
    Only an OSError before ``announce`` (port in use, an address not of this host) is a
    "cannot listen"; one while serving is a real failure and is not disguised as one.
    """
    import trio

    cannot_listen: list[OSError] = []

    async def run() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            started = False
            try:
                async with serving() as it:
                    started = True
                    announce(it)
                    async for _ in signals:
                        break
            except* OSError as group:
                if started:
                    raise
                cannot_listen.extend(e for e in _leaves(group) if isinstance(e, OSError))

    try:
        trio.run(run)
    except* KeyboardInterrupt:  # a Ctrl-C before the receiver is in place (start-up)
        pass
    if cannot_listen:
        exc = cannot_listen[0]
        print(f"{prog}: cannot listen on {where}: {exc.strerror or exc} (choose another with --port)",
              file=sys.stderr)
        return 2
    print(stopped(), file=sys.stderr)
    return 0
