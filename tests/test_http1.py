"""``net.http1.read_request``: one HTTP/1.1 request off a stream, whatever the chunking."""

from __future__ import annotations

import h11
import pytest
from callsim.simulator.net.http1 import read_request


class Chunks:
    """A receive stream that hands out the given chunks, then EOF."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = iter(chunks)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return next(self.chunks, b"")


def _post(body: bytes, step: int) -> list[bytes]:
    head = f"POST /calls HTTP/1.1\r\nHost: a\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    return [head[:7], head[7:]] + [body[i:i + step] for i in range(0, len(body), step)]


async def _read(chunks: list[bytes], max_body: int):
    return await read_request(h11.Connection(h11.SERVER), Chunks(chunks), max_body)


@pytest.mark.parametrize("step", [1, 3, 4096])
async def test_the_body_is_read_whole_whatever_the_chunking(step):
    body = bytes(range(256)) * 8
    req, got, too_big = await _read(_post(body, step), 1 << 16)
    assert req is not None and req.method == b"POST" and req.target == b"/calls"
    assert got == body and type(got) is bytes and not too_big


async def test_a_body_over_the_limit_stops_the_read_and_says_so():
    req, got, too_big = await _read(_post(b"x" * 10_000, 1000), 4500)
    assert req is not None and too_big and len(got) == 5000


async def test_a_peer_leaving_mid_request_or_mid_body_is_none():
    assert await _read([b"POST /calls HTTP/1.1\r\nHo"], 100) == (None, b"", False)
    assert await _read(_post(b"x" * 100, 10)[:5], 1000) == (None, b"", False)


async def test_a_get_has_an_empty_body():
    req, got, too_big = await _read([b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n"], 10)
    assert req is not None and req.method == b"GET" and got == b"" and not too_big

