"""Which key a client's user or system text item names: how the mock "hears" a caller's keypress.

A bridge tells the model about a Twilio ``dtmf`` event the only way the Realtime API offers: a
conversation item, in practice a user (or system) text message, worded as each bridge's author
liked ("The caller pressed 1", "DTMF: #", "Caller entered key 5 on the keypad", "User dialed digit
3", "Keypad input: 9", "The caller selected 2"). The mock counts a user or system ``input_text`` as
a keypress when it reports one in any of those words (a past-tense verb of pressing, or a noun for
the key: digit, keypad, keypress, DTMF, tone, button) and names exactly one key 0-9, ``*`` or ``#``
as a token of its own — not an imperative that merely offers a key ("offer the menu: press 1 for
the weather"); the key is recorded with its time (the session snapshot's ``dtmf`` and ``dtmf_ns``)
and a ``[mock] rules`` entry ``when = "dtmf:KEY"`` answers the next response. Words for digits
("one") are not read: bridges send the key itself; nor is a message naming several keys or a
multi-digit number ("pressed 12"): one item per keypress is what is counted.

The wording is read generously on purpose: a verdict must not depend on how a bridge phrases the
item. The harness (``dtmf_heard``) guards the other side by time: a key named before the caller
pressed anything (a greeting prompt that reads "digit 1 is the weather") is not counted.
"""

from __future__ import annotations

import re
from typing import Any

_MENTION = re.compile(r"\b(?:pressed|pushed|entered|selected|chose|dialled|dialed|typed|tapped|hit|keypress(?:es)?"
                      r"|keypad|digits?|dtmf|touch[- ]?tones?|tones?|buttons?)\b", re.IGNORECASE)
_KEY = re.compile(r"(?<![\w*#])([0-9*#])(?![\w*#])")


def key_named(content: list[dict[str, Any]]) -> str | None:
    """The key a user or system message's ``input_text`` names, or None (not a keypress, or ambiguous)."""
    for part in content:
        text = part.get("text") if isinstance(part, dict) and part.get("type") == "input_text" else None
        if not isinstance(text, str) or not _MENTION.search(text):
            continue
        keys = _KEY.findall(text)
        if len(keys) == 1:
            return keys[0]
    return None
