"""``callsim bridge mcp`` (``python -m callsim.bridge mcp``): the conversation history over MCP on
stdio, the command a desktop assistant's config names.

It reads the store the bridge writes (``DATABASE_PATH`` from the environment or ``.env``, as the
bridge does, or ``--database``), read-only: it can run while the bridge takes calls.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from .settings import Settings, describe_errors, env_name


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Serve the bridge's conversation history to an AI assistant over MCP on stdin/stdout "
                    "(tools: list_conversations, search_conversations, get_conversation; resources: the "
                    "100 newest conversations as conversation://CA...). The store is opened read-only.",
    )
    p.add_argument("--database", type=Path, metavar="PATH",
                   help="the bridge's SQLite store (default: DATABASE_PATH, as the bridge reads it)")
    p.add_argument("--env-file", default=".env", help="dotenv file to read (default .env)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging (on stderr)")
    return p


def main(argv: list[str], prog: str = "callsim bridge mcp") -> int:
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = args.database
    if path is None:
        env_file = args.env_file if os.path.exists(args.env_file) else None
        try:
            path = Settings(_env_file=env_file).database_path  # type: ignore[call-arg]
        except ValidationError as exc:
            print(f"{prog}: {describe_errors(exc, env_name)}", file=sys.stderr)
            return 2
    from .mcp_server import stdio_main  # the SDK is imported only by the command that serves it

    return stdio_main(str(path), prog=prog)
