"""One harness process of the capacity benchmark: N calls at once, then their raw figures.

``capacity.py _worker CFG`` runs :func:`worker_main`: it loads the fixtures, says ``ready``,
waits for ``go T`` on stdin (T on the monotonic clock all processes share), starts its
calls staggered from T, each a trio ``place_call`` looping "say a fixture, wait for the
reply", and writes every call's per-frame arrays (send times, grid slots, CRC-32s,
media arrivals) and figures to the JSON file the config names.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def pack_ints(a: Any) -> str:
    """int64 values as base64 text (the worker's per-frame arrays in its JSON)."""
    return base64.b64encode(np.asarray(a, dtype=np.int64).tobytes()).decode("ascii")


def unpack_ints(s: str) -> np.ndarray:
    """The inverse of :func:`pack_ints`."""
    return np.frombuffer(base64.b64decode(s), dtype=np.int64)


def worker_main(cfg_path: str) -> int:
    import gc
    import random

    import trio
    from callsim.simulator.audio.utterances import default_bank
    from callsim.simulator.caller.script import Pause, Say, WaitForReply
    from callsim.simulator.caller.trio_driver import place_call
    from callsim.simulator.measure.metrics import measure_call
    from callsim.simulator.measure.timeline import MediaIn, Stop
    from callsim.simulator.net.drive import open_call_services

    cfg = json.loads(Path(cfg_path).read_text())
    bank = default_bank()
    for f in cfg["fixtures"]:
        bank.get(f)  # convert once, before the clock starts
    duration_ms = int(cfg["duration_ms"])

    def script(i: int) -> list[Any]:
        steps: list[Any] = [Pause(200 + (i * 53) % 600)]  # desynchronise the calls' turns
        n = duration_ms // 2000 + 5  # more turns than fit: the call ends by max_duration
        for j in range(n):
            steps += [Say(cfg["fixtures"][(i + j) % len(cfg["fixtures"])]),
                      WaitForReply(quiet_ms=cfg["quiet_ms"], timeout_ms=10_000), Pause(300)]
        return steps

    # What is alive now (imports, fixtures) never becomes garbage: keep it out of the collector's
    # reach, or each full collection stalls every call of this process for tens of ms.
    gc.collect()
    gc.freeze()
    print("ready", flush=True)
    line = sys.stdin.readline().split()
    if len(line) != 2 or line[0] != "go":
        return 2
    t_go = int(line[1])
    results: dict[int, Any] = {}

    async def one(i: int, start_ns: int, services: Any) -> None:
        await trio.sleep(max(0.0, (start_ns - time.monotonic_ns()) / 1e9))
        results[i] = await place_call(cfg["target"], script(i), bank=bank, max_duration_ms=duration_ms,
                                      rng=random.Random(cfg["seed"] * 100_003 + i),
                                      connect_timeout=cfg["connect_timeout_s"], services=services)

    async def main() -> None:
        # one timer task and one reactor for all the calls of this process
        async with open_call_services() as services, trio.open_nursery() as nursery:
            for i, offset in cfg["calls"]:
                nursery.start_soon(one, i, t_go + offset, services)

    trio.run(main)
    t_done = time.monotonic_ns()

    calls = []
    for i, res in sorted(results.items()):
        core = res.core
        rec: dict[str, Any] = {"i": i, "error": res.error, "t_done_ns": t_done}
        if core is not None and core.t0_ns is not None:
            m = measure_call(res, scenario="capacity", call_index=i, bank=bank)
            tl = core.timeline
            rec.update(
                end_reason=core.end_reason, t0_ns=core.t0_ns,
                stop_ns=(tl.times(Stop) or [None])[-1],
                sent_ns=pack_ints(core.media_sent_ns), grid=pack_ints(core.media_sent_grid),
                sent_crc=pack_ints(core.media_sent_crc),
                media_in_ns=pack_ints(tl.times(MediaIn)),
                underrun_ms=m.underrun_ms, heard_ms=m.heard_ms, turns=len(m.turns),
                warnings=sum(core.warning_counts.values()),
                duration_ms=len(core.tick_ns) * 20,
                msgs_sent=len(core.media_sent_ns) + sum(core.marks_echoed.values()) + 3,  # + connected, start, stop
                msgs_received=core.counts["media_in"] + core.counts["mark_in"] + core.counts["clear_in"],
            )
        calls.append(rec)
    Path(cfg["out"]).write_text(json.dumps({"calls": calls}))
    print("done", flush=True)
    return 0
