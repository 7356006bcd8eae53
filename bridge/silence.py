"""How long has the line been quiet? The silent-caller timer of one call (sans-IO).

The bridge's own timer, not OpenAI's ``idle_timeout_ms``: the server can only estimate when its
audio finished playing (``response.done`` + the audio's duration), while the bridge knows it
from Twilio's mark echo; the bridge also chooses what is said (a re-prompt, then a goodbye
followed by the hang-up) where the server's timeout only makes the model answer silence; and it
works in every dialect and VAD mode (``idle_timeout_ms`` is GA ``server_vad`` only).

Quiet means: nothing owed or under way (the core checks), the caller not speaking, the
assistant's audio played out. The silence is counted once the conversation has begun — before
the greeting or the caller's first words the line's silence is the greeting's business (a bridge
that does not greet waits for the caller to speak first) — from the latest of: the caller's
speech ending, a keypress, and the end of the assistant's audio as played —
the mark echo that empties Twilio's queue, or before it the estimate of when the queue runs dry
(so the driver's timer is armed early and only ever moves later). Speaking or pressing a key
resets the count of re-prompts: the caller is there.
"""

from __future__ import annotations

from enum import Enum

NS_PER_S = 1_000_000_000


class Due(Enum):
    REPROMPT = "reprompt"
    GOODBYE = "goodbye"


class SilenceWatch:
    def __init__(self, after_s: float, max_prompts: int) -> None:
        self.after_ns = int(after_s * NS_PER_S)
        self.max_prompts = max_prompts
        self.quiet_since_ns: int | None = None  # None: not counting (before the session is ready)
        #: between the session's speech_started and speech_stopped (or committed): the one record of it,
        #: read by the core (CallCore.caller_speaking) and the renewal's quiet-moment check
        self.caller_speaking = False
        self.prompts = 0  # re-prompts since the caller last spoke or pressed a key

    @property
    def enabled(self) -> bool:
        return self.after_ns > 0

    def quiet_from(self, now_ns: int) -> None:
        """Silence may start here (session ready, the assistant's audio played out)."""
        self.quiet_since_ns = now_ns if self.quiet_since_ns is None else max(self.quiet_since_ns, now_ns)

    def caller_started(self) -> None:
        self.caller_speaking = True
        self.prompts = 0

    def caller_stopped(self, now_ns: int) -> None:
        self.caller_speaking = False
        self.quiet_from(now_ns)

    def caller_acted(self, now_ns: int) -> None:
        """The caller did something (a keypress): they are there, so the re-prompts start over;
        the quiet count restarts here, unless they are speaking (their speech's end will restart it)."""
        self.prompts = 0
        if not self.caller_speaking:
            self.quiet_from(now_ns)

    def session_switched(self, now_ns: int) -> None:
        """A new OpenAI session: a speech the old one had started will never be said stopped by it,
        so the caller counts as quiet from here."""
        if self.caller_speaking:
            self.caller_stopped(now_ns)

    def deadline_ns(self, playback_end_ns: int) -> int | None:
        # ``playback_end_ns``: when the audio given to Twilio is estimated to have played (0: none yet)
        """When the caller will have been quiet long enough (the core checks nothing else is going on)."""
        if not self.enabled or self.caller_speaking:
            return None
        start = max(self.quiet_since_ns or 0, playback_end_ns)  # 0: nobody has said anything yet
        return start + self.after_ns if start else None

    def fire(self, now_ns: int) -> Due:
        """The deadline passed: re-prompt, or (after ``max_prompts`` re-prompts) say goodbye."""
        self.quiet_since_ns = now_ns  # counted again from the end of what is said now
        if self.prompts < self.max_prompts:
            self.prompts += 1
            return Due.REPROMPT
        self.quiet_since_ns = None
        return Due.GOODBYE
