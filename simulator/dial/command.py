"""``callsim dial``: the subcommand's flags and what it does with them.

Every input is checked before anything is sent (exit 2, one line); ``--dry-run`` prints the
request and sends nothing; a scenario a line cannot play (it presses keys:
:func:`~.line.cannot_play`) is skipped with the reason before any call is placed (exit 0, a
report of the skipped scenario); otherwise the call is placed, callsim waits for Twilio's media
stream, and the call is hung up over REST on every exit. Exit status: 0 ok, 1 failed, 2 bad
input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..cli import UsageError
from ..cli_support import PORT, bounded_number
from .request import MAX_TIME_LIMIT_S, TWILIO_API_URL

DEFAULT_PORT = 8770  # not 8765 (callsim mock-openai) nor 8766 (callsim twilio-emulator): all three run side by side offline
DEFAULT_MAX_DURATION_S = 300
DEFAULT_STREAM_TIMEOUT_S = 30.0
#: after the hang-up, how long the report waits for the call's final status callback
FINAL_STATUS_WAIT_S = 5.0
#: the note of a call judged after Ctrl-C or --max-duration-s cut it short
CUT_SHORT = ("the call was cut short (Ctrl-C or --max-duration-s) before the scenario ended: judged on what it "
             "had done by then, without Twilio's records of the call")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dial", help="run a scenario through a real Twilio call to a real number",
        description=(
            "Place a real call with Twilio's REST API (calls.create) whose TwiML is <Connect><Stream> back to "
            "callsim at --public-url, wait for Twilio's media stream, and hang the call up over REST on every "
            "exit (Ctrl-C included). Callsim serves Twilio's media stream on --host:--port (the public URL must "
            "reach it, e.g. through a tunnel), plays the scenario into the call, measures on the line and writes "
            "the same reports as `callsim call` to --report. --dry-run prints what would be sent. "
            "Exit status: 0 ok, 1 failed, 2 bad input, 130 interrupted."
        ),
    )
    p.add_argument("--to", required=True, help="the number to call (E.164, e.g. +15551234567): your agent's number")
    p.add_argument("--from", dest="from_", required=True,
                   help="the caller ID (E.164): a number of your Twilio account")
    p.add_argument("--scenario", required=True, metavar="NAME_OR_FILE",
                   help="the scenario to play (fixtures/scenarios/NAME.toml or a path)")
    p.add_argument("--public-url", required=True, metavar="URL",
                   help="wss://HOST/PATH (or https://) where Twilio reaches callsim's stream server: "
                        "a tunnel or a public host forwarding to --host:--port")
    p.add_argument("--host", default="127.0.0.1", help="where callsim's stream server listens (default 127.0.0.1)")
    p.add_argument("--port", type=PORT, default=DEFAULT_PORT,
                   help=f"port of callsim's stream server (default {DEFAULT_PORT})")
    p.add_argument("--twilio-api-url", default=TWILIO_API_URL, metavar="URL",
                   help=f"Twilio's REST API (default {TWILIO_API_URL}); point it at `callsim twilio-emulator` "
                        "to dial offline")
    p.add_argument("--account-sid", default=os.environ.get("TWILIO_ACCOUNT_SID"),
                   help="Twilio account SID (default $TWILIO_ACCOUNT_SID)")
    p.add_argument("--auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN"),
                   help="Twilio auth token (default $TWILIO_AUTH_TOKEN)")
    p.add_argument("--max-duration-s", type=bounded_number(int, minimum=1, maximum=MAX_TIME_LIMIT_S),
                   default=DEFAULT_MAX_DURATION_S,
                   help=f"hard cap on the call, enforced by Twilio too (TimeLimit; default {DEFAULT_MAX_DURATION_S})")
    p.add_argument("--stream-timeout-s", type=bounded_number(float, above=0), default=DEFAULT_STREAM_TIMEOUT_S,
                   help=f"hang up if Twilio's media stream has not arrived after this long "
                        f"(default {DEFAULT_STREAM_TIMEOUT_S:g})")
    p.add_argument("--record", action="store_true", help="ask Twilio for a dual-channel recording of the call")
    p.add_argument("--report", type=Path, default=Path("callsim-report"),
                   help="report folder (default ./callsim-report): report.json, junit.xml, report.html, recordings")
    p.add_argument("--dry-run", action="store_true", help="print what would be sent to Twilio and exit; sends nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="log every REST request")
    p.set_defaults(func=cmd_dial)


def _request(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The checked request and API URL, or :class:`UsageError` naming the first bad input."""
    from ..scenario import ScenarioError, find_scenario
    from .request import DialInputError, DialRequest, check_account_sid, check_api_url

    try:
        api_url = check_api_url(args.twilio_api_url)
        request = DialRequest.checked(to=args.to, from_=args.from_, scenario=args.scenario,
                                      public_url=args.public_url, max_duration_s=args.max_duration_s,
                                      record=args.record, stream_timeout_s=args.stream_timeout_s)
    except DialInputError as exc:
        raise UsageError(str(exc)) from None
    try:
        scenario = find_scenario(args.scenario)
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None
    try:  # credentials last: a bad number or scenario is worth knowing about first
        if not args.dry_run:
            if not args.account_sid or not args.auth_token:
                missing = [name for name, v in (("TWILIO_ACCOUNT_SID", args.account_sid),
                                                ("TWILIO_AUTH_TOKEN", args.auth_token)) if not v]
                raise DialInputError(f"no Twilio credentials: set ${' and $'.join(missing)} "
                                     "(or --account-sid/--auth-token)")
            check_account_sid(args.account_sid)
    except DialInputError as exc:
        raise UsageError(str(exc)) from None
    # the stream parameter names the scenario as the stream server will look it up
    return api_url, replace(request, scenario=scenario.name), scenario


def _not_dialled(args: argparse.Namespace, scenario: Any, why: str) -> int:
    """A scenario ``callsim dial`` cannot play is skipped with the reason before any call is placed
    (exit 0), as a scenario that does not apply is skipped elsewhere: a suite that dials every
    scenario gets a skipped test case in junit.xml rather than a call judged on keys never pressed."""
    from .verdict import not_dialled, outcome, write_dial_report

    run = not_dialled(scenario, why)
    line = outcome(run)[1]
    if not args.dry_run:
        paths = write_dial_report(args.report, run, {"call_sid": None, "placed": False},
                                  " ".join(["callsim", *sys.argv[1:]]))
        print(f"callsim dial: report: {paths['json']}", file=sys.stderr)
    print(f"callsim dial: no call placed: {line}")
    return 0


def cmd_dial(args: argparse.Namespace) -> int:
    try:
        api_url, request, scenario = _request(args)
    except UsageError as exc:
        print(f"callsim dial: {exc}", file=sys.stderr)
        return 2
    from .line import cannot_play

    if (why := cannot_play(scenario.steps)) is not None:
        return _not_dialled(args, scenario, why)
    if args.dry_run:
        from .request import dry_run_text

        print(dry_run_text(request, api_url=api_url, account_sid=args.account_sid, auth_token=args.auth_token,
                           listen=f"{args.host}:{args.port}"))
        return 0
    import trio

    from ..interrupt import EXIT_INTERRUPTED, CtrlC
    from .driver import TwilioRest, run_dial
    from .plan import DialPlan
    from .line import greeting_ms
    from .stream_server import FINAL_STATUSES, DialStreamServer
    from .verdict import dial_summary, judge_line, outcome, write_dial_report

    def say(line: str) -> None:
        print(f"callsim dial: {line}", file=sys.stderr, flush=True)

    plan = DialPlan(request)
    rest = TwilioRest(args.account_sid, args.auth_token, api_url)
    ctrl_c = CtrlC(on_first=lambda: say("interrupted: hanging up (Ctrl-C again to quit at once; Twilio's "
                                        f"TimeLimit of {request.max_duration_s} s still ends the call)"))

    judged: list = []  # the judged run, reported once the call has ended (its final status included)
    records: dict[str, Any] = {}  # Twilio's records of the call, read when an expectation needs them

    async def read_records() -> None:
        from .driver import RestFailure
        from .twilio_records import dialled_from

        if plan.sid is None:
            return
        try:
            records["calls"] = await trio.to_thread.run_sync(
                lambda: rest._call(lambda: dialled_from(rest.client, plan.sid)))
        except RestFailure as exc:
            records["error"] = str(exc)
            say(f"could not read Twilio's records of the call: {exc}")

    def judge(result, line, interrupted: bool = False):  # type: ignore[no-untyped-def]
        run = judge_line(scenario, result, line, twilio_calls=records.get("calls"), records_error=records.get("error"))
        if interrupted:  # judged on what the call did before it was cut: reported as interrupted, not passed
            run.interrupted = True
            run.notes.append(CUT_SHORT)
        ok, why = outcome(run)
        for e in run.expectations:
            say(f"  {e.status}: {e.name}: {e.message}")
        greeting = greeting_ms(line)
        if greeting is not None:
            say(f"  greeting latency {greeting:.0f} ms (answer → the agent's first audio)")
        judged.append((run, line))
        return ok, why

    def report() -> None:
        run, line = judged[0]
        dial = dial_summary(line, server.statuses, None)
        if line.stopped_by_twilio:
            say("the far end hung up (Twilio ended the stream with stop)")
        dial["final_status"] = plan.final_status
        if not any(s.get("status") in FINAL_STATUSES for s in server.statuses):
            run.notes.append(f"no final status callback within {FINAL_STATUS_WAIT_S:g} s of the hang-up "
                             f"(is {request.public_url}'s host forwarding /dial-status to callsim?)")
        paths = write_dial_report(args.report, run, dial, " ".join(["callsim", *sys.argv[1:]]),
                                  interrupted=run.interrupted)
        say(f"report: {paths['json']}")

    from ..scenario import Expectations

    needs_records = any(name in Expectations.NEEDS_TWILIO for name, _ in scenario.expect.items())
    server = DialStreamServer(request, scenario, args.auth_token, call_sid=lambda: plan.sid, say=say, judge=judge,
                              before_judge=read_records if needs_records else None, host=args.host, port=args.port)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(server.serve)
            except OSError as exc:
                say(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
                raise SystemExit(1) from None
            await run_dial(plan, rest, server, say)
            if judged and plan.sid is not None:  # Twilio posts `completed` after the hang-up: wait, bounded
                await server.wait_final_status(FINAL_STATUS_WAIT_S)
            nursery.cancel_scope.cancel()

    try:
        with ctrl_c.exits_at_once():
            trio.run(ctrl_c.run, main)
    finally:
        # Ctrl-C or --max-duration-s cancelled the call before it was judged: judge what it did, without
        # Twilio's records (read only after a call that ended), and report it as interrupted
        if not judged and server.result is not None and server.line is not None:
            if needs_records:
                records.setdefault("error", "the dial was interrupted before Twilio's records of the call were read")
            judge(server.result, server.line, interrupted=True)
        if judged:
            report()
    if request.record and plan.sid and server.line is not None and not ctrl_c.interrupted:
        from .recording import attach_to_report, fetch_recording

        attach_to_report(args.report, fetch_recording(rest.client, (args.account_sid, args.auth_token), plan.sid,
                                                      args.report, say=say))
    finish = plan.finish
    if finish is None:  # cancelled before the plan could finish (cannot happen with a shielded hang-up)
        print(f"callsim dial: interrupted; call {plan.sid or '(none)'} status {plan.final_status or 'unknown'}")
        return EXIT_INTERRUPTED
    print(f"callsim dial: {finish.summary}")
    return EXIT_INTERRUPTED if ctrl_c.interrupted else finish.exit_code
