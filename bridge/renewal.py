"""Renewing the OpenAI session before its maximum duration: the decisions, without I/O.

The Realtime API ends a session at its maximum duration (60 minutes today; protocols.md 2 F) with
a ``session_expired`` error and a close 1001. A phone call may last longer, so the bridge opens the
next session ahead of time (:attr:`RenewalPolicy.open_at_ns`), configures it the same
(``session.update``), seeds it with the conversation so far (:class:`TranscriptLog`: the recent
transcript as ``conversation.item.create`` text items, bounded), and switches the call over at a
*quiet moment* (:func:`quiet`; the lines saved since the seed are sent then: :mod:`.renewal_seed`):
no reply due or in progress, no assistant audio still unplayed at Twilio (its marks not all
echoed), no tool running, and the caller not speaking (per the old session's VAD). Caller frames
go to the new session from the switch on, so no caller audio is lost; a caller speaking at the switch
would have their utterance split between two sessions, which is why the switch waits for the
caller's silence.

If no quiet moment comes before :attr:`RenewalPolicy.hard_ns` (a little before the limit), the
switch happens anyway (logged). If the old session expires first (``session_expired``), the call
switches at once to the new one, opened or still opening (caller audio is then held in the core's
early buffer until the new session is configured). :mod:`.renewal_driver` does the I/O.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .actions import SaveTranscript
from .renewal_seed import seed_item

if TYPE_CHECKING:
    from .call import CallCore

NS_PER_S = 1_000_000_000
#: the latest a forced switch happens before the limit: the session must still be open to switch
HARD_MARGIN_S = 2.0
#: transcript items seeded into a new session, and their total characters (the most recent kept)
MAX_SEED_ITEMS = 40
MAX_SEED_CHARS = 8000
#: wait before retrying a next session that failed to open (while there is time before the limit)
RETRY_S = 1.0


@dataclass(frozen=True)
class RenewalPolicy:
    """When to open the next session and when to switch at the latest.

    ``session_max_s``: OpenAI's maximum session duration. ``renew_before_s``: open the next session
    this long before it (0 = never renew: the call ends with the session, as without renewal).
    """

    session_max_s: float = 3600.0
    renew_before_s: float = 300.0

    @property
    def enabled(self) -> bool:
        return self.renew_before_s > 0 and self.session_max_s > 0

    def open_at_ns(self, t_open_ns: int) -> int:
        """When to open the next session of one opened at ``t_open_ns``."""
        lead = min(self.renew_before_s, self.session_max_s)
        return t_open_ns + int((self.session_max_s - lead) * NS_PER_S)

    def hard_ns(self, t_open_ns: int) -> int:
        """The latest moment to switch, quiet or not: a margin before the limit (at most half the lead)."""
        margin = min(HARD_MARGIN_S, min(self.renew_before_s, self.session_max_s) / 2)
        return t_open_ns + int((self.session_max_s - margin) * NS_PER_S)


def quiet(core: CallCore) -> str | None:
    """None when the call can switch sessions now; else what it waits for (for the log line)."""
    if core.ending:
        return "the call is ending"
    if core.caller_speaking:
        return "the caller is speaking"
    if core.watch.owed_since is not None:
        return "a reply is due (the caller's turn ended)"
    if core.active_response is not None:
        return "a response is in progress"
    if any(i.playing for i in core.queue):
        return "assistant audio is still playing at Twilio"
    if core.tools_pending:
        return "a tool call is running"
    if core.transfer_pending:  # its phrase and its error output belong to this session
        return "a transfer is under way"
    return None


class TranscriptLog:
    """The conversation so far, as the transcript the core saves: what seeds the next session.

    Kept per item (a later, truncated transcript of an item replaces the earlier one: the model
    must know what the caller actually heard), bounded to the most recent :data:`MAX_SEED_ITEMS`.
    """

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: dict[str, tuple[str, str]] = {}  # item_id -> (role, text), in first-seen order

    def add(self, t: SaveTranscript) -> None:
        if not t.text:
            return
        self._items[t.item_id] = (t.role, t.text)
        while len(self._items) > 2 * MAX_SEED_ITEMS:
            del self._items[next(iter(self._items))]

    def __len__(self) -> int:
        return len(self._items)

    def recent(self) -> list[tuple[str, str]]:
        """The most recent items as (role, text), oldest first (see :meth:`recent_items`)."""
        return [(role, text) for _, role, text in self.recent_items()]

    def recent_items(self) -> list[tuple[str, str, str]]:
        """The most recent items as (item id, role, text), oldest first, within :data:`MAX_SEED_ITEMS`
        and :data:`MAX_SEED_CHARS`."""
        out: deque[tuple[str, str, str]] = deque()
        chars = 0
        for item_id, (role, text) in reversed(list(self._items.items())):
            if len(out) >= MAX_SEED_ITEMS or chars + len(text) > MAX_SEED_CHARS:
                break
            out.appendleft((item_id, role, text))
            chars += len(text)
        return list(out)


def seed_messages(items: list[tuple[str, str]], dialect: str) -> list[str]:
    """``conversation.item.create`` text items replaying ``items`` (role caller|assistant, text), appended.

    A renewal session is seeded through :class:`.renewal_seed.Seeding`, which also names the items
    so the switch can catch the session up.
    """
    return [seed_item(role, text, dialect) for role, text in items]
