"""The Twilio emulator's REST API served from a thread, for code that runs its own trio.run
(`callsim dial` in-process) or another process."""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import trio
from callsim.simulator.twilio_emu.rest import RestCore
from callsim.simulator.twilio_emu.server import serve_rest

SID = "AC" + "12" * 16
TOKEN = "emulator-token"


def no_proxy_env(env: dict[str, str]) -> dict[str, str]:
    """requests honours *_PROXY variables; the emulator is on loopback and must be reached directly."""
    env = {k: v for k, v in env.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1"
    return env


@contextmanager
def emulator_in_thread() -> Iterator[tuple[RestCore, str]]:
    core = RestCore(SID, TOKEN, clock=time.time, rng=random.Random(5))
    urls: queue.Queue[str] = queue.Queue()
    stop = threading.Event()

    async def serve() -> None:
        async with serve_rest(core) as url:
            urls.put(url)
            await trio.to_thread.run_sync(stop.wait)

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    try:
        yield core, urls.get(timeout=20)
    finally:
        stop.set()
        thread.join(20)
