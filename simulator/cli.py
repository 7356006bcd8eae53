"""``callsim`` command line.

Subcommands are added as the harness grows; each has its own ``--help``.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from pathlib import Path

from . import __version__


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
                        "see `callsim fixtures`")
    p.add_argument("--out", type=Path, default=Path("callsim-out"), help="output folder (default ./callsim-out)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="extra start.customParameters (as <Parameter> would give)")
    p.add_argument("--from", dest="from_", default="+15005550006", help="caller number (From)")
    p.add_argument("--to", default="+15005550001", help="called number (To)")
    p.add_argument("--quiet-ms", type=int, default=800,
                   help="a reply has ended after this much silence (default 800)")
    p.add_argument("--reply-timeout-ms", type=int, default=15000,
                   help="give up waiting for a reply after this long (default 15000)")
    p.add_argument("--max-duration-s", type=float, default=300.0, help="hang up after this long whatever happens")
    p.add_argument("--impair", default="", metavar="SPEC",
                   help="seeded send-side impairments, e.g. jitter=5,loss=0.01,bunch=0.02x5,gap=0.01x40,seed=7")
    p.add_argument("--seed", type=int, default=None, help="seed for SIDs (reproducible runs)")
    p.add_argument("--fixtures", type=Path, default=None,
                   help="folder with manifest.json (default: the bundled fixtures/audio or $CALLSIM_FIXTURES)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every warning and connection event")
    p.set_defaults(func=_cmd_call)


def _cmd_call(args: argparse.Namespace) -> int:
    import trio

    from .caller_trio import place_call
    from .fixtures import FixtureLibrary
    from .impairments import Impairments
    from .recording import pacing_stats, write_call
    from .script import conversation
    from .utterances import UtteranceBank
    from .webhook import CallParties

    try:
        impairments = Impairments.parse(args.impair)
    except ValueError as exc:
        print(f"callsim call: {exc}", file=sys.stderr)
        return 2
    params = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            print(f"callsim call: --param wants NAME=VALUE, got {item!r}", file=sys.stderr)
            return 2
        params[name] = value
    bank = UtteranceBank(FixtureLibrary(args.fixtures) if args.fixtures else None)
    says = args.say or ["caller_greeting"]
    unknown = [s for s in says if s not in bank]
    if unknown:
        print(f"callsim call: unknown fixture(s) {', '.join(unknown)}; known: "
              f"{', '.join(bank.library.names())}", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    script = conversation(says, quiet_ms=args.quiet_ms, timeout_ms=args.reply_timeout_ms)
    print(f"calling {args.target} (saying {', '.join(says)}) ...", file=sys.stderr)
    result = trio.run(lambda: place_call(
        args.target, script, auth_token=args.auth_token, bank=bank, impairments=impairments,
        parties=CallParties.new(rng, from_=args.from_, to=args.to), custom_parameters=params,
        max_duration_ms=int(args.max_duration_s * 1000), rng=rng,
    ))
    paths = write_call(result, args.out)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(result.summary_line())
    pacing = pacing_stats(result)
    if pacing:
        print(f"pacing: {pacing['frames']} frames, lateness p50 {pacing['lateness_ms_p50']:.2f} ms, "
              f"p99 {pacing['lateness_ms_p99']:.2f} ms, drift {pacing['drift_frames']:.2f} frames")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0 if result.ok else 1


def _add_fixtures(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fixtures", help="list the speech fixtures a call can say",
                       description="List the WAV fixtures from the manifest: name, role, length, text.")
    p.add_argument("--fixtures", type=Path, default=None, help="folder with manifest.json")
    p.set_defaults(func=_cmd_fixtures)


def _cmd_fixtures(args: argparse.Namespace) -> int:
    from .fixtures import FixtureLibrary

    lib = FixtureLibrary(args.fixtures)
    for fx in lib:
        print(f"{fx.name:32} {fx.role:9} {fx.duration_ms / 1000:6.2f} s  {fx.text}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="callsim",
        description="Test and load-test a Twilio <-> OpenAI Realtime voice agent without a phone.",
    )
    parser.add_argument("--version", action="version", version=f"callsim {__version__}")
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    _add_call(sub)
    _add_fixtures(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
