"""The assistant's replies on their way to the caller, and how they stop when the caller talks.

A part of :class:`~.call.CallCore` (its base class), as :mod:`.call_endings` is: the OpenAI
audio deltas (transcoded if the call transcodes) forwarded to Twilio, each followed by a named
mark ``gen:item:end_byte`` (:mod:`.item_playback` turns the echoes into what was heard), the
transcoder's tail at the end of an item, the assistant's transcript, and barge-in: ``clear``,
then a truncate at what the caller really heard. It reads and sets the core's state (the
playback queue, the items, the generation, the dropped responses) as the core's own methods do.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from . import realtime as rt
from . import twilio_wire as tw
from .actions import Action, Notice, SaveTranscript, ToOpenAI, ToTwilio
from .call_values import cut_to_heard, is_b64, remember, wire_id, wire_transcript
from .item_playback import ItemPlayback
from .logsafe import wire

log = logging.getLogger("callsim.bridge.call")

MAX_ITEMS = 64  # assistant audio items remembered (and queued for playback)
ULAW_BYTES_PER_MS = 8


class CallPlaybackPart:
    """Reply audio to Twilio, the transcript, barge-in: methods of :class:`~.call.CallCore`."""

    # ============================================================ reply audio

    def _delta(self, now_ns: int, ev: dict[str, Any]) -> list[Action]:
        item_id = wire_id(ev["item_id"])
        resp = ev.get("response_id")
        if resp is not None:
            wire_id(resp)
        if (self.ending or self.stream_sid is None or item_id in self._dropped_items
                or resp in self._dropped_responses):
            self.stats["deltas_dropped"] += 1
            return []
        payload = ev["delta"]
        if not isinstance(payload, str) or not is_b64(payload):
            raise ValueError("delta is not base64")
        item = self.items.get(item_id)
        if item is None:
            if len(self.queue) >= MAX_ITEMS:  # OpenAI plays one reply at a time; this is not a reply
                raise ValueError(f"{len(self.queue)} items queued for playback already")
            self._seq += 1
            item = ItemPlayback(item_id, self._seq, resp)
            self.items[item_id] = item
            self._by_seq[item.seq] = item
            if len(self.items) > MAX_ITEMS:  # keep only recent items
                old = next(iter(self.items))
                self._by_seq.pop(self.items.pop(old).seq, None)
        n = tw.b64_len(payload)
        item.received += n
        if self.transcoder is not None:
            ulaw = self.transcoder.outbound(base64.b64decode(payload))
            if not ulaw:
                return []
            payload = base64.b64encode(ulaw).decode("ascii")
            n = len(ulaw)
        return self._forward(now_ns, item, payload, n)

    def _forward(self, now_ns: int, item: ItemPlayback, payload: str, n: int) -> list[Action]:
        assert self.stream_sid is not None
        if item not in self.queue:
            self.queue.append(item)
        if item is self.queue[0] and not item.playing:
            item.t_ref_ns = now_ns  # Twilio starts playing what arrives when it is idle
        # (an item queued behind another starts when that one's last mark comes back)
        item.sent += n
        item.pending.append(item.sent)
        self.stats["frames_out"] += 1
        self.watch.audio(now_ns, item.response_id, n)
        return [ToTwilio(tw.media(self.stream_sid, payload)),
                ToTwilio(tw.mark(self.stream_sid, f"{self.gen}:{item.seq}:{item.sent}"))]

    def _audio_done(self, now_ns: int, ev: dict[str, Any]) -> list[Action]:
        if self.transcoder is None or self.ending:
            return []
        item = self.items.get(ev.get("item_id", ""))
        if item is None or item.item_id in self._dropped_items:
            return []
        tail = self.transcoder.outbound_flush()
        if not tail:
            return []
        return self._forward(now_ns, item, base64.b64encode(tail).decode("ascii"), len(tail))

    def _assistant_transcript(self, ev: dict[str, Any]) -> list[Action]:
        item_id = wire_id(ev["item_id"])
        text = wire_transcript(ev.get("transcript") or "")
        item = self.items.get(item_id)
        if item is not None:
            item.transcript = text
            if item_id in self._dropped_items:  # already truncated: keep only what was heard
                t = next((t for t in reversed(self.truncates) if t["item_id"] == item_id), None)
                if t is not None:
                    return [SaveTranscript(item_id, "assistant", cut_to_heard(text, t["audio_end_ms"], item.received / self.out_bpm),
                                           truncated=True, audio_end_ms=t["audio_end_ms"])]
        return [SaveTranscript(item_id, "assistant", text)]

    # ================================================================ barge-in

    def _speech_started(self, now_ns: int, audio_start_ms: Any = None) -> list[Action]:
        actions: list[Action] = []
        server_cancels = self.p.interrupt_response
        if self.active_response is not None:
            # Whatever the server still sends for it is stale once the caller talks.
            if not server_cancels:
                actions.append(ToOpenAI(rt.response_cancel()))
            remember(self._dropped_responses, self.active_response)
        playing = [i for i in self.queue if i.playing]
        self.queue.clear()
        self.watch.caller_speaks()
        if not playing or self.stream_sid is None:
            return actions
        self.stats["barge_ins"] += 1
        self.watch.playback_cleared(now_ns)
        # 1. stop playback; marks echoed by this clear belong to the old generation.
        #    (What was heard is computed below from the state before the clear.)
        actions.insert(0, ToTwilio(tw.clear(self.stream_sid)))
        self.gen += 1
        if self.transcoder is not None:
            self.transcoder.outbound_reset()
        # 2. tell the model what the caller really heard of each item: the one
        #    playing up to now, the ones queued behind it nothing at all.
        cut: list[dict[str, Any]] = []
        for item in playing:
            played = item.played(now_ns)
            received_ms = item.received // self.out_bpm
            audio_end_ms = int(min(played // ULAW_BYTES_PER_MS, received_ms))
            item.pending.clear()
            item.acked = item.sent = played
            remember(self._dropped_items, item.item_id)
            if item.response_id:
                remember(self._dropped_responses, item.response_id)
            if item.received <= 0:
                continue
            actions.append(ToOpenAI(rt.truncate(item.item_id, audio_end_ms)))
            self.stats["truncates"] += 1
            self.truncates.append({"t_ns": now_ns, "item_id": item.item_id, "audio_end_ms": audio_end_ms,
                                   "received_ms": received_ms})
            cut.append({"item_id": item.item_id, "audio_end_ms": audio_end_ms, "received_ms": received_ms})
            if item.transcript:
                actions.append(SaveTranscript(item.item_id, "assistant",
                                              cut_to_heard(item.transcript, audio_end_ms, item.received / self.out_bpm),
                                              truncated=True, audio_end_ms=audio_end_ms))
            log.info("call %s: barge-in: truncated %s at %d ms", self.tag, wire(item.item_id, 60), audio_end_ms)
        actions.append(Notice("barge_in", {"talk_over_ms": self._talk_over_ms(audio_start_ms), "truncates": cut}))
        return actions

    def _talk_over_ms(self, audio_start_ms: Any) -> int | None:
        """How long the assistant played over the caller, as the bridge can tell: from the caller's
        speech onset (``audio_start_ms`` on the input-buffer clock, plus the VAD's prefix padding it
        includes) to now, the audio appended to the current session so far (every Twilio frame is
        20 ms; ``frames_base``: the frames before it, appended to earlier sessions). An estimate for
        the operator — the caller's own recording measures it exactly."""
        if not isinstance(audio_start_ms, (int, float)) or isinstance(audio_start_ms, bool):
            return None
        padding = self.p.vad_prefix_padding_ms if self.p.vad_type == "server_vad" else 0
        appended_ms = (self.stats["frames_in"] - self.early_dropped - self.frames_base) * 20
        return max(0, int(appended_ms - audio_start_ms - padding))
