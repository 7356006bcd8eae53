"""Serve the bridge (``callsim bridge``, ``python -m callsim.bridge``): :mod:`.frontdoor` on one port,
hypercorn's trio worker for HTTP, the lean WebSocket for ``/media-stream``."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import socket
import sys
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, AsyncIterator, NoReturn
from urllib.parse import urlsplit

import trio
from hypercorn.config import Config
from pydantic import ValidationError

from .app import BridgeApp
from .frontdoor import serve
from .settings import Settings, SettingsError, check_keys, describe_errors, env_name

log = logging.getLogger("callsim.bridge")


def hypercorn_config(settings: Settings, *, port: int | None = None) -> Config:
    cfg = Config()
    cfg.bind = [f"{settings.host}:{settings.port if port is None else port}"]
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("hypercorn.error")
    cfg.websocket_max_message_size = 16 * 2**20
    cfg.keep_alive_timeout = settings.http_keep_alive_timeout_s
    if settings.tls_cert_file and settings.tls_key_file:
        cfg.certfile = str(settings.tls_cert_file)
        cfg.keyfile = str(settings.tls_key_file)
    return cfg


@asynccontextmanager
async def running_bridge(settings: Settings, *, port: int | None = None,
                         **app_kwargs: Any) -> AsyncIterator[tuple[BridgeApp, str]]:
    """Start the bridge in this trio run; yields (app, base URL).

    Port 0 picks a free port; the socket is bound here first so the public URL
    — which the TwiML and the signature checks use — can name the real port
    before the first request.
    """
    sock, settings = _bind(settings, settings.port if port is None else port)
    bound = settings.port
    app = BridgeApp(settings, **app_kwargs)
    cfg = hypercorn_config(settings, port=bound)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve, app, cfg, sock))
            try:
                yield app, f"http://{settings.host}:{bound}"
            finally:
                nursery.cancel_scope.cancel()
    finally:
        try:
            sock.close()
        except OSError:
            pass


def _bind(settings: Settings, port: int) -> tuple[socket.socket, Settings]:
    """Bind the listening socket; with port 0, put the real port into the settings
    (and into the public URL, unless one was configured)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, port))
    bound = sock.getsockname()[1]
    if port == 0 or bound != settings.port:
        update: dict[str, Any] = {"port": bound}
        if settings.public_url in (f"http://{settings.host}:0", f"http://{settings.host}:{settings.port}"):
            update["public_url"] = f"http://{settings.host}:{bound}"
        settings = settings.model_copy(update=update)
    return sock, settings


class _Parser(argparse.ArgumentParser):
    """A bad flag is one line on stderr (exit 2), not the usage block: CI logs show it whole."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message.removeprefix('argument ')} (see {self.prog} --help)\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if port < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {port}")
    if port > 65535:
        raise argparse.ArgumentTypeError(f"must be at most 65535, got {port}")
    return port


#: the flags that override a setting, for naming the one that is wrong
FLAGS = {"host": "--host", "port": "--port", "public_url": "--public-url", "openai_realtime_url": "--openai-url",
         "audio_mode": "--audio-mode", "openai_dialect": "--dialect"}


def build_parser(prog: str = "callsim bridge") -> argparse.ArgumentParser:
    p = _Parser(
        prog=prog,
        description=(
            "Run the Twilio Media Streams <-> OpenAI Realtime bridge under hypercorn (trio). "
            "Configuration comes from the environment and .env (see README: OPENAI_API_KEY, "
            "OPENAI_REALTIME_URL, PUBLIC_URL, TWILIO_AUTH_TOKEN, AUDIO_MODE, ...); the flags "
            "below override the most common ones."
        ),
        epilog=f"`{prog} mcp` serves the conversation history to an AI assistant over MCP on stdio "
               f"(see `{prog} mcp --help`).",
    )
    p.add_argument("--host", help="address to bind (HOST; default 127.0.0.1)")
    p.add_argument("--port", type=_port, help="port (PORT; default 8080)")
    p.add_argument("--public-url", help="URL Twilio reaches this bridge at (PUBLIC_URL)")
    p.add_argument("--openai-url", help="Realtime WebSocket URL, e.g. the mock's (OPENAI_REALTIME_URL)")
    p.add_argument("--audio-mode", choices=["passthrough", "transcode"], help="AUDIO_MODE")
    p.add_argument("--dialect", choices=["ga", "beta"], help="OPENAI_DIALECT")
    p.add_argument("--env-file", default=".env", help="dotenv file to read (default .env)")
    p.add_argument("--print-settings", action="store_true", help="print the effective settings (secrets hidden) and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None, prog: str = "callsim bridge") -> int:
    """Start-up problems (bad settings, a port in use, no API key for OpenAI) are one line on
    stderr and exit status 2, before anything listens."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["mcp"]:
        from .mcp_cli import main as mcp_main

        return mcp_main(argv[1:], prog=f"{prog} mcp")
    args = build_parser(prog).parse_args(argv)
    overrides = {k: v for k, v in {
        "host": args.host, "port": args.port, "public_url": args.public_url,
        "openai_realtime_url": args.openai_url, "audio_mode": args.audio_mode, "openai_dialect": args.dialect,
    }.items() if v is not None}
    env_file = args.env_file if os.path.exists(args.env_file) else None
    try:
        settings = Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        where = f" (environment or {env_file})" if env_file else ""
        name = lambda f: FLAGS[f] if f in overrides else env_name(f) + where  # noqa: E731
        return _refuse(prog, describe_errors(exc, name))
    logging.basicConfig(level=logging.DEBUG if args.verbose else getattr(logging, settings.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.print_settings:
        for k, v in settings.redacted().items():
            print(f"{k} = {v}")
        return 0
    # No key: OpenAI itself refuses every session, so starting would only turn each call into the
    # apology; another URL (the mock, a proxy that adds the key) may not need one: a warning.
    keyless = not settings.openai_api_key.get_secret_value()
    if keyless and urlsplit(settings.openai_realtime_url).hostname == "api.openai.com":
        return _refuse(prog, "OPENAI_API_KEY is not set: OpenAI refuses a session without it, so every call "
                             "would end in the apology (set it, or point --openai-url at `callsim mock-openai`)")
    try:
        sock, settings = _bind(settings, settings.port)
    except OSError as exc:
        return _refuse(prog, f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc} "
                             f"(choose another with --port or PORT)")
    if keyless:
        log.warning("OPENAI_API_KEY is not set: %s must accept a session without a key, or every call ends "
                    "in the apology", settings.openai_realtime_url)
    app = BridgeApp(settings)
    # Tens of thousands of objects are alive after the imports; a full collection over them
    # pauses every call for tens of ms (loadtests/capacity.py shows it as latency). Freeze them.
    gc.collect()
    gc.freeze()
    log.info("bridge on %s:%d, public URL %s, OpenAI %s (%s, %s)", settings.host, settings.port,
             settings.public_url, settings.openai_realtime_url, settings.openai_dialect, settings.audio_mode)
    try:
        trio.run(partial(serve, app, hypercorn_config(settings), sock, shutdown_trigger=partial(_stopping, app)))
    except* KeyboardInterrupt:  # a Ctrl-C at start-up, or a second one during the graceful stop
        pass
    log.info("bridge stopped")
    return 0


def _refuse(prog: str, why: str) -> int:
    print(f"{prog}: {why}", file=sys.stderr)
    return 2


async def _stopping(app: BridgeApp) -> None:
    """The shutdown trigger: a signal, then the console feeds are ended at once — calls get the
    grace period, an open console must not hold the stop for it."""
    await _until_signalled()
    app.feed.close()


async def _until_signalled() -> None:
    """hypercorn's shutdown trigger: the first SIGINT or SIGTERM starts a graceful stop.

    Taking the signals as messages (rather than trio's KeyboardInterrupt, raised
    wherever the main thread happens to be) means a call's handler is never torn
    mid-write. hypercorn then stops accepting and gives live calls
    ``graceful_timeout`` to end; a second Ctrl-C (the default handler is back by
    then) stops at once.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("%s: stopping; new connections are refused, live calls get a grace period",
                     signal.Signals(signum).name)
            return


_EMBEDDED_DEFAULTS: dict[str, Any] = {"openai_api_key": "sk-callsim-embedded", "twilio_auth_token": None,
                                      "port": 0, "public_url": ""}


@asynccontextmanager
async def embedded(config: dict[str, Any], **app_kwargs: Any) -> AsyncIterator[str]:
    """A bridge for the harness to run in-process: settings as a dict in, base URL out.

    This is the generic hook ``callsim demo`` and the pytest plugin load by name
    (``callsim.bridge.server:embedded``), so the harness never imports the bridge: any
    bridge offering the same hook can be measured the same way. Hermetic: no
    ``.env`` is read, secrets default to off, the port is picked freely.
    """
    settings = Settings(_env_file=None, **{**_EMBEDDED_DEFAULTS, **config})  # type: ignore[call-arg]
    async with running_bridge(settings, port=0, **app_kwargs) as (_app, base):
        yield base


def check_embedded_config(config: dict[str, Any]) -> None:
    """What the harness calls on every scenario's ``[bridge]`` table before it starts anything (the
    hook's optional ``check_config``): a ValueError whose message is one line naming the setting."""
    check_keys(config)
    try:
        Settings(_env_file=None, **{**_EMBEDDED_DEFAULTS, **config})  # type: ignore[call-arg]
    except ValidationError as exc:
        raise SettingsError(describe_errors(exc, str)) from None


embedded.check_config = check_embedded_config  # type: ignore[attr-defined]
