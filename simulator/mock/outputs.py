"""A :class:`~.session.MockSession`'s answer as :data:`~..core_io.Outputs`, the contract it shares with the caller.

Inside, the session builds event dicts and notes what its driver must do with
``close_request`` (a close frame) and ``abort_request`` (drop the TCP
connection). Its public methods hand out neither: they pass what they built
through :func:`session_outputs`, which serialises each event (orjson gives UTF-8
``bytes``, which the socket writes as a text message without a decode/encode)
and turns a pending request into the batch's last item, :class:`~..core_io.Close`
or :class:`~..core_io.Abort`, once: the session records the end right then
(:meth:`~.session.MockSession.on_closed`), so it answers nothing after it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from ..core_io import NOTHING, Abort, Close, Outputs

if TYPE_CHECKING:
    from .session import MockSession

__all__ = ["session_outputs"]

_ABORT = Abort()
_dumps = orjson.dumps


def session_outputs(session: MockSession, now_ns: int, events: list[dict[str, Any]]) -> Outputs:
    """``events`` serialised, followed by the close or abort the session asked for (once)."""
    end: Close | Abort | None = None
    if (session.abort_request or session.close_request) and not session.closed:
        if session.abort_request:
            session.on_closed(now_ns, "abort")
            end = _ABORT
        else:
            code, reason = session.close_request  # type: ignore[misc]
            session.on_closed(now_ns, "server", code, reason)
            end = Close(code, reason)
    if not events:
        return NOTHING if end is None else (end,)
    out: list[bytes | Close | Abort] = [_dumps(ev) for ev in events]
    if end is not None:
        out.append(end)
    return out
