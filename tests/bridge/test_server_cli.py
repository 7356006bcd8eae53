"""``python -m callsim.bridge`` (what ``callsim bridge`` execs) as an operator runs it: a real
process on a real port, stopped by Ctrl-C or by a container's SIGTERM."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import httpx
import pytest
import trio

BRIDGE = [sys.executable, "-X", "faulthandler", "-m", "callsim.bridge"]
RUNNING = re.compile(rb"Running on http://127\.0\.0\.1:(\d+)")


def _default_sigint() -> None:
    """Ctrl-C must reach the child even if this runs in a shell that ignores SIGINT
    for background jobs (the disposition is inherited)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
async def test_the_bridge_serves_then_stops_gracefully_on(signum, tmp_path):
    env_file = tmp_path / "none.env"  # hermetic: never the developer's .env
    proc = await trio.lowlevel.open_process(
        BRIDGE + ["--port", "0", "--env-file", str(env_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_default_sigint,
        env={"PATH": "/usr/bin:/bin", "DATABASE_PATH": str(tmp_path / "calls.db"),
             "OPENAI_API_KEY": "sk-test"},  # without one, the bridge refuses to start for OpenAI's URL
        cwd=str(tmp_path),
    )
    err = b""
    try:
        with trio.fail_after(30):  # imports take ~2 s; 30 s only for a very loaded machine
            while not (m := RUNNING.search(err)):
                chunk = await proc.stderr.receive_some(4096)
                assert chunk, f"the bridge exited before serving:\n{err.decode()}"
                err += chunk
        port = int(m.group(1))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            assert (await http.get("/health")).status_code == 200

        proc.send_signal(signum)
        with trio.move_on_after(20) as hung:
            while chunk := await proc.stderr.receive_some(65536):
                err += chunk
            await proc.wait()
        if hung.cancelled_caught:
            proc.send_signal(signal.SIGABRT)  # faulthandler prints where it is stuck
            await proc.wait()
            err += await proc.stderr.receive_some(65536)
        text = err.decode()
        assert not hung.cancelled_caught, f"the bridge did not stop; its stacks:\n{text}"
        assert proc.returncode == 0, text
        assert f"{signal.Signals(signum).name}: stopping" in text and "bridge stopped" in text
        assert "Traceback" not in text
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_an_open_console_feed_does_not_hold_the_stop(tmp_path):
    """Live calls get hypercorn's grace period on Ctrl-C; a console's live feed (an endless
    response) is ended at once, so an open browser tab never delays the stop."""
    proc = await trio.lowlevel.open_process(
        BRIDGE + ["--port", "0", "--env-file", str(tmp_path / "none.env")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_default_sigint,
        env={"PATH": "/usr/bin:/bin", "DATABASE_PATH": str(tmp_path / "calls.db"), "OPENAI_API_KEY": "sk-test",
             "CONSOLE_TOKEN": "feed-test-token"},
        cwd=str(tmp_path),
    )
    err = b""
    try:
        with trio.fail_after(30):
            while not (m := RUNNING.search(err)):
                chunk = await proc.stderr.receive_some(4096)
                assert chunk, f"the bridge exited before serving:\n{err.decode()}"
                err += chunk
        port = int(m.group(1))
        # a plain HTTP/1.1 client reading the feed, as `curl -N` does
        feed = await trio.open_tcp_stream("127.0.0.1", port)
        await feed.send_all(b"GET /api/feed HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n"
                            b"Authorization: Bearer feed-test-token\r\n\r\n")
        head = b""
        with trio.fail_after(10):
            while b"retry:" not in head:  # the stream's first bytes: it is open
                head += await feed.receive_some(4096)
        assert head.startswith(b"HTTP/1.1 200"), head
        await trio.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        t0 = trio.current_time()
        with trio.fail_after(20):
            while chunk := await proc.stderr.receive_some(65536):
                err += chunk
            await proc.wait()
        took = trio.current_time() - t0
        await feed.aclose()
        text = err.decode()
        assert proc.returncode == 0 and "bridge stopped" in text, text
        assert took < 2.0, f"{took:.1f} s: the open feed held the stop for the grace period"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
