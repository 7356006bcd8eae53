"""What a mock session does on its own when time passes: its maximum duration and the VAD's
idle timeout.

**Maximum duration.** The Realtime API ends a session at its maximum length (60 minutes today;
15, then 30 before): a ``session_expired`` error, then a close 1001 with the same text
(protocols.md 2 F). The mock's limit is :attr:`Behaviour.max_session_s` (``--max-session-s``,
scenario ``[mock] max_session_s``), so a bridge's renewal can be tested on a compressed clock.
The ``expire`` fault is the same ending at a chosen moment.

**Idle timeout** (``turn_detection.idle_timeout_ms``, GA ``server_vad`` only). The SDK's
docstring: the timeout "will be applied after the last model response's audio has finished
playing, i.e. it's set to the ``response.done`` time plus audio playback duration"; then
``input_audio_buffer.timeout_triggered``, the silent audio committed as an ``input_audio`` item,
and a response. The server cannot see the caller's playback either, so it estimates; the mock
takes the docstring literally: ``response.done`` + the duration of the audio the response sent
(a truncate does not shorten it: whether the real service uses the truncate is unknown). Caller
speech (``speech_started``) stops the timer; so does a response starting. Before any response,
the mock counts from when the timeout was set (the real behaviour there is unknown).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import errors
from .ids import new_id
from .session_base import MS, Events, SessionBase, log
from .session_timers import Timer

if TYPE_CHECKING:
    from .responses import Response

SECOND_NS = 1_000_000_000


class TimeoutsPart(SessionBase):
    """The session's maximum duration and the idle timeout, each on a named timer."""

    if TYPE_CHECKING:  # what it uses of the other parts
        _speech_item_id: str | None
        _input_ms: float
        _buffer_start_ms: float

        def _response_active(self) -> bool: ...
        def _take_buffer(self, start_ms: float, end_ms: float) -> bytes: ...
        def _commit(self, now_ns: int, out: Events, item_id: str, audio: bytes, eid: str | None,
                    turn: dict[str, Any], *, caller_turn: bool = True) -> None: ...
        def _start_response(self, now_ns: int, out: Events, trigger: str,
                            opts: dict[str, Any] | None = None) -> None: ...

    def _init_timeouts(self) -> None:
        self._idle_timer = Timer("vad.idle_timeout", self._idle_fired)
        self._idle_from_ns: int | None = None  # when the silence being timed began
        self._playback_end_ns = 0  # the last response's audio, estimated played out by then
        self.idle_timeouts = 0

    # ------------------------------------------------------------ maximum duration

    def _arm_max_duration(self, now_ns: int) -> None:
        self.timers.call_at(now_ns + int(self.behaviour.max_session_s * SECOND_NS), "session.max_duration",
                            self._max_duration_reached)

    def _max_duration_reached(self, now_ns: int, out: Events) -> None:
        self._log(now_ns, "limit", "max_duration", limit_s=self.behaviour.max_session_s)
        log.info("session %s: maximum duration (%g s) reached: session_expired, close 1001",
                 self.id, self.behaviour.max_session_s)
        self._expire(now_ns, out)

    def _expire(self, now_ns: int, out: Events) -> None:
        limit = self.behaviour.max_session_s
        self._emit(now_ns, out, errors.session_expired(limit))
        self.close_request = (errors.EXPIRED_CLOSE_CODE, errors.max_duration_text(limit))

    # ------------------------------------------------------------ idle timeout

    def _idle_timeout_ms(self) -> int | None:
        td = self.config.turn_detection
        if td is None or td.type != "server_vad" or self.dialect != "ga" or not td.idle_timeout_ms:
            return None
        return td.idle_timeout_ms

    def _idle_restart(self, from_ns: int) -> None:
        """Count the caller's silence from ``from_ns`` (if the timeout is on and nothing is going on)."""
        ms = self._idle_timeout_ms()
        if ms is None or self._response_active() or self._speech_item_id is not None:
            self._idle_stop()
            return
        self._idle_from_ns = from_ns
        self.timers.arm(self._idle_timer, from_ns + ms * MS)

    def _idle_stop(self) -> None:
        if self._idle_timer.armed:
            self.timers.cancel(self._idle_timer)
        self._idle_from_ns = None

    def _idle_settings_changed(self, now_ns: int) -> None:
        """After a session.update: the timeout may have been set, changed or turned off."""
        if self._idle_timeout_ms() is None:
            self._idle_stop()
        elif not self._response_active():
            self._idle_restart(max(now_ns, self._playback_end_ns))

    def _idle_after_response(self, r: Response) -> None:
        """``response.done`` + the playback duration of the audio it sent (the SDK's definition)."""
        assert r.t_done_ns is not None
        self._playback_end_ns = r.t_done_ns + int(r.audio_ms_sent * MS)
        self._idle_restart(self._playback_end_ns)

    def _idle_fired(self, now_ns: int, out: Events) -> None:
        if self._response_active() or self._speech_item_id is not None or self._idle_from_ns is None:
            return
        self.idle_timeouts += 1
        # audio arrives in real time, so the silence timed began this many ms back on the buffer's clock
        end_ms = self._input_ms
        start_ms = max(0.0, end_ms - (now_ns - self._idle_from_ns) / MS)
        item_id = new_id("item", self.rng)
        self._log(now_ns, "limit", "idle_timeout", audio_start_ms=round(start_ms), audio_end_ms=round(end_ms))
        self._emit(now_ns, out, {"type": "input_audio_buffer.timeout_triggered", "item_id": item_id,
                                 "audio_start_ms": int(start_ms), "audio_end_ms": int(end_ms)})
        audio = self._take_buffer(max(start_ms, self._buffer_start_ms), end_ms)  # the idle buffer is bounded
        self._commit(now_ns, out, item_id, audio, None,
                     {"item_id": item_id, "idle_timeout": True, "audio_start_ms": int(start_ms),
                      "audio_end_ms": int(end_ms)}, caller_turn=False)
        self._idle_from_ns = None
        self._start_response(now_ns, out, "idle_timeout")
