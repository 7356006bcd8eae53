"""How a call ends or moves on without the caller's words: keypresses, a silent caller's re-prompts
and goodbye, ``end_call``'s goodbye played out before the hang-up, and ``transfer_call``'s phrase
played out before the REST redirect (:mod:`.call_control`, :mod:`.silence`, :mod:`.transfer`).

A part of :class:`~.call.CallCore` (its base class), kept apart because none of it is on the
per-frame path: it runs on a keypress, a timer, a tool call or a mark. It reads and sets the
core's state (``self.control``, ``self.silence``, the goodbye and transfer fields) as the core's
own methods do.
"""

from __future__ import annotations

import logging
from typing import Any

from . import realtime as rt
from . import twilio_wire as tw
from .actions import Action, Hangup, Notice, ToOpenAI, ToTwilio, TransferCall
from .call_control import (
    DTMF_KEYS, END_CALL, END_CALL_OUTPUT, TRANSFER_CALL, TRANSFER_PENDING_OUTPUT, dtmf_text, transfer_failed_output,
)
from .logsafe import wire
from .silence import Due

log = logging.getLogger("callsim.bridge.call")


class CallEndingsPart:
    """Keys, a silent caller, goodbyes and transfers: methods of :class:`~.call.CallCore`."""

    # ============================================= keys, a silent caller, goodbyes (.call_control)

    def _dtmf(self, now_ns: int, key: str) -> list[Action]:
        """A keypress: a user text item naming the key, and (``respond``) a response after the one under way."""
        if key not in DTMF_KEYS:
            raise ValueError("not a DTMF key")
        mode = self.control.dtmf_mode
        if mode == "off" or self.ending or not self.openai_ready:
            return []
        self.silence.caller_acted(now_ns)  # the caller is there (and may be speaking still)
        actions: list[Action] = [ToOpenAI(rt.user_text(dtmf_text(key)))]
        if mode == "respond" and self.hangup_after is None and self._end_call is None and self._transfer is None:
            if self.active_response is None and not self._pending_tools:
                self.watch.asked(now_ns)
                actions.append(ToOpenAI(rt.response_create()))
            else:
                self._want_response = True
        return actions

    def _silence_deadline_ns(self) -> int | None:
        if (not self.silence.enabled or self.active_response is not None or self._pending_tools
                or self._want_response or self.hangup_after is not None or self._end_call is not None
                or self._transfer is not None):
            return None
        return self.silence.deadline_ns(self.watch.playback_end_ns)

    def _silent_caller(self, now_ns: int) -> list[Action]:
        """The caller has been quiet ``SILENCE_REPROMPT_S``: ask if they are there, or say goodbye."""
        due = self.silence.fire(now_ns)
        self.watch.asked(now_ns)
        if due is Due.REPROMPT:
            log.info("call %s: caller silent: re-prompt %d of %d", self.tag, self.silence.prompts,
                     self.silence.max_prompts)
            return [ToOpenAI(rt.response_create(self.control.reprompt_instructions))]
        log.info("call %s: caller silent after %d re-prompt(s): saying goodbye", self.tag, self.silence.prompts)
        self.hangup_after = "silent caller"
        return [ToOpenAI(rt.response_create(self.control.silence_goodbye_instructions))]

    def _end_call_asked(self, call_id: str, response_id: Any, arguments: str) -> list[Action]:
        """The model called end_call: the goodbye is this response's audio, or (if it had none) the next."""
        self.stats["tool_calls"] += 1
        self._end_call = (call_id, response_id if isinstance(response_id, str) else None)
        log.info("call %s: the model called end_call %s", self.tag, wire(arguments, 120))
        return [Notice("tool_call", {"name": END_CALL, "arguments": wire(arguments, 200)})]

    def _goodbye_step(self, now_ns: int, rid: Any) -> list[Action] | None:
        """At ``response.done``: end the call after a goodbye, or ask for the goodbye. None: not yet."""
        if self.hangup_after is not None:  # this response was the goodbye
            return self._goodbye(now_ns, self.hangup_after)
        assert self._end_call is not None
        call_id, tool_rid = self._end_call
        if tool_rid is not None and rid != tool_rid:
            return None
        self._end_call = None
        self._want_response = False
        if any(i.response_id == rid and i.received for i in self.items.values()):
            return self._goodbye(now_ns, "end_call")  # the farewell came with the call
        self.hangup_after = "end_call"
        self.watch.asked(now_ns)
        return [ToOpenAI(rt.tool_output(call_id, END_CALL_OUTPUT)), ToOpenAI(rt.response_create())]

    def _goodbye(self, now_ns: int, reason: str) -> list[Action]:
        """End the call once the goodbye has played: a mark after its last audio, the hang-up when it
        comes back (bounded: the queue's estimated end plus ``goodbye_grace_s``). OpenAI is closed at
        once: the whole reply has arrived."""
        actions = self._end(f"goodbye ({reason})")
        if self.stream_sid is None or not any(i.playing for i in self.queue):
            return [Hangup(reason), *actions]
        left_s = max(0, self.watch.playback_end_ns - now_ns) / 1e9
        return [ToTwilio(tw.mark(self.stream_sid, "goodbye")),
                Hangup(reason, after_mark="goodbye", grace_s=left_s + self.control.goodbye_grace_s), *actions]

    # ======================================================== transfers (.call_control, .transfer)

    @property
    def transfer_pending(self) -> bool:
        """A transfer_call is under way: from the model's call until it failed or the stream ended."""
        return self._transfer is not None

    def _transfer_asked(self, call_id: str, response_id: Any, arguments: str) -> list[Action]:
        """The model called transfer_call: the pre-transfer phrase is this response's audio, or the next's."""
        self.stats["tool_calls"] += 1
        self._transfer = (call_id, response_id if isinstance(response_id, str) else None, False)
        self.transfer_phase = "asked"
        log.info("call %s: the model called transfer_call %s", self.tag, wire(arguments, 120))
        return [Notice("tool_call", {"name": TRANSFER_CALL, "arguments": wire(arguments, 200)})]

    def _transfer_step(self, now_ns: int, rid: Any) -> list[Action] | None:
        """At ``response.done``: redirect after the phrase, or ask for the phrase. None: not this response."""
        assert self._transfer is not None
        call_id, tool_rid, _ = self._transfer
        if self.transfer_phase == "asked":
            if tool_rid is not None and rid != tool_rid:
                return None
            self._want_response = False
            if not any(i.response_id == rid and i.received for i in self.items.values()):
                self._transfer = (call_id, tool_rid, True)  # the phrase comes in the next response
                self.transfer_phase = "phrase"
                self.watch.asked(now_ns)
                return [ToOpenAI(rt.tool_output(call_id, TRANSFER_PENDING_OUTPUT)), ToOpenAI(rt.response_create())]
        self._want_response = False
        return self._after_phrase(now_ns)

    def _after_phrase(self, now_ns: int) -> list[Action]:
        """The phrase has all arrived: a mark after its last audio, the redirect when it comes back
        (bounded: the queue's estimated end plus ``goodbye_grace_s``)."""
        self.transfer_phase = "playing"
        if self.stream_sid is None or not any(i.playing for i in self.queue):
            return self._redirect_now("nothing left to play")
        left_s = max(0, self.watch.playback_end_ns - now_ns) / 1e9
        return [ToTwilio(tw.mark(self.stream_sid, "transfer")),
                TransferCall(after_mark="transfer", grace_s=left_s + self.control.goodbye_grace_s)]

    def _redirect_now(self, why: str) -> list[Action]:
        if self.transfer_phase != "playing" or self.ending:
            return []
        self.transfer_phase = "redirecting"
        log.info("call %s: transferring the call (%s)", self.tag, why)
        return [TransferCall()]

    def transfer_mark_late(self, now_ns: int) -> list[Action]:
        """The driver's wake-up when the mark after the phrase did not come back in time."""
        if self.transfer_phase == "playing":
            log.warning("call %s: the mark after the pre-transfer phrase never came back", self.tag)
        return self._redirect_now("the mark after the phrase is late")

    def transfer_done(self, now_ns: int, error: str | None, to: str = "") -> list[Action]:
        """The redirect's outcome. Done: Twilio ends this stream next (``stop``). Failed: the model is
        told (the call's error output, or a system item when the phrase's output already went) and
        the call goes on."""
        if self._transfer is None or self.transfer_phase != "redirecting":
            return []
        if error is None:
            self.transfer_phase = "done"
            return [Notice("transferred", {"to": to})]
        call_id, _, answered = self._transfer
        self._transfer = None
        self.transfer_phase = None
        if self.ending:
            return []
        told = rt.system_text(f"transfer_call failed: {error}. Tell the caller you could not transfer them, and "
                              "keep helping them.") if answered else rt.tool_output(call_id, transfer_failed_output(error))
        self.watch.asked(now_ns)
        return [ToOpenAI(told), ToOpenAI(rt.response_create()), Notice("transfer_failed", {"error": wire(error, 200)})]
