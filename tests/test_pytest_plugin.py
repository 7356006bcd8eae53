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


def test_the_fixtures_work_without_trio_mode(pytester):
    """No ``trio_mode``: an async test using the fixtures is still run by pytest-trio."""
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_user="""
        async def test_servers(mock_openai, bridge_server):
            assert mock_openai.realtime_url.startswith("ws://127.0.0.1:")
            assert bridge_server.startswith("http://127.0.0.1:")
    """)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_a_sync_test_gets_one_line_saying_what_to_do(pytester):
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_user="""
        def test_sync(mock_openai):
            pass
    """)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["callsim's fixture mock_openai is async: write the test as `async def` "
                                 "(pytest-trio runs it)"])
    assert "AssertionError" not in result.stdout.str() and "Traceback" not in result.stdout.str()


def test_without_pytest_trio_the_message_says_what_to_install(pytester):
    """As if pytest-trio were not installed: the plugin is off and cannot be imported."""
    pytester.makeini("[pytest]\n")
    pytester.makeconftest("import sys\nsys.modules['pytest_trio'] = None  # import fails, as when not installed\n")
    pytester.makepyfile(test_user="""
        async def test_my_bridge(bridge_server, twilio_call):
            pass
    """)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "-p", "no:trio")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["callsim's fixtures mock_openai, bridge_server, twilio_call run under pytest-trio, "
                                 'which is not installed: pip install "callsim[pytest]"'])
    assert "requested an async fixture" not in result.stdout.str()
