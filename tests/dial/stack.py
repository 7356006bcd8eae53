"""The whole offline path of ``callsim dial``, served from a thread: the mock OpenAI server, our
bridge (by the harness's own hook, as ``callsim demo`` runs it) and the Twilio emulator with its
call legs, all on 127.0.0.1.

The bridge has ``TWILIO_AUTH_TOKEN`` = the emulator's token and ``PUBLIC_URL`` = a public origin
the emulator reaches through a tunnel, so it validates every signature as in production; the
dial's public URL (``wss://dial.example/stream``) is tunnelled to callsim's stream server port.
``callsim dial`` itself runs in the caller's thread (``cli.main``) or as a subprocess: it owns a
``trio.run`` of its own.
"""

from __future__ import annotations

import dataclasses
import queue
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from callsim.simulator.bridge_hook import load_hook
from callsim.simulator.mock.server import MockConfig, MockServer, running_mock
from callsim.simulator.runner import DEFAULT_BRIDGE_HOOK
from callsim.simulator.scenario import Scenario
from callsim.simulator.twilio_emu.numbers import PhoneNumber
from callsim.simulator.twilio_emu.rest import RestCore
from callsim.simulator.twilio_emu.server import serve_emulator
from callsim.simulator.twilio_emu.tunnels import Tunnels, parse_tunnel

SID = "AC" + "e2" * 16
TOKEN = "e2e-emulator-token"
AGENT = "+15550001111"
TESTER = "+15550002222"
BRIDGE_PUBLIC = "https://bridge.example"
DIAL_PUBLIC = "wss://dial.example"
DIAL_URL = f"{DIAL_PUBLIC}/stream"
DESK = "+15550009999"  # the transfer scenario's TRANSFER_NUMBER: a "TwiML Bin" answering Say + Hangup
DESK_SAY = "You have reached the front desk."
DESK_TWIML = f"<Response><Say>{DESK_SAY}</Say><Hangup/></Response>"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    api_url: str
    dial_port: int
    emulator: RestCore
    mock: MockServer
    token: trio.lowlevel.TrioToken

    def mock_snapshots(self) -> list[dict[str, Any]]:
        return trio.from_thread.run_sync(lambda: [s.snapshot() for s in self.mock.sessions.values()],
                                         trio_token=self.token)

    def dial_args(self, scenario: str, report: Path) -> list[str]:
        return ["dial", "--to", AGENT, "--from", TESTER, "--scenario", scenario, "--public-url", DIAL_URL,
                "--port", str(self.dial_port), "--twilio-api-url", self.api_url, "--account-sid", SID,
                "--auth-token", TOKEN, "--report", str(report), "--stream-timeout-s", "20",
                "--max-duration-s", "120"]


@contextmanager
def dial_stack(scenario: Scenario, workdir: Path, *, seed: int = 1, hook: str = DEFAULT_BRIDGE_HOOK,
               bridge: dict[str, Any] | None = None) -> Iterator[Stack]:
    """Mock (the scenario's behaviour, the seed ``run_embedded`` gives it) + bridge (``hook``, the scenario's
    ``[bridge]`` settings and ``bridge``'s, the emulator's account for its REST requests) + emulator with the agent's
    number and the front desk's (:data:`DESK`, a webhook answering :data:`DESK_TWIML`), served until
    the block ends."""
    from tests.twilio_emu.test_dial_e2e import Router
    from tests.twilio_emu.test_legs_e2e import webhook

    behaviour = scenario.mock if scenario.mock.seed is not None else scenario.mock.with_(seed=seed)
    dial_port, emu_port = free_port(), free_port()
    ready: queue.Queue[Stack | BaseException] = queue.Queue()
    stop = threading.Event()

    async def serve() -> None:
        bridge_hook = load_hook(hook)
        async with (running_mock(MockConfig(any_key=True, dialect=scenario.mock_dialect, behaviour=behaviour)) as mock,
                    webhook(Router({"/desk": DESK_TWIML})) as hooks):
            config = {"openai_realtime_url": mock.realtime_url, "database_path": workdir / "bridge.sqlite3",
                      "twilio_auth_token": TOKEN, "public_url": BRIDGE_PUBLIC, "twilio_account_sid": SID,
                      "twilio_api_url": f"http://127.0.0.1:{emu_port}", **scenario.bridge, **(bridge or {})}
            async with bridge_hook(config) as base:
                tunnels = Tunnels([parse_tunnel(f"{BRIDGE_PUBLIC}={base.rstrip('/')}"),
                                   parse_tunnel(f"{DIAL_PUBLIC}=ws://127.0.0.1:{dial_port}")])
                emu = RestCore(SID, TOKEN, clock=time.time,
                               numbers=[PhoneNumber(AGENT, f"{BRIDGE_PUBLIC}/incoming-call"),
                                        PhoneNumber(DESK, f"{hooks}/desk")])
                async with serve_emulator(emu, port=emu_port, tunnels=tunnels) as url:
                    ready.put(Stack(url, dial_port, emu, mock, trio.lowlevel.current_trio_token()))
                    await trio.to_thread.run_sync(stop.wait)

    def main() -> None:
        try:
            trio.run(serve)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            ready.put(exc)

    thread = threading.Thread(target=main, daemon=True, name=f"dial stack {scenario.name}")
    thread.start()
    got = ready.get(timeout=30)
    if isinstance(got, BaseException):
        raise got
    try:
        yield got
    finally:
        stop.set()
        thread.join(20)


def with_seed(scenario: Scenario, seed: int = 1) -> Scenario:
    return dataclasses.replace(scenario, mock=scenario.mock if scenario.mock.seed is not None
                               else scenario.mock.with_(seed=seed))
