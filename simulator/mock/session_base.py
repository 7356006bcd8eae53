"""What every part of a :class:`~.session.MockSession` shares: its common state and the plumbing.

The session is one object made of parts (mixins, one module each: input audio,
conversation, responses, tools, faults), because they share one clock, one
random generator, one outgoing event stream and one set of records, and the
per-append path must reach its state without a hop. Each part owns the state it
initialises in its ``_init_<part>``; the state below is set by
:class:`~.session.MockSession` itself and read by all of them.
"""

from __future__ import annotations

import logging
import random
from array import array
from collections import deque
from typing import Any

from .behaviour import Behaviour
from .dialect import Dialect, EventNames
from .ids import new_id
from .logsafe import clip, for_log, summary
from .recognizer import Recognizer
from .schema import validate_server_event
from .session_config import SessionConfig
from .session_timers import Timers

log = logging.getLogger("callsim.mock")

MS = 1_000_000  # ns
MAX_RECORDS = 500  # turns / responses / truncates / errors kept per session
MAX_TIMINGS = 60_000  # per-append / per-delta timestamps kept (20 minutes of 20 ms frames)
MAX_RECORD_TEXT = 1000  # an error message kept for introspection (the one sent is whole)

Events = list[dict[str, Any]]


class SessionBase:
    """The shared state (set by ``MockSession.__init__``) and the outgoing-event plumbing."""

    id: str
    dialect: Dialect
    names: EventNames
    config: SessionConfig
    behaviour: Behaviour
    recognizer: Recognizer | None
    rng: random.Random
    validate_outgoing: bool
    timers: Timers
    # what the driver must do
    close_request: tuple[int, str] | None
    abort_request: bool
    stalled: bool
    closed: bool
    # introspection
    log: deque[dict[str, Any]]
    errors_sent: list[dict[str, Any]]
    invalid_sent: list[str]
    counts: dict[str, int]
    delta_ns: array

    def _emit(self, now_ns: int, out: Events, ev: dict[str, Any]) -> None:
        """Queue one server event: a fresh event id, checked against the SDK, logged."""
        ev = {"event_id": new_id("event", self.rng), **ev}
        if self.validate_outgoing:
            try:
                validate_server_event(self.dialect, ev)
            except Exception as exc:  # a mock bug: make it loud, keep serving
                msg = f"{ev.get('type')}: {exc}".splitlines()[0][:300]
                self.invalid_sent.append(msg)
                log.error("session %s: mock sent an event the SDK rejects: %s", self.id, msg)
        if ev["type"] == "error":
            err = ev["error"]
            if len(self.errors_sent) < MAX_RECORDS:  # bounded: a client can provoke errors at will ...
                # ... and their messages quote the client's values, which may be megabytes
                self.errors_sent.append({"t_ns": now_ns, **err, "message": clip(err.get("message"), MAX_RECORD_TEXT)})
            log.info("session %s: error %s: %s", self.id, for_log(err.get("code")), for_log(err.get("message")))
        if ev["type"] not in (self.names.audio_delta, self.names.transcript_delta):
            self._log(now_ns, "out", ev["type"], **summary(ev))
        out.append(ev)

    def _log(self, now_ns: int, direction: str, etype: str, **fields: Any) -> None:
        self.log.append({"t_ns": now_ns, "dir": direction, "type": etype, **fields})

    def _session_event(self, etype: str) -> dict[str, Any]:
        return {"type": etype, "session": self.config.as_dict()}
