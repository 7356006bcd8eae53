"""The pytest plugin, as a user's test suite sees it (a fresh pytest run via pytester)."""

from __future__ import annotations

pytest_plugins = ["pytester"]


def test_plugin_fixtures_test_a_bridge_in_a_fresh_pytest_run(pytester):
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_user="""
        from callsim.bridge.server import embedded   # stands in for the user's own bridge

        async def test_my_bridge(mock_openai, twilio_call, tmp_path):
            async with embedded({"openai_realtime_url": mock_openai.realtime_url,
                                 "database_path": tmp_path / "b.sqlite3"}) as url:
                run = await twilio_call(url + "/incoming-call", "hangup_mid_reply")
            assert run.mock_in_loop
            assert run.passed, [e.message for e in run.expectations if e.status == "failed"]
            assert run.calls[0].metrics.turns[0].latency_ms > 0

        async def test_bridge_server_fixture(bridge_server, twilio_call):
            run = await twilio_call(bridge_server + "/incoming-call", "hangup_mid_reply")
            assert run.passed
    """)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
