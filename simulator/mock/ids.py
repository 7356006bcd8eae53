"""Realtime-API-shaped identifiers.

The real server names everything ``<prefix>_`` + 21 letters and digits
(``event_C9G5RJeJ2gF77mV7f2B1j``, ``sess_C9G5QPteg4UIbotdKLoYQ``, protocols.md
2.4). Bridges log these and sometimes key maps on them, so the mock mints them
in exactly that shape; a seeded ``random.Random`` makes a whole run
reproducible.
"""

from __future__ import annotations

import random
import re
import string

PREFIXES = frozenset({"event", "sess", "conv", "resp", "item", "call"})
ID_LENGTH = 21  # characters after the underscore, as in every real example
ID_RE = re.compile(r"^(event|sess|conv|resp|item|call)_[A-Za-z0-9]{21}$")

_ALPHABET = string.ascii_letters + string.digits
_DEFAULT_RNG = random.Random()  # not SystemRandom: ids are labels, not secrets


def new_id(prefix: str, rng: random.Random | None = None) -> str:
    """Return ``f"{prefix}_"`` followed by 21 random ``[A-Za-z0-9]`` characters."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown Realtime id prefix {prefix!r}; expected one of {sorted(PREFIXES)}")
    r = rng if rng is not None else _DEFAULT_RNG
    return prefix + "_" + "".join(r.choices(_ALPHABET, k=ID_LENGTH))
