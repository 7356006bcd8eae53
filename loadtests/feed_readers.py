"""N console feed subscribers for the capacity benchmark (``capacity.py --feeds N``).

Each opens the bridge's all-calls live feed (``GET /api/feed``, Server-Sent Events) with the
console token from ``$CONSOLE_TOKEN`` (never on the command line) and reads it until SIGINT, as
N open consoles would; then writes what they read to ``--out`` as JSON: events, ``dropped``
notices and the events they say were lost, and errors. Its own process, pinned with the harness,
so the bridge's CPU figures are the bridge's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import httpx
import trio


async def _reader(client: httpx.AsyncClient, url: str, token: str, tally: dict) -> None:
    try:
        async with client.stream("GET", url, headers={"Authorization": f"Bearer {token}"}) as r:
            if r.status_code != 200:
                tally["errors"].append(f"HTTP {r.status_code}")
                return
            tally["open"] += 1
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    ev = json.loads(line[6:])
                    tally["events"] += 1
                    if ev.get("kind") == "dropped":
                        tally["dropped_notices"] += 1
                        tally["dropped_events"] += int(ev.get("n", 0))
    except httpx.HTTPError as exc:
        tally["errors"].append(f"{type(exc).__name__}: {exc}")


async def run(url: str, n: int, out: Path) -> None:
    token = os.environ.get("CONSOLE_TOKEN", "")
    tally = {"subscribers": n, "open": 0, "events": 0, "dropped_notices": 0, "dropped_events": 0, "errors": []}
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as client, \
                    trio.open_nursery() as nursery:
                for _ in range(n):
                    nursery.start_soon(_reader, client, url, token, tally)
                async for _sig in signals:
                    nursery.cancel_scope.cancel()
                    break
    finally:
        out.write_text(json.dumps(tally))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="loadtests/feed_readers.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="the bridge's /api/feed URL")
    p.add_argument("-n", type=int, default=5, help="subscribers (default 5)")
    p.add_argument("--out", type=Path, required=True, help="JSON tally written on SIGINT/SIGTERM")
    a = p.parse_args(argv)
    trio.run(run, a.url, a.n, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
