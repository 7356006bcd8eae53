"""A bridge's own hang-up tool stands in for the scenario's end_call (simulator/mock/tool_roles.py).

careful.py --hangup-tool hang_up declares ``hang_up`` (a required ``why``) instead of ``end_call``
and ends the stream once the goodbye after it has played. Before the stand-in, the goodbye scenario
was skipped for it ("the bridge did not declare end_call"): a bridge that says goodbye properly
went unjudged for the name of its tool. Now the mock calls ``hang_up``, with a ``why`` fitted from
the script's ``reason``, and the verdict is the bridge's.
"""
from __future__ import annotations

import pytest
import trio
from callsim.simulator.mock.server import MockConfig, running_mock
from callsim.simulator.mock.tool_roles import arguments_for, stand_in
from callsim.simulator.runner import run_with_mock
from callsim.simulator.scenario import find_scenario

from tests.foreign.launch import running_foreign_bridge
from tests.foreign.matrix import describe


@pytest.mark.parametrize("wanted,declared,got", [
    ("end_call", ["get_weather", "hang_up"], "hang_up"),
    ("end_call", ["end_call", "hang_up"], "end_call"),  # the scripted name first
    ("end_call", ["endConversation"], "endConversation"),
    ("end_call", ["get_weather", "send_email"], None),  # "send" is no "end"
    ("end_call", ["hang_up", "disconnect_line"], None),  # two candidates: no guess
    ("transfer_call", ["transfer_to_human"], "transfer_to_human"),
    ("transfer_call", ["escalate_to_agent", "get_weather"], "escalate_to_agent"),
    ("transfer_call", ["connectToHuman"], "connectToHuman"),
    ("transfer_call", ["get_operator_hours"], None),  # names an operator, transfers nothing
    ("end_call", ["close_session_cache"], None),
    ("get_weather", ["lookup_weather"], None),  # a fetching tool has no stand-in
])
def test_which_declared_tool_stands_in(wanted, declared, got):
    assert stand_in(wanted, declared) == got


def test_arguments_fit_the_declared_parameters():
    tool = {"name": "hang_up", "parameters": {"type": "object", "required": ["why", "polite", "code", "kind"],
            "properties": {"why": {"type": "string"}, "polite": {"type": "boolean"}, "code": {"type": "integer"},
                           "kind": {"type": "string", "enum": ["done", "abuse"]}, "extra": {"type": "string"}}}}
    assert arguments_for(tool, {"reason": "the caller said goodbye"}) == {
        "why": "the caller said goodbye", "polite": True, "code": 0, "kind": "done"}
    assert arguments_for({"name": "x"}, {"reason": "r"}) == {}  # no parameters declared: none sent
    assert arguments_for({"name": "x", "parameters": {"properties": {"reason": {}}}}, {"reason": "r"}) == {"reason": "r"}


def test_goodbye_is_judged_through_the_bridges_own_hang_up_tool():
    async def run():
        async with running_mock(MockConfig(any_key=True)) as mock:
            async with running_foreign_bridge("hang_up_tool", mock.realtime_url) as url:
                return await run_with_mock(find_scenario("goodbye"), url, mock, seed=1)

    run = trio.run(run)
    assert run.status == "passed", describe(run)
    m = run.metrics[0]
    assert m.tools_called == ["hang_up"] and m.tool_stand_ins == {"hang_up": "end_call"}
    assert m.end_reason == "closed_by_app" and m.unheard_at_end_ms <= 20
