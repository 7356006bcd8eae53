"""What a renewal session was told of the conversation, and how to catch it up at the switch. No I/O.

A next session is seeded as it connects, minutes before the switch (which waits for a quiet moment);
the exchange in between — usually the one right before the switch — is saved to the transcript
after the seed went out. :class:`Seeding` remembers which transcript item went in as which item of
the new session, with which text, so that at the switch only the lines *new or changed* since then
are sent: a new line is inserted after the last one the session holds, a changed one (an assistant
reply truncated by a barge-in: the model must know what the caller actually heard) replaces its
stale copy in place (``conversation.item.delete``, then ``conversation.item.create`` after the item
before it). Every seeded item gets an id of ours (the Realtime API lets the client name items), so
it can be addressed later and ``previous_item_id`` keeps the catch-up in transcript order even if
the caller has spoken to the new session meanwhile.
"""

from __future__ import annotations

import orjson

#: item ids must be short (the API caps them at 32 characters): "s<session>_<k>"
_ID = "s{n}_{k}"


def seed_item(role: str, text: str, dialect: str, item_id: str | None = None,
              previous: str | None = None) -> str:
    """One ``conversation.item.create`` text item replaying one transcript line (role caller|assistant).

    The caller's words are ``user`` ``input_text``; the assistant's are ``assistant`` text
    (``output_text`` in GA, ``text`` in beta), so the model continues as the same assistant.
    """
    if role == "assistant":
        content = {"type": "output_text" if dialect == "ga" else "text", "text": text}
        item: dict[str, object] = {"type": "message", "role": "assistant", "content": [content]}
    else:
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    if item_id is not None:
        item = {"id": item_id, **item}
    ev: dict[str, object] = {"type": "conversation.item.create"}
    if previous is not None:
        ev["previous_item_id"] = previous
    ev["item"] = item
    return orjson.dumps(ev).decode()


class Seeding:
    """The transcript lines one new session holds: transcript item id -> (its item id there, text)."""

    __slots__ = ("session", "dialect", "_held", "_order", "_k")

    def __init__(self, session: int, dialect: str) -> None:
        self.session = session
        self.dialect = dialect
        self._held: dict[str, tuple[str, str]] = {}
        self._order: list[str] = []  # transcript item ids, in the session's conversation order
        self._k = 0

    def __len__(self) -> int:
        return len(self._held)

    def seed(self, items: list[tuple[str, str, str]]) -> list[str]:
        """The messages seeding a fresh session with ``items`` (item id, role, text), oldest first."""
        return self.catch_up(items)[0]

    def catch_up(self, items: list[tuple[str, str, str]]) -> tuple[list[str], int]:
        """The messages bringing the session up to ``items``, and how many lines they send.

        Lines it holds with the same text are skipped; lines no longer in ``items`` (the oldest,
        past the seed's bounds) stay: the session already has them, and nothing contradicts them.
        """
        msgs: list[str] = []
        sent = 0
        for tid, role, text in items:
            held = self._held.get(tid)
            if held is not None and held[1] == text:
                continue
            if held is not None:  # changed: replace the stale copy where it stands
                msgs.append(orjson.dumps({"type": "conversation.item.delete", "item_id": held[0]}).decode())
                pos = self._order.index(tid)
                self._order.pop(pos)
            else:  # new: after the last line the session holds
                pos = len(self._order)
            previous = self._held[self._order[pos - 1]][0] if pos > 0 else "root"
            self._k += 1
            sid = _ID.format(n=self.session, k=self._k)
            msgs.append(seed_item(role, text, self.dialect, sid, previous))
            self._held[tid] = (sid, text)
            self._order.insert(pos, tid)
            sent += 1
        return msgs, sent
