"""Tool (function) calls of a mock session's responses.

A behaviour may answer a turn with a :class:`~.behaviour.ToolCall`: the response
then carries one ``function_call`` item, its arguments streamed in three
deltas, and the spoken reply (``then``) waits for the client's
``function_call_output`` and its next ``response.create``. The real model
cannot call a tool it was never given, so a tool the session (or the
``response.create``) did not declare is skipped: the reply is spoken at once,
and the response's record says so — unless the session declared its own tool
for the same purpose under another name (``hang_up`` for ``end_call``:
:mod:`.tool_roles`), which is then called instead.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .behaviour import ToolCall
from .conversation import Item
from .ids import new_id
from .session_base import Events, SessionBase, log
from .tool_roles import StandIn, arguments_for, stand_in

if TYPE_CHECKING:
    from .responses import Response


class ToolsPart(SessionBase):
    """The pending tool call, the declared-tools check, and the function_call item's events."""

    if TYPE_CHECKING:  # what it uses of the other parts
        items: dict[str, Item]
        order: list[str]

        def _remember_item(self, item: Item, pos: int | None = None) -> None: ...

    def _init_tools(self) -> None:
        self._pending_tool: ToolCall | None = None

    def _tool_followup(self) -> str | None:
        """The reply that follows a tool call, once the client answered it (its output is the last item)."""
        last = self.items[self.order[-1]] if self.order else None
        if self._pending_tool is not None and last is not None and last.type == "function_call_output":
            then = self._pending_tool.then
            self._pending_tool = None
            return then
        return None

    def _declared_or_reply(self, plan: str | ToolCall | bytes, opts: dict[str, Any]
                           ) -> tuple[str | ToolCall | bytes, tuple[str, list[str]] | None]:
        """``plan`` as it stands, or — a tool the session never declared — its spoken reply
        and ``(tool, declared tools)`` for the record."""
        if not isinstance(plan, ToolCall):
            return plan, None
        tools = opts["tools"] if "tools" in opts else self.config.tools
        declared = function_tool_names(tools)
        if plan.name in declared:
            return plan, None
        other = stand_in(plan.name, declared)
        if other is not None:  # the bridge's own tool for the same purpose, as the real model would pick
            spec = next(t for t in tools if isinstance(t, dict) and t.get("name") == other)
            log.info("session %s: behaviour calls tool %s; calling the session's %s in its place",
                     self.id, plan.name, other)
            return StandIn(other, arguments_for(spec, plan.arguments), plan.then, stands_for=plan.name), None
        log.info("session %s: behaviour calls tool %s, which the session did not declare (declared: %s);"
                 " replying %s without it", self.id, plan.name, ", ".join(declared) or "none", plan.then)
        return plan.then, (plan.name, declared)

    def _tool_call(self, now_ns: int, out: Events, r: Response, tool: ToolCall, previous: str | None) -> None:
        """The function_call item of response ``r``, complete; the reply waits for its output."""
        args = json.dumps(tool.arguments)
        item = Item(new_id("item", self.rng), "function_call", status="in_progress", name=tool.name,
                    call_id=new_id("call", self.rng), arguments="")
        r.items.append(item)
        self._remember_item(item)
        self._emit(now_ns, out, {"type": "response.output_item.added", "response_id": r.id, "output_index": 0,
                                 "item": item.wire(self.dialect == "beta")})
        self._emit(now_ns, out, {"type": self.names.item_created, "previous_item_id": previous,
                                 "item": item.wire(self.dialect == "beta")})
        step = max(1, len(args) // 3)
        for i in range(0, len(args), step):
            self._emit(now_ns, out, {"type": "response.function_call_arguments.delta", "response_id": r.id,
                                     "item_id": item.id, "output_index": 0, "call_id": item.call_id,
                                     "delta": args[i : i + step]})
        done = {"type": "response.function_call_arguments.done", "response_id": r.id, "item_id": item.id,
                "output_index": 0, "call_id": item.call_id, "arguments": args}
        if self.dialect == "ga":
            done["name"] = tool.name
        self._emit(now_ns, out, done)
        item.arguments = args
        item.status = "completed"
        self._emit(now_ns, out, {"type": "response.output_item.done", "response_id": r.id, "output_index": 0,
                                 "item": item.wire(self.dialect == "beta")})
        if self.names.item_done:
            self._emit(now_ns, out, {"type": self.names.item_done, "previous_item_id": previous,
                                     "item": item.wire(False)})
        self._pending_tool = tool


def function_tool_names(tools: Any) -> list[str]:
    """Names of the function tools in a session's (or a response's) ``tools`` list."""
    if not isinstance(tools, list):
        return []
    return [t["name"] for t in tools
            if isinstance(t, dict) and t.get("type", "function") == "function" and isinstance(t.get("name"), str)]
