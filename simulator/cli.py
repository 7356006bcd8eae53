"""``callsim`` command line.

Subcommands are added as the harness grows; each has its own ``--help``.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NoReturn

from . import __version__
from .cli_support import AT_LEAST_1, MS, PORT, bounded_number, serve_until_signal
from .twilio_emu.command import add_parser as add_twilio_emulator

#: scenarios ``callsim demo`` runs at once unless --jobs/--sequential say otherwise
DEFAULT_JOBS = 16


class _Parser(argparse.ArgumentParser):
    """A bad flag is one line on stderr (exit 2), not the usage block: CI logs show it whole."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message.removeprefix('argument ')} (see {self.prog} --help)\n")


def _check_target(target: str) -> None:
    """``--target`` must be a webhook or a stream URL: refused before anything is placed."""
    from urllib.parse import urlsplit

    from .caller.dialer import target_kind

    if target_kind(target) not in ("webhook", "stream") or not urlsplit(target).hostname:
        raise UsageError(f"--target must be http(s)://… (voice webhook) or ws(s)://… (stream), got {target!r}")


DEFAULT_FROM = "+15005550006"  # Twilio's magic test numbers, as the webhook's From/To
DEFAULT_TO = "+15005550001"


def _add_call(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "call",
        help="place one simulated Twilio call at a bridge (webhook or stream URL)",
        description=(
            "Act as Twilio for one call: POST the voice webhook (signed when an auth token is "
            "given), follow the TwiML's <Connect><Stream>, stream the chosen fixtures as 20 ms "
            "μ-law frames with pauses, wait for each reply, hang up. Writes heard.wav, "
            "heard.ulaw and timeline.json to --out and prints a one-line summary."
        ),
    )
    p.add_argument("--target", required=True,
                   help="http(s)://host/incoming-call (voice webhook) or ws(s)://host/media-stream")
    p.add_argument("--auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN"),
                   help="sign the webhook and the stream upgrade with X-Twilio-Signature "
                        "(default: $TWILIO_AUTH_TOKEN)")
    p.add_argument("--say", action="append", metavar="FIXTURE", default=None,
                   help="fixture to say (repeat for several turns; default caller_greeting); "
                        "see `callsim fixtures`. Not with --scenario: its steps say what the caller says")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder of a single call (default ./callsim-out); --scenario runs write to --report")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="extra start.customParameters (as <Parameter> would give; these win)")
    p.add_argument("--from", dest="from_", default=None, help=f"caller number (From; default {DEFAULT_FROM})")
    p.add_argument("--to", default=None, help=f"called number (To; default {DEFAULT_TO})")
    p.add_argument("--quiet-ms", type=MS, default=None,
                   help="a reply has ended after this much silence (default 800; "
                        "with --scenario: every wait_for_reply step's)")
    p.add_argument("--reply-timeout-ms", type=bounded_number(int, minimum=1), default=None,
                   help="give up waiting for a reply after this long (default 15000; "
                        "with --scenario: every wait_for_reply step's)")
    p.add_argument("--max-duration-s", type=bounded_number(float, above=0), default=None,
                   help="hang up after this long whatever happens (default 300)")
    p.add_argument("--impair", default=None, metavar="SPEC",
                   help="seeded send-side impairments, e.g. jitter=5,loss=0.01,bunch=0.02x5,gap=0.01x40,seed=7 "
                        "(with --scenario: instead of its [caller] impairments)")
    p.add_argument("--seed", type=int, default=None, help="seed for SIDs (reproducible runs)")
    p.add_argument("--fixtures", type=Path, default=None,
                   help="folder with manifest.json (default: the bundled fixtures/audio or $CALLSIM_FIXTURES)")
    p.add_argument("--scenario", action="append", default=None, metavar="NAME_OR_FILE",
                   help="run a scenario (fixtures/scenarios/NAME.toml or a path; repeat for several) with its "
                        "expectations, instead of --say; writes reports to --report. The options above apply "
                        "to every call it places")
    p.add_argument("--mock-url", default=None, metavar="URL",
                   help="http://host:port of a running `callsim mock-openai` the bridge is pointed at: the "
                        "scenario's mock behaviour is set there and its records checked (else expectations that "
                        "need the mock are skipped); --scenario only")
    p.add_argument("--calls", type=AT_LEAST_1, default=None,
                   help="calls per scenario (default: the scenario's); --scenario only")
    p.add_argument("--report", type=Path, default=None,
                   help="report folder for --scenario runs (default ./callsim-report)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every warning and connection event")
    p.set_defaults(func=_cmd_call)


class UsageError(ValueError):
    """A bad combination of options: one line on stderr, exit status 2."""


def _params(items: list[str]) -> dict[str, str]:
    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--param wants NAME=VALUE, got {item!r}")
        params[name] = value
    return params


def _impairments(spec: str | None):  # type: ignore[no-untyped-def]
    from .caller.impairments import Impairments

    try:
        return Impairments.parse(spec or "")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _bank(folder: Path | None):  # type: ignore[no-untyped-def]
    from .audio.fixtures import FixtureLibrary
    from .audio.utterances import UtteranceBank

    try:
        return UtteranceBank(FixtureLibrary(folder) if folder else None)
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"--fixtures {folder}: {exc}") from None


def _check_fixtures(says: list[str], bank) -> None:  # type: ignore[no-untyped-def]
    if unknown := [s for s in dict.fromkeys(says) if s not in bank]:
        raise UsageError(f"unknown fixture(s) {', '.join(unknown)}; known: {', '.join(bank.library.names())}")


def _cmd_call(args: argparse.Namespace) -> int:
    try:
        _check_target(args.target)
        return _call_scenarios(args) if args.scenario else _call_once(args)
    except UsageError as exc:
        print(f"callsim call: {exc}", file=sys.stderr)
        return 2


def _call_scenarios(args: argparse.Namespace) -> int:
    """``--scenario``: every option either reaches every call, or is refused with the reason."""
    if args.say:
        raise UsageError("--say cannot be combined with --scenario: the scenario's steps say what the caller "
                         "says (put the fixtures in its say steps, or drop --scenario)")
    if args.out is not None:
        raise UsageError("--out is for a single call; a --scenario run writes its reports, and each call's "
                         "recordings under calls/, to --report")
    if args.calls is not None and args.calls < 1:
        raise UsageError(f"--calls must be at least 1, got {args.calls}")
    from .demo import run_and_report
    from .scenario import ScenarioError, find_scenario

    overrides = {
        "impairments": None if args.impair is None else _impairments(args.impair),
        "quiet_ms": args.quiet_ms, "reply_timeout_ms": args.reply_timeout_ms,
        "from_": args.from_, "to": args.to, "custom_parameters": _params(args.param),
        "max_duration_s": args.max_duration_s, "fixtures": args.fixtures,
    }
    bank = _bank(args.fixtures)
    try:
        scenarios = [find_scenario(s, fixtures=args.fixtures).with_overrides(**overrides) for s in args.scenario]
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None
    for s in scenarios:
        _check_fixtures(s.says, bank)
    # The calls and the measurement (codec check, transcript text) get --fixtures through
    # Scenario.fixtures; a mock behind --mock-url reads its own library.
    return run_and_report(scenarios, report_dir=args.report or Path("callsim-report"), target=args.target,
                          calls=args.calls, auth_token=args.auth_token, mock_url=args.mock_url, seed=args.seed)


def _call_once(args: argparse.Namespace) -> int:
    """One call saying ``--say`` fixtures; the scenario-only options are refused."""
    for flag, value in (("--mock-url", args.mock_url), ("--calls", args.calls), ("--report", args.report)):
        if value is not None:
            raise UsageError(f"{flag} only applies to --scenario runs (a single call has no expectations "
                             "to judge; its recording goes to --out)")
    import trio

    from .caller.script import conversation
    from .caller.trio_driver import place_call
    from .caller.webhook import CallParties
    from .interrupt import EXIT_INTERRUPTED, CtrlC
    from .measure.recording import pacing_stats, write_call

    impairments = _impairments(args.impair)
    params = _params(args.param)
    bank = _bank(args.fixtures)
    says = args.say or ["caller_greeting"]
    _check_fixtures(says, bank)
    rng = random.Random(args.seed)
    script = conversation(says, quiet_ms=800 if args.quiet_ms is None else args.quiet_ms,
                          timeout_ms=15000 if args.reply_timeout_ms is None else args.reply_timeout_ms)
    max_duration_s = 300.0 if args.max_duration_s is None else args.max_duration_s
    print(f"calling {args.target} (saying {', '.join(says)}) ...", file=sys.stderr)
    ctrl_c = CtrlC(on_first=lambda: print("interrupted: hanging up (Ctrl-C again to quit at once)",
                                          file=sys.stderr, flush=True))
    with ctrl_c.exits_at_once():
        result = trio.run(ctrl_c.run, lambda: place_call(
            args.target, script, auth_token=args.auth_token, bank=bank, impairments=impairments,
            parties=CallParties.new(rng, from_=args.from_ or DEFAULT_FROM, to=args.to or DEFAULT_TO),
            custom_parameters=params, max_duration_ms=int(max_duration_s * 1000), rng=rng,
        ))
    if result is None:  # a call cut short has no verdict and its recording stops mid-word: nothing is written
        print("callsim call: interrupted: the call was hung up before it ended; nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
    paths = write_call(result, args.out or Path("callsim-out"))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(result.summary_line())
    pacing = pacing_stats(result)
    if pacing:
        print(f"pacing: {pacing['frames']} frames, lateness p50 {pacing['lateness_ms_p50']:.2f} ms, "
              f"p99 {pacing['lateness_ms_p99']:.2f} ms, drift {pacing['drift_frames']:.2f} frames")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0 if result.ok else 1


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="run every scenario on mock OpenAI + our bridge + fake callers, in one process",
        description=(
            "The main job: for each scenario in fixtures/scenarios/, start the mock OpenAI Realtime server and "
            "the bridge on loopback in this process, place the scenario's calls as Twilio would, measure what "
            "the callers experienced (turn latency, overhead, barge-in, truncation, codec, underruns), check "
            "the expectations, print a table and write report.json, junit.xml and report.html. "
            "The scenarios run at once (--jobs), each with its own mock and bridge. "
            "Exit status 1 when an expectation fails; 130 after Ctrl-C, which hangs up the calls in "
            "progress and writes the report of the scenarios that finished (a second Ctrl-C quits at once)."
        ),
    )
    p.add_argument("--scenarios", type=Path, default=None, metavar="DIR_OR_FILE",
                   help="scenario folder or file (default fixtures/scenarios)")
    p.add_argument("--only", action="append", default=None, metavar="NAME", help="run only this scenario (repeat)")
    p.add_argument("--calls", type=AT_LEAST_1, default=None,
                   help="calls per scenario, at once (default: the scenario's)")
    p.add_argument("--report", type=Path, default=Path("callsim-report"), help="report folder (default ./callsim-report)")
    p.add_argument("--bridge-hook", default="callsim.bridge.server:embedded", metavar="MODULE:CALLABLE",
                   help="the in-process bridge to run: an async context manager taking a settings dict and "
                        "yielding its base URL (default: ours, callsim.bridge.server:embedded)")
    p.add_argument("--seed", type=int, default=1, help="seed for the mock and the callers (default 1)")
    at_once = p.add_mutually_exclusive_group()
    at_once.add_argument("--jobs", type=AT_LEAST_1, default=None, metavar="N",
                         help=f"scenarios run at once, each with its own mock and bridge (default {DEFAULT_JOBS}); "
                              "the calls and verdicts are the same, only the wall time changes")
    at_once.add_argument("--sequential", action="store_true",
                         help="one scenario after another (same as --jobs 1)")
    p.add_argument("-v", "--verbose", action="store_true", help="log connection events and warnings")
    p.set_defaults(func=_cmd_demo)


def _selected_scenarios(prog: str, args: argparse.Namespace) -> list | None:
    """``--scenarios`` (folder or file) narrowed by ``--only``; None after printing why not."""
    from .scenario import ScenarioError, load_scenarios

    if args.calls is not None and args.calls < 1:  # 0 would silently mean "the scenario's"
        print(f"callsim {prog}: --calls must be at least 1, got {args.calls}", file=sys.stderr)
        return None
    try:
        scenarios = load_scenarios(args.scenarios)
    except ScenarioError as exc:
        print(f"callsim {prog}: {exc}", file=sys.stderr)
        return None
    if args.only:
        if unknown := set(args.only) - {s.name for s in scenarios}:
            print(f"callsim {prog}: unknown scenario(s) {', '.join(sorted(unknown))}; known: "
                  f"{', '.join(s.name for s in scenarios)}", file=sys.stderr)
            return None
        scenarios = [s for s in scenarios if s.name in args.only]
    return scenarios


def _cmd_demo(args: argparse.Namespace) -> int:
    from .bridge_hook import HookError, check_config, load_hook
    from .demo import run_and_report

    scenarios = _selected_scenarios("demo", args)
    if scenarios is None:
        return 2
    try:  # every scenario's [bridge] settings, before the first mock or bridge starts
        hook = load_hook(args.bridge_hook)
        for s in scenarios:
            check_config(hook, s.bridge, str(s.path or s.name))
    except HookError as exc:
        print(f"callsim demo: {exc}", file=sys.stderr)
        return 2
    jobs = 1 if args.sequential else args.jobs or DEFAULT_JOBS
    return run_and_report(scenarios, report_dir=args.report, calls=args.calls, hook=args.bridge_hook,
                          seed=args.seed, jobs=jobs)


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check", help="run every shipped scenario against your bridge: its profile, lints and verdicts",
        description=(
            "Run the whole scenario set against any bridge over the wire, as Twilio would call it, and print "
            "what the bridge told OpenAI and how it treats Twilio (its profile), where that departs from what "
            "the real services do (lints), and each scenario's verdict: passed, failed (saying what to fix) "
            "or skipped with the reason when it does not apply to this bridge (e.g. it declares no tools). "
            "Point the bridge at `callsim mock-openai` and pass --mock-url to judge everything; without it "
            "the expectations that need the mock are skipped. Exit 1 if anything failed."
        ),
    )
    p.add_argument("--target", required=True,
                   help="http(s)://host/incoming-call (voice webhook) or ws(s)://host/media-stream")
    p.add_argument("--mock-url", default=None, metavar="URL",
                   help="http://host:port of the `callsim mock-openai` your bridge is pointed at")
    p.add_argument("--scenarios", type=Path, default=None, metavar="DIR_OR_FILE",
                   help="scenario folder or file (default: the shipped set)")
    p.add_argument("--only", action="append", default=None, metavar="NAME", help="run only this scenario (repeat)")
    p.add_argument("--calls", type=AT_LEAST_1, default=None, help="calls per scenario (default: the scenario's)")
    p.add_argument("--auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN"),
                   help="sign the webhook and the stream upgrade like Twilio (default: $TWILIO_AUTH_TOKEN)")
    p.add_argument("--report", type=Path, default=Path("callsim-report"), help="report folder (default ./callsim-report)")
    p.add_argument("--seed", type=int, default=None, help="seed for SIDs and the mock's choices")
    p.add_argument("-v", "--verbose", action="store_true", help="log connection events and warnings")
    p.set_defaults(func=_cmd_check)


def _cmd_check(args: argparse.Namespace) -> int:
    from .demo import run_and_report

    try:
        _check_target(args.target)
    except UsageError as exc:
        print(f"callsim check: {exc}", file=sys.stderr)
        return 2
    scenarios = _selected_scenarios("check", args)
    if scenarios is None:
        return 2
    return run_and_report(scenarios, report_dir=args.report, target=args.target, calls=args.calls,
                          auth_token=args.auth_token, mock_url=args.mock_url, seed=args.seed)


def _add_fixtures(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fixtures", help="list the speech fixtures a call can say",
                       description="List the WAV fixtures from the manifest: name, role, length, text.")
    p.add_argument("--fixtures", type=Path, default=None, help="folder with manifest.json")
    p.set_defaults(func=_cmd_fixtures)


def _cmd_fixtures(args: argparse.Namespace) -> int:
    from .audio.fixtures import FixtureLibrary

    lib = FixtureLibrary(args.fixtures)
    for fx in lib:
        print(f"{fx.name:32} {fx.role:9} {fx.duration_ms / 1000:6.2f} s  {fx.text}")
    return 0


DEFAULT_MOCK_KEY = "sk-callsim-mock"


def _add_mock(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mock-openai",
        help="run the mock OpenAI Realtime server (point any bridge at it)",
        description=(
            "A WebSocket server that behaves like wss://api.openai.com/v1/realtime: session events, "
            "server VAD on the input audio, scripted replies streamed faster than real time, "
            "barge-in cancellation, truncate/cancel rules and errors, tool calls, injected faults. "
            "Introspection and control over HTTP on the same port under /_mock/."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  callsim mock-openai --port 8765 --any-key\n"
            "  callsim mock-openai --reply assistant_long_reply --think-ms uniform:200-600 --seed 1\n"
            "  callsim mock-openai --rule caller_weather_question=tool:get_weather:'{\"city\":\"Paris\"}'\n"
            "  callsim mock-openai --fault drop:after_ms=500 --fault refuse:status=429,sessions=3\n"
            "\n"
            "fault kinds (KIND[:key=value,...]; keys after_ms/after_s, status, code, nth, prob, sessions=1+3):\n"
            "  refuse (HTTP status at the handshake), drop (abort TCP mid-response), close (close frame\n"
            "  mid-response), stall (go silent mid-response), error (error event after after_ms),\n"
            "  expire (session_expired then close), fail_response (response nth ends failed),\n"
            "  slow_start (session.created after after_ms)\n"
            "\n"
            "HTTP: GET /_mock/sessions, GET /_mock/sessions/ID (or 1-based index),\n"
            "      POST /_mock/behaviour[?next_sessions=N[&tag=T]] with behaviour JSON, GET /_mock/health\n"
            "      DELETE /_mock/behaviour?tag=T withdraws the still-queued behaviours tagged T\n"
            "      (answers {\"withdrawn\": n}); each session reports the tag it got as behaviour_tag\n"
            "      (null: the default). Withdraw after a scenario: a call that never opened a session\n"
            "      must not leave its behaviour queued for the next one.\n"
            "      μ-law sessions report line_tags: the caller tags read in the idle line ({tag_hex: frames,\n"
            "      first_rx_ns, last_rx_ns}; the full snapshot adds line_tag_rx [[seq, rx_ns], ...])"
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=PORT, default=8765, help="port (default 8765; 0 = any free port)")
    p.add_argument("--api-key", default=os.environ.get("CALLSIM_MOCK_API_KEY", DEFAULT_MOCK_KEY),
                   help=f"the bearer key clients must send (default $CALLSIM_MOCK_API_KEY or {DEFAULT_MOCK_KEY})")
    p.add_argument("--any-key", action="store_true", help="accept any non-empty bearer key")
    p.add_argument("--dialect", choices=["ga", "beta", "auto"], default="ga",
                   help="ga (default; beta clients get beta_api_shape_disabled + close 4000 as today), "
                        "beta (the historical dialect), auto (beta when the client speaks it)")
    p.add_argument("--model", default="gpt-realtime", help="model reported when the URL names none")
    p.add_argument("--reply", action="append", metavar="FIXTURE", default=None,
                   help="reply fixture, in turn (repeat; the last repeats; default assistant_short_reply)")
    p.add_argument("--rule", action="append", default=[], metavar="HEARD=REPLY",
                   help="when the caller says fixture HEARD, reply with fixture REPLY, or "
                        "HEARD=tool:NAME[:JSON_ARGS[:THEN_REPLY]] to call a tool first")
    p.add_argument("--echo", action="store_true", help="reply with exactly the audio of the caller's last turn")
    p.add_argument("--think-ms", default="300", metavar="SPEC",
                   help="think time before the first audio: MS, uniform:LO-HI or normal:MEAN,SD (default 300)")
    p.add_argument("--realtime-factor", type=bounded_number(float, above=0), default=5.0,
                   help="audio is sent this many times faster than real time (default 5)")
    p.add_argument("--chunk-ms", type=bounded_number(int, minimum=1), default=100, help="audio per delta in ms (default 100)")
    p.add_argument("--max-session-s", type=bounded_number(float, above=0), default=None, metavar="S",
                   help="a session ends here (session_expired, close 1001), as the real one does at 60 "
                        "minutes (default 3600; shorten it to test a bridge's renewal)")
    p.add_argument("--fault", action="append", default=[], metavar="SPEC", help="inject a fault (see below)")
    p.add_argument("--seed", type=int, default=None, help="seed for think times, ids and faults")
    p.add_argument("--behaviour", type=Path, default=None, metavar="FILE",
                   help="behaviour as JSON or TOML (keys of callsim.simulator.mock.behaviour.Behaviour); flags override")
    p.add_argument("--no-validate", action="store_true",
                   help="skip checking every sent event against the openai SDK's types")
    p.add_argument("--no-reactor", action="store_true",
                   help="wake each session's own task per caller message instead of reading all sessions "
                        "from one task (for comparison: a task switch more per message)")
    p.add_argument("--keep-sessions", type=AT_LEAST_1, default=1000, metavar="N",
                   help="records of closed sessions kept for /_mock/sessions (default 1000; a soak keeps few, "
                        "so that the records' memory levels off early and what grows after is a leak)")
    p.add_argument("-v", "--verbose", action="store_true", help="log sessions, errors and faults")
    p.set_defaults(func=_cmd_mock)


def _mock_behaviour(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    import json

    from .mock.behaviour import Behaviour, Fault, Rule, ThinkTime, ToolCall

    base = Behaviour()
    if args.behaviour:
        try:
            text = args.behaviour.read_text()
            if args.behaviour.suffix == ".toml":
                import tomllib

                base = Behaviour.from_dict(tomllib.loads(text))
            else:
                base = Behaviour.from_dict(json.loads(text))
        except OSError as exc:
            raise ValueError(f"--behaviour {args.behaviour}: cannot read it: {exc.strerror or exc}") from None
        except ValueError as exc:  # bad TOML/JSON, or a bad key (DataError names it)
            raise ValueError(f"--behaviour {args.behaviour}: {exc}") from None
    changes: dict = {"think": ThinkTime.parse(args.think_ms, "--think-ms"), "realtime_factor": args.realtime_factor,
                     "chunk_ms": args.chunk_ms}
    if args.reply:
        changes["replies"] = tuple(args.reply)
    if args.echo:
        changes["echo"] = True
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.max_session_s is not None:
        changes["max_session_s"] = args.max_session_s
    if args.fault:
        changes["faults"] = base.faults + tuple(Fault.parse(f, "--fault") for f in args.fault)
    rules = list(base.rules)
    for spec in args.rule:
        heard, sep, what = spec.partition("=")
        if not sep:
            raise ValueError(f"--rule wants HEARD=REPLY or HEARD=tool:NAME[:JSON[:THEN]], got {spec!r}")
        if what.startswith("tool:"):
            parts = what[5:].split(":", 1)
            name = parts[0]
            rest = parts[1] if len(parts) > 1 else ""
            then = "assistant_short_reply"
            args_json = rest
            if rest and not rest.rstrip().endswith("}"):
                args_json, _, then = rest.rpartition(":")
            rules.append(Rule(heard, tool=ToolCall(name, json.loads(args_json) if args_json else {}, then)))
        else:
            rules.append(Rule(heard, reply=what))
    changes["rules"] = tuple(rules)
    return base.with_(**changes)


def _cmd_mock(args: argparse.Namespace) -> int:
    import trio

    from .audio.fixtures import default_library
    from .mock.behaviour import unknown_fixtures

    try:
        behaviour = _mock_behaviour(args)
    except (ValueError, OSError) as exc:
        print(f"callsim mock-openai: {exc}", file=sys.stderr)
        return 2
    if unknown := unknown_fixtures(behaviour):  # a reply naming one would fail mid-session
        print(f"callsim mock-openai: unknown fixture(s) {', '.join(unknown)}; known: "
              f"{', '.join(default_library().names())}", file=sys.stderr)
        return 2
    from .mock.server import (  # slow (the openai types): only once the args are good
        MockConfig,
        MockServer,
    )
    config = MockConfig(host=args.host, port=args.port, api_key=None if args.any_key else args.api_key,
                        any_key=args.any_key, dialect=args.dialect, model=args.model, behaviour=behaviour,
                        validate_outgoing=not args.no_validate, freeze_gc=True, reactor=not args.no_reactor,
                        keep_sessions=max(1, args.keep_sessions))
    server = MockServer(config)

    @asynccontextmanager
    async def serving() -> AsyncIterator[MockServer]:
        async with trio.open_nursery() as n:
            await n.start(server.serve)
            yield server
            n.cancel_scope.cancel()

    def announce(server: MockServer) -> None:
        key = "any key" if args.any_key else f"key {args.api_key}"
        print(f"mock OpenAI Realtime on {server.realtime_url} ({args.dialect}, {key})", flush=True)
        print(f"  point a bridge at it: OPENAI_REALTIME_URL={server.realtime_url} "
              f"OPENAI_API_KEY={'sk-anything' if args.any_key else args.api_key}", flush=True)
        print(f"  sessions: {server.http_url}/_mock/sessions", flush=True)

    return serve_until_signal("callsim mock-openai", f"{args.host}:{args.port}", serving, announce,
                              lambda: f"stopped after {server.session_count} session(s)")


def _add_bridge(sub: argparse._SubParsersAction) -> None:
    # The bridge is a separate product: the CLI hands over to it by entry point so the
    # harness never imports bridge code (design.md rule 1).
    p = sub.add_parser("bridge", help="run the Twilio <-> OpenAI Realtime bridge (same as python -m callsim.bridge)",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_bridge)


def _cmd_bridge(args: argparse.Namespace) -> int:
    os.environ["CALLSIM_PROG"] = "callsim bridge"
    os.execv(sys.executable, [sys.executable, "-m", "callsim.bridge", *args.rest])
    return 0  # not reached


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="callsim",
        description="Test and load-test a Twilio <-> OpenAI Realtime voice agent without a phone.",
    )
    parser.add_argument("--version", action="version", version=f"callsim {__version__}")
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    _add_demo(sub)
    _add_call(sub)
    _add_mock(sub)
    _add_bridge(sub)
    _add_check(sub)
    _add_fixtures(sub)
    add_twilio_emulator(sub)
    from .dial.command import add_parser as _add_dial

    _add_dial(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bridge"]:  # hand every flag, --help included, to the bridge itself
        return _cmd_bridge(argparse.Namespace(rest=argv[1:]))
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad flag (one line already printed)
        return exc.code if isinstance(exc.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C where no run is watching for it (loading, parsing): nothing to keep
        print(f"callsim {args.command}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
