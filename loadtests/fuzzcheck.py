"""The fuzzer's oracle: play one :class:`~fuzzgen.Case` against a server and judge what came back.

What a server owes a hostile peer, whatever it sent (design.md rule 7, issue 18):

* **an answer** — a whole HTTP request (or upgrade head) gets a status line, never a
  silent close; a request cut short may be closed without one;
* **no server error** — a 5xx for bad *input* means an exception escaped a handler;
* **an end** — once the peer has sent EOF, the server closes its side within
  :data:`CLOSE_WITHIN_S` (a connection it keeps forever is a leak in the making);
* for the mock, **a live session** — after bad client events the session still answers
  a good one (``input_audio_buffer.clear`` → ``input_audio_buffer.cleared``) unless it
  closed the connection, which is what the real API does for framing errors;
* and, judged by the caller of :func:`play` rather than here, the process is alive.

Anything else is a *finding*, named by a short category so that thousands of examples
fold into a few lines of the report.
"""

from __future__ import annotations

import socket
from collections import Counter
from dataclasses import dataclass, field

import fuzzwire as fw
from fuzzgen import Case

CLOSE_WITHIN_S = 5.0  # after our EOF; a call winding down closes its OpenAI leg first (0.5 s at most)
SENTINEL = b'{"type":"input_audio_buffer.clear","event_id":"fuzz-sentinel"}'


@dataclass
class Verdict:
    finding: str | None  # None: the server behaved
    status: int | None = None
    close_code: int | None = None
    detail: str = ""


def play(case: Case, port: int) -> Verdict:
    """Send ``case`` to the server on ``port``; never raises for what the server does."""
    try:
        w = fw.Wire(port)
    except OSError as exc:
        return Verdict("connect_failed", detail=str(exc))
    try:
        if case.kind in ("http", "handshake"):
            return _request(w, case)
        return _websocket(w, case)
    finally:
        w.close()


def _request(w: fw.Wire, case: Case) -> Verdict:
    for c in case.chunks:
        if not w.send(c):
            break
    if case.note != "whole":  # a request cut short: our EOF tells the server no more is coming
        w.half_close()
    # A whole request is answered before we say EOF: HTTP servers (hypercorn among them) may take a
    # client's half-close for an abort and drop the response, which is no fault of the server's.
    head_req = case.chunks[0].startswith(b"HEAD ") if case.chunks else False
    a = w.read_until(lambda a: w.response_complete(head_req) or a.status == 101, CLOSE_WITHIN_S)
    w.half_close()
    if a.status == 101:  # a "bad" upgrade that was valid after all (e.g. a query string): let it end
        a = w.read_until(None, CLOSE_WITHIN_S)
    v = Verdict(None, a.status, a.close_code)
    if a.status is not None and a.status >= 500 and a.status not in (503,):
        v.finding, v.detail = f"http_{a.status}", a.body[:200].decode("utf-8", "replace")
    elif a.status is None and a.timed_out:
        v.finding = "no_answer_no_close"  # neither a status nor a close within the time
    elif a.status is None and case.note == "whole":
        v.finding = "closed_without_status"
    return v


def _websocket(w: fw.Wire, case: Case) -> Verdict:
    w.send(case.upgrade)
    a = w.read_until(lambda a: a.status is not None, CLOSE_WITHIN_S)
    if a.status != 101:
        if a.status in (403, 503):  # a refused signature or a full house: a fair answer
            return Verdict(None, a.status)
        return Verdict("upgrade_not_answered" if a.status is None else f"upgrade_{a.status}", a.status,
                       detail=a.head[:200].decode("latin-1"))
    for c in case.chunks:
        if not w.send(c):
            break
    if case.target == "mock" and case.kind == "messages" and not a.reset:
        w.send(fw.text(SENTINEL))
        w.read_until(lambda a: a.close_code is not None or any('"input_audio_buffer.cleared"' in t for t in a.texts()),
                     CLOSE_WITHIN_S)
        if a.close_code is None and not a.eof and not a.reset and \
                not any('"input_audio_buffer.cleared"' in t for t in a.texts()):
            return Verdict("session_stopped_answering", 101, detail=f"{len(a.texts())} events back")
    w.half_close()
    a.timed_out = False
    w.read_until(None, CLOSE_WITHIN_S)
    if a.timed_out:
        return Verdict("no_close_after_eof", 101, a.close_code)
    return Verdict(None, 101, a.close_code)


@dataclass
class Tally:
    """Counts over many examples: what was sent, how the servers answered, what was found."""

    cases: int = 0
    messages: int = 0
    by_kind: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    close_codes: Counter = field(default_factory=Counter)
    findings: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # finding -> the first case that showed it

    def add(self, case: Case, v: Verdict) -> None:
        self.cases += 1
        self.messages += case.messages
        self.by_kind[f"{case.target}/{case.kind}"] += 1
        if v.status is not None:
            self.statuses[f"{case.target}:{v.status}"] += 1
        if v.close_code is not None:
            self.close_codes[f"{case.target}:{v.close_code}"] += 1
        if v.finding:
            key = f"{case.target}/{case.kind}: {v.finding}"
            self.findings[key] += 1
            self.examples.setdefault(key, (v.detail + " | " if v.detail else "") + case.short(300))


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


__all__ = ["Verdict", "Tally", "play", "port_open", "SENTINEL", "CLOSE_WITHIN_S"]
