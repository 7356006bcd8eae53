"""Which of a bridge's own tools stands in for a scenario's ``end_call`` or ``transfer_call``.

A scenario's script says "here the model hangs up" by calling ``end_call``, and "here it
transfers" by calling ``transfer_call``: the names our bridge declares. Other bridges name the
same tool as their authors liked (``hang_up``, ``end_conversation``, ``transfer_to_human``,
``escalate``…), and the real model calls whichever tool the bridge declared for that purpose. So
when the session did not declare the scripted name, the mock looks for **one** declared function
tool whose name says the same thing (the patterns below) and calls that one instead, with
arguments that fit its declared parameters (:func:`arguments_for`). Two or more candidates, or
none: no stand-in (a guess between two tools would be a verdict on the mock's luck), and the
scenario is skipped as before, naming what the bridge declared.

Only these two roles have stand-ins: a tool that fetches something (``get_weather``) has no
other name to be found under, and a scenario that needs it says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Iterable

from .behaviour import ToolCall

__all__ = ["ROLES", "StandIn", "stand_in", "arguments_for"]


@dataclass(frozen=True)
class StandIn(ToolCall):
    """The bridge's own tool called in place of the scripted one (``stands_for``). A subclass, not a
    field of :class:`ToolCall`, so that a behaviour's JSON (what ``/_mock/behaviour`` takes) stays
    what a scenario can write."""

    stands_for: str = ""

#: role (the scripted tool's name) -> what a declared tool's name must contain to play it
ROLES: Final[dict[str, re.Pattern[str]]] = {
    "end_call": re.compile(r"hang_?up|(?:end|terminate|finish)_?(?:the_?)?(?:call|conversation|chat)|disconnect"
                           r"|goodbye", re.IGNORECASE),
    "transfer_call": re.compile(r"transfer|escalat|hand_?off|forward_?(?:the_?)?call|(?:connect|talk|speak|route)_?to_?"
                                r"(?:a_?|an_?)?(?:human|agent|operator|person|representative|staff)", re.IGNORECASE),
}


def stand_in(wanted: str, declared: Iterable[str]) -> str | None:
    """The one declared tool name that plays ``wanted``'s role, if ``wanted`` itself was not declared."""
    names = list(declared)
    if wanted in names:
        return wanted
    pattern = ROLES.get(wanted)
    if pattern is None:
        return None
    found = [n for n in names if pattern.search(n)]
    return found[0] if len(found) == 1 else None


def arguments_for(tool: dict[str, Any] | None, given: dict[str, Any]) -> dict[str, Any]:
    """The scripted ``given`` arguments fitted to ``tool``'s declared JSON-schema parameters: the
    given ones it declares, and a value of the declared type for each required one still missing
    (the first ``enum`` value, else a short text for strings — the scripted reason when there is
    one — 0, true, [] or {}), as a model fills a form it was given."""
    params = (tool or {}).get("parameters")
    if not isinstance(params, dict):
        return {}
    props = params.get("properties") if isinstance(params.get("properties"), dict) else {}
    out = {k: v for k, v in given.items() if k in props}
    required = params.get("required") if isinstance(params.get("required"), list) else []
    text = next((v for v in given.values() if isinstance(v, str)), "the caller asked for it")
    for key in required:
        if isinstance(key, str) and key not in out:
            out[key] = _value(props.get(key) if isinstance(props.get(key), dict) else {}, text)
    return out


def _value(prop: dict[str, Any], text: str) -> Any:
    enum = prop.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = prop.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    return {"integer": 0, "number": 0, "boolean": True, "array": [], "object": {}}.get(kind, text)
