"""What the simulator's sans-IO cores hand their drivers: messages to send, and how the connection ends.

Both cores (the caller's :class:`~.caller.core.CallerCore` and the mock's
:class:`~.mock.session.MockSession`) answer every call of ``begin``/``open``,
``receive``, ``advance`` and ``hang_up`` with :data:`Outputs`: a sequence whose
items the driver carries out in order:

* a ``str`` or ``bytes``: one text message, already serialised (``bytes`` are
  UTF-8 already), so the driver only writes it;
* :class:`Close`: send a close frame with ``code``/``reason`` and close;
* :class:`Abort`: drop the connection without a close frame.

A :class:`Close` or :class:`Abort` comes at most once per connection and is
always the last item: nothing goes out after the end. A driver therefore only
looks at the last item to know whether the batch ends the connection, and hands
every other batch to the socket as it is.

Why messages are bare ``str``/``bytes`` rather than a ``Send`` wrapper: a caller
sends a frame every 20 ms and a mock session receives 50 appends a second, so a
wrapper object per message (and a list rebuilt to unwrap them) would be paid on
the hot path for nothing. For the same reason an empty answer is the shared
:data:`NOTHING`, not a new list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

__all__ = ["NOTHING", "Abort", "Close", "End", "Output", "Outputs"]


class End:
    """How a core ends its connection (:class:`Close` or :class:`Abort`): the last output of a batch."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Close(End):
    """Send a close frame with ``code`` and ``reason``, then close the connection."""

    code: int = 1000
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Abort(End):
    """Drop the connection at once, without a close frame (a broken line, an injected fault)."""


Output: TypeAlias = "str | bytes | Close | Abort"
Outputs: TypeAlias = Sequence[Output]

NOTHING: Final[tuple[()]] = ()
"""The empty answer, shared: a core answers most messages with nothing."""
