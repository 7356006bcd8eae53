"""Run a foreign-style bridge as its own process, from a trio test.

The bridges are separate processes on purpose: they use asyncio, not trio, and sharing nothing
with the harness (not even an event loop) is the point of a foreign control.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections import deque
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import trio

HERE = Path(__file__).resolve().parent
READY_TIMEOUT_S = 10.0
KILL_AFTER_S = 2.0
LISTENING = b"listening "

#: name -> (file in this folder, command-line flags): one defect or design difference each.
BRIDGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "careful": ("careful.py", ()),
    "ts_truncate": ("careful.py", ("--truncate", "timestamps")),
    "coarse_marks": ("careful.py", ("--truncate", "coarse")),
    "leaky": ("careful.py", ("--leak",)),
    "openai_first": ("careful.py", ("--open-openai-first",)),
    "drops_early": ("careful.py", ("--drop-until-open",)),
    "beta": ("careful.py", ("--beta",)),
    "no_tools": ("careful.py", ("--no-tools",)),
    "no_greeting": ("careful.py", ("--no-greeting",)),
    "sample_python": ("sample_python.py", ()),
}
#: bridges that end calls over Twilio's REST API (they need a Twilio API: the emulator), outside
#: the verdict matrix: name -> (file, flags)
REST_BRIDGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "rest_hangup": ("careful.py", ("--rest-hangup-after", "2")),
    "rest_transfer": ("careful.py", ("--rest-transfer-after", "2", "--transfer-to", "+15550009999")),
}

#: careful.py telling the model of keypresses in other bridges' words, and a greeting that names a
#: key before any is pressed: dtmf_menu's verdict must not depend on either (tests/test_foreign_keypresses.py)
KEY_BRIDGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "keys_dialed": ("careful.py", ("--dtmf-text", "User dialed digit {digit}")),
    "keys_bracketed": ("careful.py", ("--dtmf-text", "[DTMF {digit}]")),
    "keys_prompted": ("careful.py", ("--greeting", "Greet the caller: keypad digit 1 is the weather.")),
}
#: careful.py with a hang-up tool named as its author liked: the goodbye scenario judges it through the
#: mock's stand-in for end_call (mock/tool_roles.py; tests/test_foreign_tool_roles.py)
TOOL_BRIDGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "hang_up_tool": ("careful.py", ("--hangup-tool", "hang_up")),
}


@asynccontextmanager
async def running_foreign_bridge(name: str, openai_url: str,
                                 env: dict[str, str] | None = None) -> AsyncIterator[str]:
    """Start bridge ``name`` against ``openai_url``; yield its ``ws://…/media-stream`` URL.

    Waits up to 10 s for the bridge's one ``listening`` line (the port is only known then); on
    exit terminates the process and kills it if it has not gone within 2 s. The bridge's stderr
    is copied to ours (pytest shows it with a failure) and its tail goes into a start-up error.
    """
    file, flags = {**BRIDGES, **REST_BRIDGES, **KEY_BRIDGES, **TOOL_BRIDGES}[name]
    cmd = [sys.executable, str(HERE / file), *flags, "--port", "0", "--openai-url", openai_url]
    proc = await trio.lowlevel.open_process(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            env=None if env is None else {**os.environ, **env})
    tail: deque[bytes] = deque(maxlen=200)
    eof = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_copy_stderr, proc, tail, name, eof)
            try:
                yield await _read_url(proc, tail, name, eof)
            finally:
                with trio.CancelScope(shield=True):
                    await _stop(proc)
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await _stop(proc)


async def _copy_stderr(proc: trio.Process, tail: deque[bytes], name: str, eof: trio.Event) -> None:
    """Drain the bridge's stderr (a full pipe would block its logging, hence its calls)."""
    assert proc.stderr is not None
    pending = b""
    while chunk := await proc.stderr.receive_some(65536):
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            tail.append(line)
            sys.stderr.write(f"[{name}] {line.decode(errors='replace')}\n")
    tail.append(pending)
    eof.set()


async def _read_url(proc: trio.Process, tail: deque[bytes], name: str, eof: trio.Event) -> str:
    assert proc.stdout is not None
    buf = b""
    with trio.move_on_after(READY_TIMEOUT_S):
        while b"\n" not in buf:
            chunk = await proc.stdout.receive_some(4096)
            if not chunk:
                break
            buf += chunk
    line = buf.split(b"\n", 1)[0].strip()
    if not line.startswith(LISTENING):
        await _stop(proc)
        with trio.move_on_after(KILL_AFTER_S):
            await eof.wait()  # all the dying process wrote
        stderr = b"\n".join(tail).decode(errors="replace")
        raise RuntimeError(f"foreign bridge {name!r} did not say it was listening within "
                           f"{READY_TIMEOUT_S:.0f} s (stdout {buf!r}); its stderr:\n{stderr}")
    return line[len(LISTENING):].decode()


async def _stop(proc: trio.Process) -> None:
    """SIGTERM, then SIGKILL after 2 s."""
    if proc.returncode is None:
        proc.terminate()
        with trio.move_on_after(KILL_AFTER_S):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
