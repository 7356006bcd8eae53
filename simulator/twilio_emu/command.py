"""``callsim twilio-emulator``: serve the emulator's REST API and status callbacks until Ctrl-C.

Kept out of ``cli.py`` so that the command line only names the subcommand; trio, hypercorn and
httpx are imported once the flags are good.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys

from ..caller.sids import ACCOUNT_SID_RE
from ..cli_support import PORT, serve_until_signal
from .numbers import PhoneNumber, parse_number
from .tunnels import Tunnel, parse_tunnel

PROG = "callsim twilio-emulator"
# A fixed, obviously fake account: the twilio client only needs SID and token to match.
DEFAULT_ACCOUNT_SID = "AC" + "0" * 31 + "1"


def _account_sid(text: str) -> str:
    if not ACCOUNT_SID_RE.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an account SID (AC followed by 32 hex digits)")
    return text


def _number(text: str) -> PhoneNumber:
    try:
        return parse_number(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _tunnel(text: str) -> Tunnel:
    try:
        return parse_tunnel(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "twilio-emulator",
        help="serve an offline stand-in for Twilio: Calls REST API, call legs with Media Streams, callbacks",
        description=(
            "Serve a local stand-in for Twilio's Calls REST API (create, fetch, list, update, with "
            "Twilio's JSON and error codes, HTTP Basic auth) and the signed status callbacks calls ask "
            "for. Point the twilio client (or your bridge's REST calls) at it with "
            "client.api.base_url = URL. A call created to a --number rings that number: its voice "
            "webhook gets a signed POST, both legs run their TwiML (<Connect><Stream>, <Say>, <Pause>, "
            "<Hangup>, <Reject>, <Redirect>) and the audio is carried between them in real time. A call "
            "to any other number fails. --tunnel lets Twilio's public URLs reach local servers: the "
            "emulator signs the public URL and connects to the local origin."
        ),
        epilog=(
            "examples:\n"
            "  callsim twilio-emulator --port 8766\n"
            "  callsim twilio-emulator --number +15550001111=http://127.0.0.1:5050/incoming-call\n"
            "  callsim twilio-emulator --number +15550001111=https://bridge.example/incoming-call \\\n"
            "      --tunnel https://bridge.example=http://127.0.0.1:5050 --tunnel wss://dial.example=ws://127.0.0.1:7000\n"
            "then, in Python:\n"
            "  client = twilio.rest.Client(ACCOUNT_SID, AUTH_TOKEN)\n"
            "  client.api.base_url = 'http://127.0.0.1:8766'"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; the emulator answers anyone who has the token)")
    p.add_argument("--port", type=PORT, default=8766, help="port (default 8766; 0 = any free port)")
    p.add_argument("--account-sid", type=_account_sid, default=DEFAULT_ACCOUNT_SID,
                   help=f"the emulated account's SID (default {DEFAULT_ACCOUNT_SID})")
    p.add_argument("--auth-token", default=None,
                   help="its auth token (default: $TWILIO_AUTH_TOKEN, else a new random one, printed)")
    p.add_argument("--number", type=_number, action="append", default=[], metavar="E164=URL",
                   help="an emulated phone number and its voice webhook, e.g. "
                        "+15550001111=http://127.0.0.1:5050/incoming-call (repeatable)")
    p.add_argument("--tunnel", type=_tunnel, action="append", default=[], metavar="PUBLIC=LOCAL",
                   help="sign requests for PUBLIC_ORIGIN, send them to LOCAL_ORIGIN, e.g. "
                        "https://bridge.example=http://127.0.0.1:5050 (also maps wss://bridge.example to "
                        "ws://127.0.0.1:5050; webhooks, streams and status callbacks; repeatable)")
    p.add_argument("-v", "--verbose", action="store_true", help="log each request and callback")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from .rest import RestCore
    from .server import serve_emulator
    from .tunnels import Tunnels

    numbers: list[PhoneNumber] = args.number
    seen: set[str] = set()
    for n in numbers:
        if n.number in seen:
            print(f"{PROG}: {n.number} is given twice", file=sys.stderr)
            return 2
        seen.add(n.number)
    try:
        tunnels = Tunnels(args.tunnel)
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    if args.auth_token:
        token, told = args.auth_token, "given with --auth-token"
    elif os.environ.get("TWILIO_AUTH_TOKEN"):
        # read from the environment: not echoed, CI logs are read by many
        token, told = os.environ["TWILIO_AUTH_TOKEN"], "from $TWILIO_AUTH_TOKEN"
    else:
        token = secrets.token_hex(16)
        told = token
    core = RestCore(args.account_sid, token, clock=time.time, numbers=numbers)

    def announce(url: str) -> None:
        print(f"Twilio emulator on {url} (account {args.account_sid}, auth token {told}); "
              f"point the twilio client at it: client.api.base_url = \"{url}\"", flush=True)
        for n in numbers:
            print(f"  number {n.number} -> {n.voice_url}", flush=True)
        for t in args.tunnel:
            print(f"  tunnel {t.public} -> {t.local}", flush=True)

    return serve_until_signal(PROG, f"{args.host}:{args.port}",
                              lambda: serve_emulator(core, host=args.host, port=args.port, tunnels=tunnels), announce,
                              lambda: f"stopped after {len(core.store.calls)} call(s)")
