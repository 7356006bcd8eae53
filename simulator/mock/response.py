"""One response of a mock session: its state, what it is to say, what it has sent, its record.

The states are :class:`Phase`; where each may go, and what the session does in
each, is in :mod:`.responses`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .behaviour import ToolCall
from .conversation import Item
from .session_timers import Timer
from .tool_roles import StandIn


class Phase(StrEnum):
    CREATED = "created"  # waiting to send response.created
    THINKING = "thinking"  # response.created sent; the think time runs
    STREAMING = "streaming"  # the output audio item is open; deltas are paced out
    DONE = "done"  # completed, cancelled or failed: response.done sent



@dataclass
class Response:
    id: str
    trigger: str  # vad | client
    plan: str | ToolCall | bytes  # fixture name, tool call, or raw echo audio (output format)
    t_trigger_ns: int
    think_ms: float
    fail: bool = False
    status: str = "in_progress"
    reason: str | None = None
    items: list[Item] = field(default_factory=list)
    audio: bytes = b""
    transcript: str = ""
    sent_bytes: int = 0
    words_sent: int = 0
    phase: Phase = Phase.CREATED
    timer: Timer | None = None  # the one timer of its waiting states
    t_created_ns: int | None = None
    t_first_audio_ns: int | None = None
    t_done_ns: int | None = None
    conversation: str = "auto"
    metadata: dict[str, str] | None = None
    index: int = 0  # 1-based count of responses in the session
    tool_not_declared: str | None = None  # the behaviour's tool, which the session never declared
    tools_declared: list[str] | None = None  # the function tools it did declare (set with the above)
    bytes_per_ms: int = 8  # of the output format

    def record(self) -> dict[str, Any]:
        plan = self.plan
        undeclared = ({"tool_not_declared": self.tool_not_declared, "tools_declared": self.tools_declared}
                      if self.tool_not_declared is not None else {})
        if isinstance(plan, StandIn):
            undeclared["tool_for"] = plan.stands_for
        return {**undeclared,
            "id": self.id, "trigger": self.trigger, "index": self.index,
            "reply": plan if isinstance(plan, str) else ("tool:" + plan.name if isinstance(plan, ToolCall) else "echo"),
            "status": self.status, "reason": self.reason, "think_ms": round(self.think_ms, 3),
            "t_trigger_ns": self.t_trigger_ns, "t_created_ns": self.t_created_ns,
            "t_first_audio_ns": self.t_first_audio_ns, "t_done_ns": self.t_done_ns,
            "audio_ms_total": len(self.audio) and round(self.audio_ms_total, 3),
            "audio_ms_sent": round(self.audio_ms_sent, 3),
            "item_ids": [i.id for i in self.items],
        }

    @property
    def audio_ms_total(self) -> float:
        return len(self.audio) / self.bytes_per_ms

    @property
    def audio_ms_sent(self) -> float:
        return self.sent_bytes / self.bytes_per_ms
