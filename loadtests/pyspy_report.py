"""A py-spy profile broken down by layer, by pipeline stage and by function.

    python loadtests/capacity.py profile-report PROFILE.txt [...]

The capacity benchmarks record raw (collapsed) py-spy profiles during their window
(``--py-spy DIR``); this report says where the sampled busy time went: which layer a
sample's own frame is in (hypercorn, wsproto, trio, our code, ...; the standard library
charged to its caller), which stage of the pipeline it served, and which functions.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

LAYERS = [  # first match on the file path of a frame wins (py-spy paths are relative to sys.path)
    ("hypercorn", re.compile(r"(^|/)hypercorn/")),
    ("wsproto", re.compile(r"(^|/)wsproto/")),
    ("h11", re.compile(r"(^|/)h11/")),
    ("quart/werkzeug", re.compile(r"(^|/)(quart|quart_trio|werkzeug)/")),
    ("trio-websocket", re.compile(r"(^|/)trio_websocket/")),
    ("trio: socket I/O (syscalls)", re.compile(r"(^|/)trio/(_socket|_highlevel_socket)\.py")),
    ("trio: epoll", re.compile(r"(^|/)trio/_core/_io_epoll\.py")),
    ("trio: threads", re.compile(r"(^|/)trio/(_core/_thread_cache|_threads)\.py")),
    ("trio: scheduler/checkpoints/sync", re.compile(r"(^|/)(trio|outcome)/|<attrs generated methods (trio|outcome)")),
    ("openai/pydantic (validation)", re.compile(r"(^|/)(openai|pydantic|pydantic_core|typing_extensions)/")),
    ("prometheus", re.compile(r"(^|/)prometheus_client/")),
    ("httpx/httpcore", re.compile(r"(^|/)(httpx|httpcore|anyio|sniffio)/")),
    ("numpy", re.compile(r"(^|/)numpy/")),
    ("soxr/webrtcvad", re.compile(r"(^|/)(soxr|webrtcvad)")),
    ("bridge: call core", re.compile(r"(^|/)bridge/(call|actions|item_playback|realtime|twilio_wire|codec)\.py")),
    ("bridge: driver/app", re.compile(r"(^|/)bridge/")),
    ("simulator: WebSocket + reactor", re.compile(r"(^|/)simulator/net/")),
    ("mock: session/vad/audio", re.compile(r"(^|/)simulator/mock/")),
    ("harness: caller core", re.compile(r"(^|/)simulator/")),
    ("SQLite (bridge store thread)", re.compile(r"(^|/)sqlite3/")),
]
# Pipeline stages, by function name; a sample goes to the first stage (in this order) on its stack.
STAGES = [
    ("bridge core logic (CallCore: parse, decide, build JSON)", re.compile(r"^CallCore\.")),
    ("caller core logic (CallerCore, playback, wire format)", re.compile(r"^(CallerCore\.|Playback\.|frame_peak$)")),
    ("mock: VAD + audio conversion", re.compile(r"^(ServerVad\.|InputConverter\.|Vad)")),
    ("mock: recogniser", re.compile(r"^Recognizer\.")),
    ("mock: SDK validation of events", re.compile(r"^(parse_client_event|validate_server_event)$")),
    ("mock: session logic", re.compile(r"^MockSession\.")),
    ("trio-websocket send (wsproto framing + masking + socket)", re.compile(r"^WebSocketConnection\.(send_message|_send)$")),
    ("trio-websocket reader task (socket + wsproto parse)", re.compile(r"^WebSocketConnection\._reader_task$")),
    ("hypercorn send to Twilio (WSStream.app_send: wsproto + socket)", re.compile(r"^WSStream\.app_send$")),
    ("hypercorn read from Twilio (socket, h11/wsproto parse, ASGI events)", re.compile(r"^TCPServer\._read_data$")),
    ("hypercorn other (timeouts, idle checks, task group)", re.compile(r"^(TCPServer|H11Protocol|WSStream|TaskGroup)\.")),
    ("bridge driver: ASGI receive() + dispatch", re.compile(r"^CallDriver\._twilio_reader$")),
    ("bridge driver: OpenAI loop + dispatch", re.compile(r"^CallDriver\._openai_task$")),
    ("bridge driver/app other", re.compile(r"^(CallDriver|BridgeApp)\.")),
    ("mock server loop (receiver/timer tasks)", re.compile(r"^MockServer\.")),
    ("mock driver (message handler, its sends, timer)", re.compile(r"^run_session\.")),
    ("shared driver loop (message handler, timer firing, their sends: caller and mock)",
     re.compile(r"^(drive\.|apply_nowait$|finish$|apply$|Timer\.|TimerService\.|SessionCore\.)")),
    ("WebSocket reads, frames, writes + reactor (simulator)", re.compile(r"^(WebSocket\.|FdStream\.|Reactor\.)")),
    ("caller driver loop (ticker, receiver, sleeps)", re.compile(r"^(_run|place_call|MonotonicClock\..*)$")),
    ("trio run loop (scheduling, epoll, timers)", re.compile(r"^(unrolled_run|run)$")),
]
IDLE_LEAVES = {"WorkerThread._work"}  # trio's thread cache: a worker blocked on its lock, waiting for a job
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.+?)(?::(?P<line>\d+))?\)$")


def _layer(path: str) -> str | None:
    """The layer of a frame's file; ``None`` for the standard library (charged to its caller)."""
    for name, rx in LAYERS:
        if rx.search(path):
            return name
    return None


def profile_report(path: Path, top: int = 25) -> dict[str, Any]:
    """Break a py-spy raw (collapsed) profile down by layer (self time, stdlib charged to its
    caller) and by function (inclusive), in % of the sampled busy time."""
    by_layer: Counter[str] = Counter()
    by_stage: Counter[str] = Counter()
    stdlib_leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    self_fn: Counter[str] = Counter()
    total = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = []
        for fr in stack.split(";"):
            m = _FRAME.match(fr.strip())
            if m:
                frames.append((m["func"], m["file"]))
        if not frames:
            by_layer["(unknown)"] += n
            continue
        leaf_func, leaf_file = frames[-1]
        if leaf_func in IDLE_LEAVES:  # a thread waiting for work, which py-spy reports as busy
            idle += n
            total -= n
            continue
        layer = None
        for func, file in reversed(frames):
            layer = _layer(file)
            if layer is not None:
                break
        by_layer[layer or "stdlib"] += n
        funcs = [f for f, _ in frames]
        stage = next((label for label, rx in STAGES if any(rx.search(f) for f in funcs)), "other")
        by_stage[stage] += n
        if _layer(leaf_file) is None:
            stdlib_leaf[f"{leaf_func} ({Path(leaf_file).name})"] += n
        self_fn[f"{leaf_func} ({leaf_file})"] += n
        for key in {f"{f} ({p})" for f, p in frames}:
            inclusive[key] += n
    pct = (lambda c: 100.0 * c / total) if total else (lambda c: 0.0)
    return {
        "samples": total,
        "idle_thread_samples_excluded": idle,
        "by_layer_pct": {k: round(pct(v), 1) for k, v in by_layer.most_common()},
        "by_stage_pct": {k: round(pct(v), 1) for k, v in by_stage.most_common()},
        "stdlib_leaves_pct": {k: round(pct(v), 1) for k, v in stdlib_leaf.most_common(12)},
        "self_pct": {k: round(pct(v), 1) for k, v in self_fn.most_common(top)},
        "inclusive_pct": {k: round(pct(v), 1) for k, v in inclusive.most_common(top + 15)},
    }


def print_profile(path: Path, rep: dict[str, Any]) -> None:
    print(f"\n{path}: {rep['samples']} busy samples ({rep['idle_thread_samples_excluded']} of idle worker threads "
          f"left out)")
    for title, key in (("by layer (self time; stdlib charged to its caller)", "by_layer_pct"),
                       ("by pipeline stage", "by_stage_pct"),
                       ("stdlib leaves", "stdlib_leaves_pct"), ("self time by function", "self_pct"),
                       ("inclusive time by function", "inclusive_pct")):
        print(f"  {title}:")
        for k, v in rep[key].items():
            print(f"    {v:5.1f}%  {k}")
