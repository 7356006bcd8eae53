#!/usr/bin/env python
"""Good calls, placed again and again while something else abuses the bridge.

    python loadtests/goodcall.py http://127.0.0.1:8080/incoming-call --seconds 60 --every 5
    python loadtests/goodcall.py URL --concurrency 4 --seconds 600       # K calls looping (soak)

"The process keeps serving other calls" is only true if a real call, placed the way
Twilio places it (webhook → TwiML → signed media stream → a turn), gets its reply while
the fuzzer or the faults run. This script is that call, in a process of its own so that
neither the fuzzer's CPU nor its GIL can be blamed for a failed one: it prints one JSON
line per call (``{"ok": true, ...}``) and the parent (:class:`GoodCaller`) reads them.

A call *passes* when it was placed and streamed without error, the caller (not the
bridge) ended it, no wait for a reply timed out, and it heard at least
``MIN_HEARD_FRACTION`` of the mock's reply.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

REPLY = "assistant_short_reply"  # the mock's default reply
MIN_HEARD_FRACTION = 0.8


def good_script() -> list[Any]:
    from callsim.simulator.caller.script import Hangup, Pause, Say, WaitForReply

    return [Pause(300), Say("caller_greeting"), WaitForReply(quiet_ms=600, timeout_ms=10_000), Hangup()]


def judge(result: Any) -> tuple[bool, str, float]:
    """(passed, why not, ms of assistant audio heard) for one :class:`CallResult`."""
    from callsim.simulator.audio.utterances import default_bank
    from callsim.simulator.measure.timeline import WaitTimeout

    core = result.core
    if result.error or core is None or core.t0_ns is None:
        return False, f"error: {result.error or 'never started'}", 0.0
    s = core.summary()
    heard = float(s["audio_played_ms"])
    if core.end_reason != "hangup":
        return False, f"ended by {core.end_reason}", heard
    if core.timeline.first(WaitTimeout) is not None:
        return False, "no reply before the wait timed out", heard
    want = MIN_HEARD_FRACTION * default_bank().get(REPLY).duration_ms
    if heard < want:
        return False, f"heard {heard:.0f} ms of the reply, want >= {want:.0f}", heard
    return True, "", heard


async def _loop(target: str, seconds: float, every: float, concurrency: int, auth_token: str | None) -> None:
    import trio
    from callsim.simulator.audio.utterances import default_bank
    from callsim.simulator.caller.trio_driver import place_call
    from callsim.simulator.net.drive import open_call_services

    bank = default_bank()
    bank.get("caller_greeting")
    end = time.monotonic() + seconds
    n = 0

    async def caller(k: int) -> None:
        nonlocal n
        while time.monotonic() < end:
            t0 = time.monotonic()
            n += 1
            result = await place_call(target, good_script(), auth_token=auth_token, bank=bank,
                                      max_duration_ms=30_000, rng=random.Random(n), connect_timeout=10,
                                      services=services)
            ok, why, heard = judge(result)
            print(json.dumps({"t": round(time.time(), 3), "caller": k, "ok": ok, "why": why,
                              "heard_ms": round(heard), "s": round(time.monotonic() - t0, 2)}), flush=True)
            await trio.sleep(max(0.0, every - (time.monotonic() - t0)))

    async with open_call_services() as services, trio.open_nursery() as nursery:
        for k in range(concurrency):
            nursery.start_soon(caller, k)
            await trio.sleep(every / concurrency if concurrency > 1 else 0)


class GoodCaller:
    """This script as a child process; collects its verdicts as they come."""

    def __init__(self, target: str, *, seconds: float, every: float = 5.0, concurrency: int = 1,
                 auth_token: str | None = None, log: Path | None = None) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), target, "--seconds", str(seconds),
               "--every", str(every), "--concurrency", str(concurrency)]
        if auth_token:
            cmd += ["--auth-token", auth_token]
        self._err = open(log, "wb") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._err, cwd=ROOT, text=True)
        self.results: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.results.append(json.loads(line))
            except ValueError:
                pass

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r["ok"])

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results if not r["ok"]]

    def wait(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._reader.join(5)
        if self._err is not subprocess.DEVNULL:
            self._err.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("target", help="the bridge's webhook (http://…/incoming-call) or stream URL")
    p.add_argument("--seconds", type=float, default=60.0, help="place calls for this long (a call in flight ends)")
    p.add_argument("--every", type=float, default=5.0, help="seconds between call starts, per caller")
    p.add_argument("--concurrency", type=int, default=1, help="callers looping at once")
    p.add_argument("--auth-token", help="sign the webhook and the stream like Twilio")
    a = p.parse_args(argv)
    import trio

    trio.run(_loop, a.target, a.seconds, a.every, a.concurrency, a.auth_token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
