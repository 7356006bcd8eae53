"""pytest plugin (entry point ``pytest11``): run Twilio calls against a bridge from your tests.

Fixtures (async; need pytest-trio, e.g. ``trio_mode = true``):

* ``mock_openai`` — a running mock OpenAI Realtime server (any key accepted):
  ``mock_openai.realtime_url`` for your bridge's settings, ``mock_openai.sessions``
  for introspection.
* ``bridge_server`` — our bridge, in-process, wired to ``mock_openai``; its base
  URL. Another in-process bridge can be used by naming its hook in the ini
  option ``callsim_bridge_hook`` (``module:callable``, see :mod:`callsim.simulator.runner`).
* ``twilio_call`` — ``await twilio_call(url, "barge_in")`` runs a scenario (a
  name from fixtures/scenarios, a path, or a :class:`~callsim.simulator.scenario.Scenario`)
  against any bridge URL (webhook ``http(s)://…`` or stream ``ws(s)://…``) and
  returns the :class:`~callsim.simulator.runner.ScenarioRun`: per-call metrics, the
  expectations' results, and ``.passed``. When ``mock_openai`` is in use the
  mock's records are part of the measurement.

Testing your own bridge::

    async def test_my_bridge_barges_in(mock_openai, twilio_call):
        async with my_bridge(openai_url=mock_openai.realtime_url) as url:   # yours
            run = await twilio_call(url + "/incoming-call", "barge_in")
        assert run.passed, [e.message for e in run.expectations if e.status == "failed"]
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# Heavy imports (the openai SDK types, numpy...) happen inside the fixtures, so
# merely having callsim installed costs a test session nothing.
if TYPE_CHECKING:
    from .mock.server import MockServer
    from .runner import ScenarioRun
    from .scenario import Scenario

DEFAULT_BRIDGE_HOOK = "callsim.bridge.server:embedded"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("callsim_bridge_hook", "module:callable of the in-process bridge for bridge_server",
                  default=DEFAULT_BRIDGE_HOOK)


@pytest.fixture
async def mock_openai() -> AsyncIterator["MockServer"]:
    from .mock.server import MockConfig, running_mock

    async with running_mock(MockConfig(any_key=True)) as mock:
        yield mock


@pytest.fixture
async def bridge_server(mock_openai: "MockServer", tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    from .runner import load_hook

    hook = load_hook(request.config.getini("callsim_bridge_hook"))
    async with hook({"openai_realtime_url": mock_openai.realtime_url,
                     "database_path": tmp_path / "bridge.sqlite3"}) as base_url:
        yield base_url


@pytest.fixture
def twilio_call(request: pytest.FixtureRequest) -> Callable[..., Awaitable["ScenarioRun"]]:
    mock: Any = None
    if "mock_openai" in request.fixturenames:
        mock = request.getfixturevalue("mock_openai")

    async def call(url: str, scenario: "str | Path | Scenario", *, calls: int | None = None,
                   auth_token: str | None = None, seed: int | None = 1) -> "ScenarioRun":
        from .runner import run_external, run_with_mock
        from .scenario import Scenario, find_scenario

        s = scenario if isinstance(scenario, Scenario) else find_scenario(str(scenario))
        # pytest-trio hands sync fixtures a wrapper of async ones; its value exists once the test runs
        server = getattr(mock, "fixture_value", mock)
        if server is not None:
            return await run_with_mock(s, url, server, calls=calls, auth_token=auth_token, seed=seed)
        return await run_external(s, url, calls=calls, auth_token=auth_token, seed=seed)

    return call
