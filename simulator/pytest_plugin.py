"""pytest plugin (entry point ``pytest11``): run Twilio calls against a bridge from your tests.

Fixtures (async, run by pytest-trio: ``pip install "callsim[pytest]"``; an ``async def`` test
that uses one is run as a trio test, so no ``trio_mode = true`` is needed):

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

import inspect
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


#: the fixtures that need a trio test
FIXTURES = ("mock_openai", "bridge_server", "twilio_call")
INSTALL = 'pip install "callsim[pytest]"'


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("callsim_bridge_hook", "module:callable of the in-process bridge for bridge_server",
                  default=DEFAULT_BRIDGE_HOOK)


def _uses_ours(item: pytest.Item) -> list[str]:
    return [f for f in FIXTURES if f in getattr(item, "fixturenames", ())]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """An ``async def`` test using our fixtures is a trio test, with or without ``trio_mode``:
    without it pytest-trio would leave the test, and our async fixtures, to pytest, which cannot
    run them. Tests marked for another async library are left alone (and told why below)."""
    if not config.pluginmanager.has_plugin("trio"):
        return
    for item in items:
        if (_uses_ours(item) and inspect.iscoroutinefunction(getattr(item, "obj", None))
                and not any(item.get_closest_marker(m) for m in ("trio", "asyncio", "anyio"))):
            item.add_marker(pytest.mark.trio)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test our fixtures cannot run in fails at set-up with one line saying what to do, instead
    of pytest's own error about async fixtures (or an assertion deep inside it)."""
    ours = _uses_ours(item)
    if not ours:
        return
    many = len(ours) > 1
    what = f"callsim's fixture{'s' if many else ''} {', '.join(ours)}"
    run, be = ("run", "are") if many else ("runs", "is")
    if not item.config.pluginmanager.has_plugin("trio"):
        try:
            import pytest_trio  # noqa: F401
        except ImportError:
            pytest.fail(f"{what} {run} under pytest-trio, which is not installed: {INSTALL}", pytrace=False)
        pytest.fail(f"{what} {run} under pytest-trio, which is disabled (-p no:trio)", pytrace=False)
    if not inspect.iscoroutinefunction(getattr(item, "obj", None)):
        pytest.fail(f"{what} {be} async: write the test as `async def` (pytest-trio runs it)", pytrace=False)
    if item.get_closest_marker("trio") is None:
        pytest.fail(f"{what} {run} under trio: this test is marked for another async library", pytrace=False)


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
