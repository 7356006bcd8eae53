"""One HTTP/1.1 request read off a trio stream with h11: the small HTTP side of the simulator's
servers (the mock's control API, ``callsim dial``'s status callbacks) that share a port with
their WebSockets."""

from __future__ import annotations

import h11
import trio


async def read_request(conn: h11.Connection, stream: trio.abc.ReceiveStream,
                       max_body: int) -> tuple[h11.Request | None, bytes, bool]:
    """(the request, or None if the peer left before it was whole; its body; whether the body went
    over ``max_body`` — reading stops there). h11's protocol errors propagate."""
    req: h11.Request | None = None
    body = bytearray()
    while True:
        ev = conn.next_event()
        if ev is h11.NEED_DATA:
            data = await stream.receive_some(4096)
            if not data:
                return None, b"", False
            conn.receive_data(data)
        elif req is None:
            if not isinstance(ev, h11.Request):
                return None, b"", False
            req = ev
        elif isinstance(ev, h11.Data):
            body += ev.data
            if len(body) > max_body:
                return req, bytes(body), True
        else:
            return req, bytes(body), False
