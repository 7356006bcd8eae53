"""The conversation of a mock session: its items, their order, and the client's item events.

Every path that adds an item (a committed turn, a client's item, a response's
output) goes through :meth:`ConversationPart._remember_item`, which keeps the
conversation bounded. Truncation answers with the real errors (item not found,
unsupported content type, audio too short); the real server also drops the
unheard part of the transcript (protocols.md 2.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import errors
from .ids import new_id
from .keypresses import key_named
from .session_base import MAX_RECORDS, Events, SessionBase

MAX_ITEMS = 5000  # conversation items kept per session (the oldest are forgotten)


@dataclass
class Item:
    id: str
    type: str  # message | function_call | function_call_output
    role: str | None = None
    status: str = "completed"
    content: list[dict[str, Any]] = field(default_factory=list)
    name: str | None = None
    call_id: str | None = None
    arguments: str | None = None
    output: str | None = None
    audio_ms_sent: float = 0.0  # assistant audio items: audio the client has been sent
    has_audio: bool = False
    # an item type the mock does not model (the GA MCP items a client may create), kept as given:
    # what the real server echoes for one is unconfirmed, but its own fields are what the SDK requires
    as_given: dict[str, Any] | None = None

    def wire(self, with_object: bool = True) -> dict[str, Any]:
        if self.as_given is not None:
            return {**self.as_given, "id": self.id, "type": self.type}
        d: dict[str, Any] = {"id": self.id, "type": self.type}
        if with_object:
            d["object"] = "realtime.item"
        if self.type == "message":
            d.update(status=self.status, role=self.role, content=[dict(c) for c in self.content])
        elif self.type == "function_call":
            d.update(status=self.status, name=self.name, call_id=self.call_id, arguments=self.arguments or "")
        elif self.type == "function_call_output":
            d.update(call_id=self.call_id, output=self.output or "")
        return d


class ConversationPart(SessionBase):
    """Items by id and their order; ``conversation.item.*`` client events."""

    items: dict[str, Item]
    order: list[str]
    truncates: list[dict[str, Any]]
    dtmf: list[str]  # the keys the client's user items named (.keypresses), in order
    dtmf_ns: list[int]  # when each of those items arrived: the harness counts only those after a keypress
    _pending_key: str | None  # the last one, until a response answers it

    def _init_conversation(self) -> None:
        self.items = {}
        self.order = []
        self.truncates = []
        self.dtmf = []
        self.dtmf_ns = []
        self._pending_key = None

    def _remember_item(self, item: Item, pos: int | None = None) -> None:
        """Add an item to the conversation (at the end, or at index ``pos``), keeping it bounded:
        every path that adds an item comes here."""
        self.items[item.id] = item
        if pos is None:
            self.order.append(item.id)
        else:
            self.order.insert(pos, item.id)
        while len(self.order) > MAX_ITEMS:
            self.items.pop(self.order.pop(0), None)

    def _add_item(self, now_ns: int, out: Events, item: Item, previous: str | None, pos: int | None = None) -> None:
        self._remember_item(item, pos)
        self._emit(now_ns, out, {"type": self.names.item_created, "previous_item_id": previous,
                                 "item": item.wire(self.dialect == "beta")})
        if self.names.item_done:
            self._emit(now_ns, out, {"type": self.names.item_done, "previous_item_id": previous,
                                     "item": item.wire(False)})

    def _previous_of(self, item_id: str) -> str | None:
        try:
            i = self.order.index(item_id)
        except ValueError:
            return None
        return self.order[i - 1] if i > 0 else None

    # ------------------------------------------------------------ client events

    def _on_conversation_item_create(self, now_ns: int, ev: dict[str, Any], eid: str | None, out: Events) -> None:
        raw = ev["item"]
        itype = raw.get("type", "message")
        prev = ev.get("previous_item_id")
        if prev not in (None, "root") and prev not in self.items:
            self._emit(now_ns, out, errors.item_not_found(prev, eid, "previous_item_id"))
            return
        item = Item(raw.get("id") or new_id("item", self.rng), itype)
        if itype == "message":
            item.role = raw.get("role")
            content = [dict(c) for c in raw.get("content") or []]
            if item.role == "assistant" and any(c.get("type") in ("audio", "output_audio") for c in content):
                self._emit(now_ns, out, errors.invalid_event(
                    "Assistant audio messages cannot be created by the client.", eid, "item.content"))
                return
            item.content = content
            # a system message is as valid a way to tell the model of a key (the GA API allows it)
            key = key_named(content) if item.role in ("user", "system") else None
            if key is not None:
                self._pending_key = key
                if len(self.dtmf) < MAX_RECORDS:
                    self.dtmf.append(key)
                    self.dtmf_ns.append(now_ns)
        elif itype == "function_call_output":
            item.call_id = raw.get("call_id")
            item.output = raw.get("output")
        elif itype == "function_call":
            item.call_id, item.name, item.arguments = raw.get("call_id"), raw.get("name"), raw.get("arguments")
        else:  # mcp_call, mcp_list_tools, ...: echoed whole, as {id, type} alone the SDK rejects it
            item.as_given = dict(raw)
        # omitted: append; "root": insert at the start; an item id: insert right after it
        if prev is None:
            previous, pos = (self.order[-1] if self.order else None), None
        elif prev == "root":
            previous, pos = None, 0
        else:
            previous, pos = prev, self.order.index(prev) + 1
        self._add_item(now_ns, out, item, previous, pos)

    def _on_conversation_item_retrieve(self, now_ns: int, ev: dict[str, Any], eid: str | None, out: Events) -> None:
        item = self.items.get(ev["item_id"])
        if item is None:
            self._emit(now_ns, out, errors.item_not_found(ev["item_id"], eid, "item_id"))
            return
        self._emit(now_ns, out, {"type": "conversation.item.retrieved", "item": item.wire(self.dialect == "beta")})

    def _on_conversation_item_delete(self, now_ns: int, ev: dict[str, Any], eid: str | None, out: Events) -> None:
        item_id = ev["item_id"]
        if item_id not in self.items:
            self._emit(now_ns, out, errors.item_not_found(item_id, eid, "item_id"))
            return
        del self.items[item_id]
        self.order.remove(item_id)
        self._emit(now_ns, out, {"type": "conversation.item.deleted", "item_id": item_id})

    def _on_conversation_item_truncate(self, now_ns: int, ev: dict[str, Any], eid: str | None, out: Events) -> None:
        item_id, end_ms, ci = ev["item_id"], int(ev["audio_end_ms"]), ev.get("content_index", 0)
        item = self.items.get(item_id)
        rec: dict[str, Any] = {"t_ns": now_ns, "item_id": item_id, "audio_end_ms": end_ms, "content_index": ci}
        if item is None:
            rec.update(accepted=False, error="item_not_found")
            self._emit(now_ns, out, errors.item_not_found(item_id, eid, "item_id"))
        elif not (item.type == "message" and item.role == "assistant" and item.has_audio):
            rec.update(accepted=False, error="unsupported_content_type")
            self._emit(now_ns, out, errors.unsupported_content_type(eid))
        else:
            have = int(item.audio_ms_sent)
            rec["audio_sent_ms"] = round(item.audio_ms_sent, 3)
            if end_ms > have:
                rec.update(accepted=False, error="audio_too_short")
                self._emit(now_ns, out, errors.truncate_too_long(have, end_ms, eid))
                if self.behaviour.clamp_truncate_after_error:
                    self._truncated(now_ns, out, item, ci, have)
                    rec["clamped_to_ms"] = have
            else:
                rec["accepted"] = True
                self._truncated(now_ns, out, item, ci, end_ms)
        if len(self.truncates) < MAX_RECORDS:
            self.truncates.append(rec)

    def _truncated(self, now_ns: int, out: Events, item: Item, ci: int, end_ms: int) -> None:
        # the server drops the unheard transcript too (protocols.md 2.3)
        for c in item.content:
            if c.get("transcript"):
                c["transcript"] = _cut_text(c["transcript"], end_ms / max(item.audio_ms_sent, 1e-9))
        self._emit(now_ns, out, {"type": "conversation.item.truncated", "item_id": item.id,
                                 "content_index": ci, "audio_end_ms": end_ms})


def _cut_text(text: str, fraction: float) -> str:
    words = text.split(" ")
    return " ".join(words[: max(0, min(len(words), round(len(words) * fraction)))])
