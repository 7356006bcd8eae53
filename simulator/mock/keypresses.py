"""Which key a client's user text item names: how the mock "hears" a caller's keypress.

A bridge tells the model about a Twilio ``dtmf`` event the only way the Realtime API offers: a
conversation item, in practice a user text message ("The caller pressed 1", "DTMF: #",
"Caller entered key 5 on the keypad"). The mock counts a user ``input_text`` as a keypress when
it reports one (pressed, entered, keypress, DTMF) and names exactly one key 0-9, ``*`` or ``#``
as a token of its own — not an instruction that merely mentions a key ("offer the menu: press 1
for the weather", a greeting prompt); the key is recorded (the session snapshot's ``dtmf``, the
harness's ``dtmf_heard``) and a ``[mock] rules`` entry ``when = "dtmf:KEY"`` answers the next
response. Words for digits ("one") are not read: bridges send the key itself.
"""

from __future__ import annotations

import re
from typing import Any

_MENTION = re.compile(r"\b(?:pressed|entered|keypress(?:es)?|dtmf)\b", re.IGNORECASE)
_KEY = re.compile(r"(?<![\w*#])([0-9*#])(?![\w*#])")


def key_named(content: list[dict[str, Any]]) -> str | None:
    """The key a user message's ``input_text`` names, or None (not a keypress, or ambiguous)."""
    for part in content:
        text = part.get("text") if isinstance(part, dict) and part.get("type") == "input_text" else None
        if not isinstance(text, str) or not _MENTION.search(text):
            continue
        keys = _KEY.findall(text)
        if len(keys) == 1:
            return keys[0]
    return None
