"""dtmf_menu's verdict does not depend on how a bridge words a keypress, nor on a prompt naming a key.

The mock recognises a keypress item by its wording, which no two bridges share (mock/keypresses.py);
the harness counts only keys named after the caller pressed one (metrics._keys_after_keypress). So a
bridge that says "User dialed digit 1" or "[DTMF 1]" passes, and one that forwards nothing fails
even though its greeting instruction names key 1 ("keypad digit 1 is the weather") — without the
timing that greeting would have read as the keypress: a false pass.
"""
from __future__ import annotations

import pytest
import trio
from callsim.simulator.mock.server import MockConfig, running_mock
from callsim.simulator.runner import ScenarioRun, run_with_mock
from callsim.simulator.scenario import find_scenario

from tests.foreign.launch import KEY_BRIDGES, running_foreign_bridge
from tests.foreign.matrix import describe


async def _runs() -> dict[str, ScenarioRun]:
    out: dict[str, ScenarioRun] = {}

    async def one(name: str) -> None:
        async with running_mock(MockConfig(any_key=True)) as mock:
            async with running_foreign_bridge(name, mock.realtime_url) as url:
                out[name] = await run_with_mock(find_scenario("dtmf_menu"), url, mock, seed=1)

    async with trio.open_nursery() as n:
        for name in KEY_BRIDGES:
            n.start_soon(one, name)
    return out


@pytest.fixture(scope="module")
def runs() -> dict[str, ScenarioRun]:
    return trio.run(_runs)


@pytest.mark.parametrize("bridge", ["keys_dialed", "keys_bracketed"])
def test_any_wording_of_the_key_passes(runs, bridge):
    run = runs[bridge]
    assert run.status == "passed", describe(run)
    assert run.metrics[0].mock["dtmf"] == ["1"]


def test_a_prompt_naming_the_key_is_not_the_keypress(runs):
    run = runs["keys_prompted"]
    failed = {e.name: e.message for e in run.expectations if e.status == "failed"}
    assert "dtmf_heard" in failed, describe(run)
    assert "before the caller pressed anything" in failed["dtmf_heard"], failed["dtmf_heard"]
    mock = run.metrics[0].mock
    assert mock["dtmf"] == [] and mock["dtmf_before_keypress"] == ["1"]
