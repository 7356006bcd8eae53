"""Bad input, as a user meets it: one line on stderr naming what is wrong and where, no traceback,
exit status 2, and nothing started (no report folder, no call placed, nothing listening).

Each case runs the real command in a subprocess, in a fresh folder.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from callsim.simulator.scenario import DEFAULT_DIR

CALLSIM = [sys.executable, "-m", "callsim.simulator"]
BRIDGE = [sys.executable, "-m", "callsim.bridge"]
BASE = (DEFAULT_DIR / "greeting_two_turns.toml").read_text()
#: anything that placed a call or started a mock would take longer: the scenario runs ~10 s
QUICK_S = 60


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in ("OPENAI_API_KEY", "AUDIO_MODE", "PORT")}
    env.pop("PYTHONPATH", None)  # the user's shell: the current directory is not on the path
    return {**env, **extra}


def refused(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``argv`` in ``cwd``; it must exit 2 with one line on stderr, nothing on stdout, no
    traceback, no report or recording folder. Returns the line."""
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env or _env(), timeout=QUICK_S)
    seconds = time.monotonic() - t0
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert proc.stdout == "", proc.stdout
    assert not (cwd / "callsim-report").exists() and not (cwd / "callsim-out").exists()
    assert not (cwd / "report").exists()
    assert seconds < QUICK_S
    return lines[0]


def scenario(tmp_path: Path, old: str, new: str, name: str = "bad.toml") -> Path:
    text = BASE.replace(old, new, 1)
    assert text != BASE, old
    (tmp_path / name).write_text(text)
    return tmp_path / name


# --------------------------------------------------------------------------- scenario files

@pytest.mark.parametrize(("old", "new", "message"), [
    ("turn_latency_p95_ms = 1500", 'turn_latency_p95_ms = "fast"',
     'bad.toml: [expect] turn_latency_p95_ms: expected a number of ms, got "fast"'),
    ("[bridge]\n", '[bridge]\naudio_mode = "mp3"\n',
     "bad.toml: [bridge] audio_mode: Input should be 'passthrough' or 'transcode', got 'mp3'"),
    ('end_reason = "hangup"', 'end_reason = "hungup"',
     'bad.toml: [expect] end_reason: expected one of "hangup", "closed_by_app", "max_duration", got "hungup" '
     '(did you mean "hangup"?)'),
    ("{ pause_ms = 300 }", "{ pause_ms = -5 }", "bad.toml: [caller] steps[4] pause_ms: must be at least 0 ms, got -5"),
    ('{ say = "caller_greeting" }', '{ say = "caller_greting" }',
     'bad.toml: [caller] steps[2] say: unknown fixture "caller_greting" (did you mean "caller_greeting"?)'),
    ('replies = ["assistant_short_reply"]', 'replies = ["assistant_shrt_reply"]',
     'bad.toml: [mock] replies[1]: unknown fixture "assistant_shrt_reply" (did you mean "assistant_short_reply"?)'),
    ("turn_latency_p95_ms = 1500", "turn_latency_p59_ms = 1500",
     "bad.toml: [expect] turn_latency_p59_ms: unknown key (did you mean turn_latency_p95_ms?)"),
    ("[bridge]\n", '[bridge]\naudio_mod = "transcode"\n',
     "bad.toml: [bridge] audio_mod: no such setting (did you mean audio_mode?)"),
])
def test_demo_refuses_a_bad_scenario_before_anything_starts(tmp_path, old, new, message):
    path = scenario(tmp_path, old, new)
    line = refused(CALLSIM + ["demo", "--scenarios", str(path), "--report", "report"], tmp_path)
    assert line == f"callsim demo: {path}: {message.removeprefix('bad.toml: ')}"


def test_a_bad_scenario_in_the_folder_is_refused_before_the_good_ones_run(tmp_path):
    folder = tmp_path / "scenarios"
    folder.mkdir()
    for f in DEFAULT_DIR.glob("*.toml"):
        (folder / f.name).write_text(f.read_text())
    scenario(folder, "{ pause_ms = 300 }", "{ pause_ms = -5 }", "zz_last.toml")
    line = refused(CALLSIM + ["demo", "--scenarios", str(folder), "--report", "report"], tmp_path)
    assert "zz_last.toml: [caller] steps[4] pause_ms: must be at least 0 ms, got -5" in line


def test_call_and_check_refuse_a_bad_scenario_before_placing_a_call(tmp_path):
    path = scenario(tmp_path, '{ say = "caller_greeting" }', '{ say = "caller_greting" }')
    want = f'{path}: [caller] steps[2] say: unknown fixture "caller_greting" (did you mean "caller_greeting"?)'
    with socket.socket() as listener:  # a target that would see any connection
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/incoming-call"
        assert refused(CALLSIM + ["call", "--target", url, "--scenario", str(path)], tmp_path) == \
            f"callsim call: {want}"
        assert refused(CALLSIM + ["check", "--target", url, "--scenarios", str(path), "--report", "report"],
                       tmp_path) == f"callsim check: {want}"
        with pytest.raises(BlockingIOError):
            listener.accept()


# --------------------------------------------------------------------------- flags

@pytest.mark.parametrize("argv", [
    ["demo", "--calls", "0", "--report", "report"],
    ["check", "--target", "http://127.0.0.1:9/incoming-call", "--calls", "0", "--report", "report"],
    ["call", "--target", "http://127.0.0.1:9/incoming-call", "--scenario", "barge_in", "--calls", "0"],
])
def test_calls_must_be_at_least_one(tmp_path, argv):
    line = refused(CALLSIM + argv, tmp_path)
    assert line.startswith(f"callsim {argv[0]}: --calls: must be at least 1, got 0"), line


@pytest.mark.parametrize("command", ["call", "check"])
def test_a_target_of_another_scheme_is_a_usage_error(tmp_path, command):
    line = refused(CALLSIM + [command, "--target", "ftp://127.0.0.1/incoming-call", "--report", "report"]
                   if command == "check" else CALLSIM + [command, "--target", "ftp://127.0.0.1/incoming-call"],
                   tmp_path)
    assert line == (f"callsim {command}: --target must be http(s)://… (voice webhook) or ws(s)://… (stream), "
                    "got 'ftp://127.0.0.1/incoming-call'")


@pytest.mark.parametrize("argv", [CALLSIM + ["mock-openai"], BRIDGE, CALLSIM + ["bridge"]],
                         ids=["mock-openai", "python -m callsim.bridge", "callsim bridge"])
def test_an_out_of_range_port_is_refused(tmp_path, argv):
    line = refused(argv + ["--port", "80000"], tmp_path, _env(OPENAI_API_KEY="sk-x"))
    prog = line.split(":")[0]
    assert line == f"{prog}: --port: must be at most 65535, got 80000 (see {prog} --help)", line


@pytest.mark.parametrize("argv", [CALLSIM + ["mock-openai"], BRIDGE, CALLSIM + ["bridge"]],
                         ids=["mock-openai", "python -m callsim.bridge", "callsim bridge"])
def test_a_port_in_use_is_one_line(tmp_path, argv):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = refused(argv + ["--port", str(port), "--openai-url", "ws://127.0.0.1:9/v1/realtime"]
                       if argv[-1] != "mock-openai" else argv + ["--port", str(port)], tmp_path,
                       _env(OPENAI_API_KEY="sk-x"))
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use (choose another with --port" in line


@pytest.mark.parametrize(("env", "message"), [
    ({"AUDIO_MODE": "mp3"}, "AUDIO_MODE: Input should be 'passthrough' or 'transcode', got 'mp3'"),
    ({"VAD_THRESHOLD": "high"}, "VAD_THRESHOLD: Input should be a valid number, unable to parse string as a "
                                "number, got 'high'"),
    ({"PORT": "80000"}, "PORT: Input should be less than or equal to 65535, got '80000'"),
    # the console's session settings are built from these at every start: their bounds are the same
    ({"VOICE": "my voice"}, "VOICE: String should match pattern '^[A-Za-z0-9_-]{1,40}$', got 'my voice'"),
    ({"VAD_SILENCE_DURATION_MS": "60000"}, "VAD_SILENCE_DURATION_MS: Input should be less than or equal to "
                                           "10000, got '60000'"),
    ({"VAD_EAGERNESS": "LOW"}, "VAD_EAGERNESS: Input should be 'low', 'medium', 'high' or 'auto', got 'LOW'"),
])
@pytest.mark.parametrize("print_settings", [False, True], ids=["serve", "--print-settings"])
def test_bad_environment_values_name_the_variable(tmp_path, env, message, print_settings):
    argv = BRIDGE + ["--print-settings"] if print_settings else BRIDGE
    assert refused(argv, tmp_path, _env(OPENAI_API_KEY="sk-x", **env)) == f"python -m callsim.bridge: {message}"


def test_a_bad_value_from_a_flag_names_the_flag(tmp_path):
    line = refused(CALLSIM + ["bridge", "--public-url", "ftp://x", "--print-settings"], tmp_path)
    assert line == "callsim bridge: --public-url: public_url must be http(s)://host[:port][/prefix], got 'ftp://x'"


def test_the_bridge_will_not_start_for_openai_without_a_key(tmp_path):
    line = refused(BRIDGE + ["--port", "0"], tmp_path)
    assert line.startswith("python -m callsim.bridge: OPENAI_API_KEY is not set: OpenAI refuses a session "
                           "without it"), line


async def test_without_a_key_for_another_url_the_bridge_warns_once_and_serves(tmp_path):
    proc = await trio.lowlevel.open_process(
        BRIDGE + ["--port", "0", "--openai-url", "ws://127.0.0.1:9/v1/realtime"], cwd=str(tmp_path),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    err = b""
    try:
        with trio.fail_after(30):
            while b"Running on" not in err:
                chunk = await proc.stderr.receive_some(4096)
                assert chunk, err.decode()
                err += chunk
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
    warnings = [line for line in err.decode().splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and warnings[0].endswith(
        "OPENAI_API_KEY is not set: ws://127.0.0.1:9/v1/realtime must accept a session without a key, or every "
        "call ends in the apology"), err.decode()


# --------------------------------------------------------------------------- --bridge-hook

def test_a_bridge_hook_in_the_current_directory_is_found(tmp_path):
    """No PYTHONPATH: the module next to where the user runs the command is imported (its
    check_config refusing the settings shows it was, and that nothing ran after)."""
    (tmp_path / "mybridge.py").write_text(
        "from callsim.bridge.server import embedded\n"
        "def hook(config):\n    return embedded(config)\n"
        "def _check(config):\n    raise ValueError('mybridge was asked about ' + ', '.join(sorted(config)))\n"
        "hook.check_config = _check\n")
    line = refused(CALLSIM + ["demo", "--only", "codec_transcode", "--bridge-hook", "mybridge:hook", "--report", "report"],
                   tmp_path)
    assert re.fullmatch(r"callsim demo: .*codec_transcode\.toml: \[bridge\] mybridge was asked about audio_mode", line), line


@pytest.mark.parametrize(("spec", "message"), [
    ("nosuchmodule:hook", "--bridge-hook nosuchmodule:hook: no module named 'nosuchmodule' (looked in {cwd} and on "
                          "sys.path)"),
    ("mybridge:nohook", "--bridge-hook mybridge:nohook: module mybridge ({cwd}/mybridge.py) has no attribute "
                        "'nohook'"),
    ("mybridge", "--bridge-hook wants MODULE:CALLABLE, got 'mybridge'"),
    ("broken:hook", "--bridge-hook broken:hook: importing broken failed: ZeroDivisionError: division by zero"),
])
def test_a_bridge_hook_that_cannot_be_loaded_is_one_line(tmp_path, spec, message):
    (tmp_path / "mybridge.py").write_text("hook = None\n")
    (tmp_path / "broken.py").write_text("1 / 0\n")
    line = refused(CALLSIM + ["demo", "--bridge-hook", spec, "--report", "report"], tmp_path)
    assert line == "callsim demo: " + message.format(cwd=tmp_path.resolve())


# --------------------------------------------------------------------------- the scenario schema, in process

def _load(tmp_path: Path, toml: str):  # type: ignore[no-untyped-def]
    from callsim.simulator.scenario import load_scenario

    (tmp_path / "s.toml").write_text(toml)
    return load_scenario(tmp_path / "s.toml")


MINIMAL = '[caller]\nsteps = [{ say = "caller_greeting" }, { hangup = true }]\n'


@pytest.mark.parametrize(("toml", "message"), [
    ("nmae = 'x'\n" + MINIMAL, "nmae: unknown key (did you mean name?)"),
    ("calls = 0\n" + MINIMAL, "calls: must be at least 1, got 0"),
    ("calls = 1.5\n" + MINIMAL, "calls: expected a whole number, got 1.5"),
    ("requires = ['tool']\n" + MINIMAL, 'requires[1]: expected one of "greeting", "tools", "transcoding", '
                                        '"passthrough", "transcription", "twilio", got "tool" (did you mean "tools"?)'),
    ("[caller]\nsteps = []\n", "[caller] steps: missing or empty: a scenario needs at least one step"),
    ("[caller]\nsteps = 'say'\n", '[caller] steps: expected a list, got "say"'),
    ("[caller]\nsteps = [{ sya = 'caller_greeting' }]\n", "[caller] steps[1]: unknown step 'sya' (did you mean say?)"),
    ("[caller]\nsteps = [{ say = 'caller_greeting', hangup = true }]\n",
     "[caller] steps[1]: a step is a table with exactly one key (say, pause_ms, dtmf, wait_for_reply, "
     "wait_for_audio_ms, hangup), got a table {say, hangup}"),
    ("[caller]\nsteps = [{ say = 3 }]\n", "[caller] steps[1] say: expected a string, got 3"),
    ("[caller]\nsteps = [{ dtmf = '12x' }]\n", '[caller] steps[1] dtmf: DTMF digits are #*0123456789ABCD, got "12x"'),
    ("[caller]\nsteps = [{ wait_for_reply = false }]\n",
     "[caller] steps[1] wait_for_reply: expected true or { quiet_ms = …, timeout_ms = … }, got false"),
    ("[caller]\nsteps = [{ wait_for_reply = { quiet_ms = 800, timeout = 9 } }]\n",
     "[caller] steps[1] wait_for_reply timeout: unknown key (did you mean timeout_ms?)"),
    ("[caller]\nsteps = [{ wait_for_audio_ms = '1s' }]\n",
     '[caller] steps[1] wait_for_audio_ms: expected a whole number of ms, got "1s"'),
    ("[caller]\nsteps = [{ hangup = false }]\n", "[caller] steps[1] hangup: expected true, got false"),
    (MINIMAL + "impairments = 'loss=2'\n",
     "[caller] impairments: loss_prob must be a probability in [0, 1], got 2.0"),
    (MINIMAL + "let_greeting_finish = 'yes'\n", '[caller] let_greeting_finish: expected true or false, got "yes"'),
    (MINIMAL + "[mock]\ndialect = 'v1'\n", '[mock] dialect: expected one of "ga", "beta", "auto", got "v1"'),
    (MINIMAL + "[mock]\nthink = 'soon'\n",
     '[mock] think: expected MS, "uniform:LO-HI" or "normal:MEAN,SD", got "soon"'),
    (MINIMAL + "[mock]\nthink = -1\n", "[mock] think: must be at least 0 ms, got -1"),
    (MINIMAL + "[mock]\nthink = 'uniform:600-200'\n", "[mock] think: uniform think time needs lo <= hi, got 600-200"),
    (MINIMAL + "[mock]\nrealtime_factor = 0\n", "[mock] realtime_factor: must be more than 0, got 0"),
    (MINIMAL + "[mock]\necho = 1\n", "[mock] echo: expected true or false, got 1"),
    (MINIMAL + "[mock]\nreplys = ['assistant_short_reply']\n", "[mock] replys: unknown key (did you mean replies?)"),
    (MINIMAL + "[mock]\nfaults = ['drop:after_ms=-5']\n", "[mock] faults[1] after_ms: must be at least 0 ms, got -5"),
    (MINIMAL + "[mock]\nfaults = [{ kind = 'dorp' }]\n",
     '[mock] faults[1] kind: expected one of "refuse", "drop", "stall", "error", "expire", "fail_response", '
     '"slow_start", "close", got "dorp" (did you mean "drop"?)'),
    (MINIMAL + "[mock]\nfaults = [{ kind = 'refuse', status = 42 }]\n",
     "[mock] faults[1] status: must be at least 100, got 42"),
    (MINIMAL + "[mock]\nrules = [{ when = 'caller_greeting' }]\n", "[mock] rules[1]: a rule has either reply or tool"),
    (MINIMAL + "[mock]\nrules = [{ when = 'caller_greeting', tool = { name = 'f', then = 'nope' } }]\n",
     '[mock] rules[1] tool then: unknown fixture "nope" (`callsim fixtures` lists the 15 known)'),
    (MINIMAL + "[bridge]\n[expect]\nno_underruns = 'yes'\n", '[expect] no_underruns: expected true or false, got "yes"'),
    (MINIMAL + "[expect]\ncodec = 'exact'\n",
     '[expect] codec: expected one of "bit_exact", got "exact" (did you mean "bit_exact"?)'),
    (MINIMAL + "[expect]\nbarge_ins = -1\n", "[expect] barge_ins: must be at least 0, got -1"),
    (MINIMAL + "[expect]\ntranscript_contains = [1]\n", "[expect] transcript_contains[1]: expected a string, got 1"),
    (MINIMAL + "[expect]\nopenai_closed_within_ms = true\n",
     "[expect] openai_closed_within_ms: expected a number of ms, got true"),
    ("bridge = 3\n" + MINIMAL, "[bridge]: expected a table, got 3"),
    (MINIMAL + "bridge = 3\n", "[caller] bridge: unknown key (known: impairments, let_greeting_finish, steps)"),
])
def test_every_scenario_key_is_checked_at_load(tmp_path, toml, message):
    from callsim.simulator.scenario import ScenarioError

    with pytest.raises(ScenarioError) as err:
        _load(tmp_path, toml)
    assert str(err.value) == f"{tmp_path / 's.toml'}: {message}"


def test_what_a_scenario_may_say_still_loads(tmp_path):
    s = _load(tmp_path, MINIMAL.replace("{ hangup = true }", "{ pause_ms = 0 }, { dtmf = '1#' }, "
                                        "{ wait_for_reply = { quiet_ms = 500, timeout_ms = 9000 } }, "
                                        "{ wait_for_audio_ms = 200 }, { hangup = true }")
              + "let_greeting_finish = false\n"
              + "[mock]\ndialect = 'beta'\nthink = 'normal:400,50'\nfaults = ['drop:after_ms=500,nth=2', "
                "{ kind = 'refuse', status = 429, sessions = [1, 3] }]\n"
                "rules = [{ when = 'caller_weather_question', tool = { name = 'get_weather', "
                "arguments = { city = 'Paris' } } }]\n"
              + "[expect]\nopenai_closed_within_ms = false\ntranscript_contains = 'help'\nsnr_min_db = -3\n")
    assert s.mock_dialect == "beta" and s.expect.openai_closed_within_ms is False
    assert s.expect.transcript_contains == ("help",) and s.expect.snr_min_db == -3.0
    assert [f.kind for f in s.mock.faults] == ["drop", "refuse"] and s.mock.faults[1].sessions == (1, 3)
    assert s.mock.rules[0].tool is not None and s.mock.rules[0].tool.arguments == {"city": "Paris"}


def test_the_shipped_scenarios_load():
    from callsim.simulator.scenario import load_scenarios

    assert len(load_scenarios()) >= 9


def test_a_behaviour_survives_the_control_endpoints_json():
    """The runner sends a scenario's behaviour to a mock as JSON of its fields: from_dict reads it back whole."""
    import dataclasses

    import orjson
    from callsim.simulator.mock.behaviour import Behaviour, Fault, Rule, ThinkTime, ToolCall

    b = Behaviour(replies=("assistant_long_reply", "assistant_short_reply"), think=ThinkTime("uniform", lo=1, hi=2),
                  rules=(Rule("caller_stop", reply="assistant_short_reply"),
                         Rule("caller_weather_question", tool=ToolCall("get_weather", {"city": "Paris"}))),
                  faults=(Fault("refuse", status=429, sessions=(2,)), Fault("error", code="rate_limit_exceeded")),
                  seed=7, echo=True)
    assert Behaviour.from_dict(orjson.loads(orjson.dumps(dataclasses.asdict(b)))) == b


# --------------------------------------------------------------------------- a webhook that never answers

def test_a_webhook_timeout_says_so_in_words():
    from callsim.simulator.caller.dialer import Dialer
    from callsim.simulator.caller.script import Hangup

    d = Dialer("http://app.test/in", [Hangup()])
    d.start(0)
    assert d.webhook_timed_out(10).error == "webhook failed: no answer within 10 s"


async def test_a_webhook_that_takes_the_connection_and_never_answers():
    from callsim.simulator.caller.script import Hangup
    from callsim.simulator.caller.trio_driver import place_call

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    held = []
    async with trio.open_nursery() as n:
        async def hold() -> None:
            while True:
                held.append(await listeners[0].accept())
        n.start_soon(hold)
        result = await place_call(f"http://127.0.0.1:{port}/incoming-call", [Hangup()], connect_timeout=0.5)
        n.cancel_scope.cancel()
    assert held, "the server was never reached"
    assert result.error == "webhook failed: no answer within 0.5 s"
