"""Twilio-format identifiers.

Bridges log, store and sometimes validate these (``CA…`` call, ``AC…`` account,
``MZ…`` stream: two letters and 32 lowercase hex digits, 34 characters), so the
fake caller mints them in exactly that shape. A seeded ``random.Random`` makes a
whole run reproducible.
"""

from __future__ import annotations

import random
import re

SID_RE = re.compile(r"^(AC|CA|MZ)[0-9a-f]{32}$")
#: an account SID as a user types it (Twilio's console shows lowercase; either case is accepted)
ACCOUNT_SID_RE = re.compile(r"^AC[0-9a-fA-F]{32}$")
#: a phone number in ITU-T E.164, as Twilio's API takes it: +, no leading 0, at most 15 digits
E164_RE = re.compile(r"^\+[1-9][0-9]{1,14}$")


def make_sid(prefix: str, rng: random.Random | None = None) -> str:
    """Return ``prefix`` followed by 32 hex digits, as Twilio's SIDs are."""
    if len(prefix) != 2 or not prefix.isalpha() or not prefix.isupper():
        raise ValueError(f"a Twilio SID prefix is two capital letters, not {prefix!r}")
    r = rng or random.Random()
    return prefix + f"{r.getrandbits(128):032x}"
