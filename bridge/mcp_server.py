"""The conversation history as an MCP server, for AI assistants (the ``mcp`` SDK, under trio).

Tools: ``list_conversations`` (the newest), ``search_conversations`` (by phone number, date range,
words said) and ``get_conversation`` (one call whole: numbers, times, status, the transcript with
an interrupted reply cut to what the caller heard, and the tool calls when the store holds any).
Resources: the :data:`RECENT` most recent conversations as ``conversation://CA…``, each read as
the same JSON ``get_conversation`` returns.

Two transports share :func:`build_server`:

* stdio, ``callsim bridge mcp`` (:func:`run_stdio`): the desktop assistant starts it; it opens the
  bridge's SQLite store read-only, so it runs beside a live bridge and cannot change it;
* streamable HTTP at ``/mcp`` inside the bridge (:mod:`.mcp_http`), behind ``CONSOLE_TOKEN``.

Everything a tool answers is JSON-ready dicts; the store's blocking reads run in a worker
thread (:class:`.store.AsyncStore`).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp_types import Resource as MCPResource

from .store import AsyncStore

log = logging.getLogger("callsim.bridge.mcp")

#: how many of the newest conversations are listed as resources
RECENT = 100
SCHEME = "conversation"
INSTRUCTIONS = (
    "Phone conversations handled by a callsim bridge (Twilio calls answered by an OpenAI Realtime "
    "assistant). Find calls with search_conversations (phone number, date range, words said) or "
    "list_conversations, then read one with get_conversation or the conversation://CA... resource. "
    "Times are UTC ISO 8601; phone numbers are E.164."
)


def conversation_uri(call_sid: str) -> str:
    return f"{SCHEME}://{call_sid}"


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    return {"call_sid": row["call_sid"], "uri": conversation_uri(row["call_sid"]),
            "from_number": row["from_number"], "to_number": row["to_number"],
            "started_at": row["started_at"], "ended_at": row["ended_at"], "status": row["status"],
            "utterance_count": row["utterance_count"]}


def _full(conv: dict[str, Any]) -> dict[str, Any]:
    transcript = [{"role": u["role"], "text": u["text"], "at": u["created_at"], "interrupted": u["truncated"],
                   **({"heard_ms": u["audio_end_ms"]} if u["truncated"] else {})}
                  for u in conv["utterances"]]
    return {"call_sid": conv["call_sid"], "stream_sid": conv["stream_sid"], "from_number": conv["from_number"],
            "to_number": conv["to_number"], "started_at": conv["started_at"], "ended_at": conv["ended_at"],
            "status": conv["status"], "transcript": [t for t in transcript if t["role"] != "tool"],
            "tool_calls": [t for t in transcript if t["role"] == "tool"]}


class ConversationServer(MCPServer):
    """:class:`MCPServer` whose resource list is read from the store at each request (the SDK's
    own list is fixed at registration); reading one goes through the ``conversation://`` template."""

    def __init__(self, store: AsyncStore, **kwargs: Any) -> None:
        # The SDK calls logging.basicConfig (a rich handler on the root logger) when it is built;
        # the bridge's logging is its host's to set, so that call is made a no-op here.
        root = logging.getLogger()
        guard = logging.NullHandler() if not root.handlers else None
        if guard is not None:
            root.addHandler(guard)
        try:
            super().__init__(**kwargs)
        finally:
            if guard is not None:
                root.removeHandler(guard)
        self.conversations = store

    async def list_resources(self) -> list[MCPResource]:
        rows = await self.conversations.list_conversations(RECENT)
        return [*await super().list_resources(), *(MCPResource(
            uri=conversation_uri(r["call_sid"]),
            name=r["call_sid"],
            title=f"Call from {r['from_number'] or 'unknown'} at {r['started_at']}",
            description=f"{r['status']}, {r['utterance_count']} utterance(s), to {r['to_number'] or 'unknown'}",
            mime_type="application/json",
        ) for r in rows)]


def build_server(store: AsyncStore) -> ConversationServer:
    """The MCP server over ``store`` (the bridge's own, or a read-only one for stdio)."""
    server = ConversationServer(store, name="callsim-bridge", title="callsim bridge conversations",
                                instructions=INSTRUCTIONS, log_level="WARNING")

    @server.tool()
    async def list_conversations(limit: int = 20) -> dict[str, Any]:
        """The most recent phone conversations, newest first (at most `limit`, up to 1000): call SID,
        caller and called numbers, start and end (UTC), status, number of utterances."""
        rows = await store.list_conversations(max(1, min(limit, 1000)))
        return {"conversations": [_summary(r) for r in rows]}

    @server.tool()
    async def search_conversations(phone_number: str | None = None, since: str | None = None,
                                   until: str | None = None, text: str | None = None,
                                   limit: int = 20) -> dict[str, Any]:
        """Find phone conversations, newest first. All filters are optional and combine:
        phone_number: digits found in the caller's or the called number ("+14155550100", "555 0100");
        since / until: ISO 8601 date or datetime bounding when the call started (UTC unless a zone
        is given; a bare date in `until` includes that day); text: words said by either side
        (case-insensitive substring). Returns up to `limit` (max 1000) summaries."""
        try:
            rows = await store.search_conversations(number=phone_number, since=since, until=until, text=text,
                                                    limit=max(1, limit))
        except ValueError as exc:
            raise ToolError(str(exc)) from None
        return {"conversations": [_summary(r) for r in rows]}

    @server.tool()
    async def get_conversation(call_sid: str) -> dict[str, Any]:
        """One phone conversation whole, by its call SID (CA...): numbers, start and end (UTC),
        status, the transcript in order (caller and assistant; an interrupted reply is cut to what
        the caller heard and marked `interrupted`), and the tool calls if any were stored."""
        conv = await store.get_conversation(call_sid.strip())
        if conv is None:
            raise ToolError(f"no conversation {call_sid!r} (search_conversations finds call SIDs)")
        return _full(conv)

    @server.resource(f"{SCHEME}://{{call_sid}}", name="conversation", mime_type="application/json",
                     description="One phone conversation by call SID, as get_conversation returns it")
    async def conversation(call_sid: str) -> str:
        conv = await store.get_conversation(call_sid)
        if conv is None:
            raise ResourceError(f"no conversation {call_sid!r}")
        return json.dumps(_full(conv), ensure_ascii=False)

    return server


async def run_stdio(store: AsyncStore) -> None:
    """Serve MCP on this process's stdin/stdout until the client closes them."""
    await build_server(store).run_stdio_async()


def stdio_main(database_path: str, prog: str = "callsim bridge mcp") -> int:
    """``callsim bridge mcp``: the store opened read-only, MCP on stdio; logs go to stderr (stdout
    is the protocol)."""
    import trio

    from .store import Store

    try:
        store = Store(database_path, read_only=True)
    except (FileNotFoundError, OSError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    log.info("MCP on stdio over %s (read-only)", database_path)
    try:
        trio.run(run_stdio, AsyncStore(store))
    except* KeyboardInterrupt:
        pass
    finally:
        store.close()
    return 0
