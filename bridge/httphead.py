"""The HTTP heads the bridge reads: how big one may be, and where it ends.

One limit for every head, whichever path it takes: the front door reads each
connection's request head before it routes it (plain HTTP to hypercorn, the
media-stream upgrade to :mod:`.wsconn`), so both paths refuse at the same size
(431), and the OpenAI leg stops looking for the end of the 101's head there.
16 KiB is hypercorn's own bound on an incomplete head (h11's
``max_incomplete_event_size``); Twilio's heads are under 2 KB.

Sans-IO: bytes in, positions out.
"""

from __future__ import annotations

MAX_HEAD_BYTES = 16 * 1024  # the head through its blank line; one byte more is refused


def head_end(raw: bytes | bytearray) -> int:
    """Where the head in ``raw`` ends (just past its blank line), -1 if it has not ended yet."""
    end = raw.find(b"\r\n\r\n")
    return end if end < 0 else end + 4


def split_head(raw: bytes | bytearray) -> tuple[bytes, bytes]:
    """(HTTP head through its blank line, what followed); (b"", b"") while the head is incomplete.

    The WebSocket protocol must see the handshake head only: frames after it
    belong to the fast lane, which requires the protocol to sit at a frame
    boundary. A head grown past :data:`MAX_HEAD_BYTES` without ending is
    returned whole, for the caller to refuse.
    """
    end = head_end(raw)
    if end < 0:
        return (bytes(raw), b"") if len(raw) > MAX_HEAD_BYTES else (b"", b"")
    return bytes(raw[:end]), bytes(raw[end:])
