"""What Twilio did with a dialled call, from its REST records: the calls it dialled from the call's legs.

A transfer (``<Dial>`` run on the agent's leg after a REST redirect) shows in Twilio's records as a
child call: direction ``outbound-dial``, ``ParentCallSid`` the leg that dialled it. When callsim dials
a number of the same account, that number's own leg is a call of its own (direction ``inbound``,
From callsim's caller ID, To the number, started with or after callsim's call): the children of both
are listed. Works the same against Twilio and ``callsim twilio-emulator``; the client is synchronous,
so :func:`dialled_from` runs in a worker thread.
"""

from __future__ import annotations

from typing import Any

#: at most this many calls are read per listing (a leg dials one call per <Dial>)
LIST_LIMIT = 50


def _row(c: Any) -> dict[str, Any]:
    return {"sid": c.sid, "parent_call_sid": c.parent_call_sid, "direction": c.direction,
            "from": c._from, "to": c.to, "status": c.status}


def dialled_from(client: Any, call_sid: str) -> list[dict[str, Any]]:
    """The calls dialled from ``call_sid`` and from the number's inbound leg of it, as report rows."""
    ours = client.calls(call_sid).fetch()
    legs = [ours.sid]
    for c in client.calls.list(to=ours.to, from_=ours._from, limit=LIST_LIMIT):
        started_with_ours = c.start_time is None or ours.start_time is None or c.start_time >= ours.start_time
        if c.direction == "inbound" and c.sid != ours.sid and started_with_ours:
            legs.append(c.sid)
    out: list[dict[str, Any]] = []
    for leg in legs:
        out += [_row(c) for c in client.calls.list(parent_call_sid=leg, limit=LIST_LIMIT)]
    return out
