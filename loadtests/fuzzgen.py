"""Hypothesis strategies for the fuzzer: what a hostile or broken peer may send our servers.

Each strategy draws a :class:`Case`: which server, the bytes to send (an HTTP request,
a WebSocket upgrade, frames), and what the server owes in return (:mod:`fuzzcheck`
judges it). Four families, for both servers we ship:

* **messages** — well-framed WebSocket messages whose *content* is wrong: Twilio's
  ``connected/start/media/mark/dtmf/stop`` (protocols.md 1.2) and the Realtime client
  events (built from the ``openai`` package's own pydantic types, so every event type
  and field the SDK knows is covered), first valid, then mutated: wrong types, missing
  and unknown fields, huge strings, deep nesting, numbers past 64 bits, control
  characters and log-injection text, invalid JSON, binary frames, invalid UTF-8;
* **frames** — framing abuse after a valid handshake: reserved opcodes and bits,
  unmasked client frames, fragmented or oversized control frames, stray
  continuations, close frames with codes no one may send, lengths that lie;
* **handshakes** — malformed upgrade requests (bad key/version/method, missing
  headers, oversized heads, a head cut short);
* **http** — the bridge's webhook and other routes, and the mock's control routes:
  malformed forms and heads, wrong content types and lengths, bad chunking,
  signatures, pipelined requests.

Strategies produce plain data; nothing here opens a socket.
"""

from __future__ import annotations

import functools
import json
import re
import typing
from dataclasses import dataclass, field
from typing import Any

import fuzzwire as fw
from hypothesis import strategies as st
from pydantic import BaseModel

# --------------------------------------------------------------------- the case


@dataclass
class Case:
    """One connection's worth of abuse.

    ``target``: ``bridge`` | ``bridge_auth`` | ``mock``; ``kind``: ``messages`` |
    ``frames`` | ``handshake`` | ``http``; ``upgrade``: the handshake to send first
    (``messages``/``frames``), after which ``chunks`` follow; for ``handshake``/``http``
    the request is in ``chunks`` alone.
    """

    target: str
    kind: str
    chunks: list[bytes]
    upgrade: bytes = b""
    note: str = ""
    messages: int = field(default=0)  # how many messages/frames/requests this case sends

    def short(self, limit: int = 600) -> str:
        """The case for a report, cut at ``limit`` bytes: the request, or what followed the (valid)
        upgrade as ``opcode:payload`` per frame (unmasked, so that it can be read)."""
        raw = b"".join(self.chunks)
        if not self.upgrade:
            text = repr(raw[:limit]) + (f"... ({len(raw)} bytes)" if len(raw) > limit else "")
            return f"{self.target}/{self.kind}{' ' + self.note if self.note else ''}: {text}"
        shown, buf = [], bytearray(raw)
        while buf and sum(len(x) for x in shown) < limit:
            parsed = fw.parse_frame(buf)
            if parsed is None:
                shown.append(f"<{len(buf)} bytes of a frame cut short or junk: {bytes(buf[:40])!r}>")
                break
            op, payload, used = parsed
            cut = payload[:limit]
            shown.append(f"{op}:{cut!r}" + (f"...({len(payload)} bytes)" if len(payload) > len(cut) else ""))
            del buf[:used]
        return f"{self.target}/{self.kind} after a valid upgrade: " + " | ".join(shown)


# ----------------------------------------------------------------- JSON values

WEIRD_TEXT = st.sampled_from([
    "", " ", "\n", "\r\nINFO callsim.bridge: call CAforged: forged log line", "\x1b[31mred\x1b[0m", "\x00",
    "\u2028", "\ufeff", "null", "0", "-1", "1e400", "NaN", "\U0001F4DE" * 50, "é" * 300, "../../etc/passwd",
    "<Response><Hangup/></Response>", "%s%s%n", "{{7*7}}", "a" * 70, "MZ" + "0" * 32, "CA" + "f" * 32,
])
BIG_NUMBERS = st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, -(10**30), 1.7976931348623157e308, -0.0, 1e-320])
_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**31), 2**31), st.floats(allow_nan=False, allow_infinity=False),
                  st.text(max_size=12), WEIRD_TEXT, BIG_NUMBERS)
JSON_ANY = st.recursive(_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                        max_leaves=10)
HUGE = st.sampled_from([2_000, 70_000, 300_000, 1_200_000]).map(lambda n: "A" * n)
# Nesting past what Python's json can build (~1000 levels) is written as a placeholder string that
# :func:`encoded` swaps for the raw brackets: orjson, which both servers use, stops at 1024 levels.
DEEP = st.integers(20, 5_000).map(lambda d: json.loads("[" * d + "]" * d) if d < 500 else f"__DEEP_{d}__")
_DEEP_MARK = re.compile(r'"__DEEP_(\d+)__"')


def _deep_text(d: int) -> str:
    return "[" * d + "]" * d


def weird_value() -> st.SearchStrategy[Any]:
    return st.one_of(JSON_ANY, WEIRD_TEXT, BIG_NUMBERS, HUGE, DEEP)


@st.composite
def mutate(draw: st.DrawFn, value: Any, rate: int = 4, depth: int = 0) -> Any:
    """``value`` with some parts replaced, dropped or added (1 in ``rate`` nodes touched)."""
    if depth < 6 and isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            roll = draw(st.integers(0, rate * 3))
            if roll == 0:
                continue  # a field goes missing
            out[k] = draw(weird_value()) if roll == 1 else draw(mutate(v, rate, depth + 1))
        if draw(st.integers(0, rate * 2)) == 0:
            out[draw(st.text(min_size=1, max_size=10) | WEIRD_TEXT)] = draw(weird_value())  # an unknown one appears
        return out
    if depth < 6 and isinstance(value, list):
        return [draw(mutate(v, rate, depth + 1)) for v in value]
    return draw(weird_value()) if draw(st.integers(0, rate)) == 0 else value


@st.composite
def encoded(draw: st.DrawFn, obj: Any) -> bytes:
    """One WebSocket message carrying ``obj``: usually a JSON text frame, sometimes broken on the way."""
    way = draw(st.integers(0, 19))
    try:
        body = json.dumps(obj, ensure_ascii=draw(st.booleans()))
    except (ValueError, RecursionError):
        body = _deep_text(5000)
    body = _DEEP_MARK.sub(lambda m: _deep_text(int(m.group(1))), body)
    if way == 0:
        return fw.frame(fw.OP_BINARY, body.encode("utf-8", "surrogatepass"))
    if way == 1:
        return fw.text(body[: draw(st.integers(0, max(0, len(body) - 1)))])  # cut short: invalid JSON
    if way == 2:
        raw = body.encode("utf-8", "surrogatepass")
        at = draw(st.integers(0, len(raw)))
        return fw.text(raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]))
                       + raw[at:])  # invalid UTF-8 in a text frame
    if way == 3:
        return fw.text(body + draw(st.sampled_from([" ", "}", "\x00", ",{}", "\n" + body])))
    if way == 4 and body.startswith("{") and len(body) > 2:  # a duplicated key (the last one wins in most parsers)
        return fw.text('{"event":"media","type":"session.update",' + body[1:])
    return fw.text(body.encode("utf-8", "surrogatepass"))


# ------------------------------------------------------------- Twilio (bridge)

HEX32 = st.text("0123456789abcdef", min_size=32, max_size=32)
ULAW_FRAME = "/" * 212 + "/w=="  # base64 of 160 bytes of 0xFF: 20 ms of μ-law silence, as Twilio sends


def sid(prefix: str) -> st.SearchStrategy[str]:
    return HEX32.map(lambda h: prefix + h)


@st.composite
def twilio_start(draw: st.DrawFn, tokens: list[tuple[str, str]]) -> dict[str, Any]:
    """A valid ``start`` (protocols.md 1.2); with ``tokens``, the call SID and its per-call token
    come from the bridge's own webhook, so the call gets past the token check."""
    stream = draw(sid("MZ"))
    if tokens and draw(st.integers(0, 4)):
        call, token = draw(st.sampled_from(tokens))
        params = {"token": token, "callSid": call, "from": "+15551230000", "to": "+15559870000"}
    else:
        call, params = draw(sid("CA")), {"token": draw(st.text(max_size=30))}
    return {"event": "start", "sequenceNumber": "1", "streamSid": stream,
            "start": {"accountSid": draw(sid("AC")), "streamSid": stream, "callSid": call, "tracks": ["inbound"],
                      "customParameters": params,
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}


_STREAM, _CALL = "{stream}", "{call}"  # placeholders: the strategy is built once, the SIDs filled in per stream


def _fill(value: Any, stream: str, call: str) -> Any:
    if value == _STREAM:
        return stream
    if value == _CALL:
        return call
    if isinstance(value, dict):
        return {k: _fill(v, stream, call) for k, v in value.items()}
    return value


@functools.cache
def _twilio_others() -> st.SearchStrategy[dict[str, Any]]:
    """Every message a stream may carry after ``start`` (protocols.md 1.2), and some it may not."""
    stream, call = _STREAM, _CALL
    seq = st.integers(2, 10**6).map(str)
    return st.one_of(
        st.builds(lambda s, c: {"event": "media", "sequenceNumber": s, "streamSid": stream,
                                "media": {"track": "inbound", "chunk": c, "timestamp": c, "payload": ULAW_FRAME}},
                  seq, seq),
        st.builds(lambda s, p: {"event": "media", "sequenceNumber": s, "streamSid": stream,
                                "media": {"track": "inbound", "chunk": "1", "timestamp": "20", "payload": p}},
                  seq, st.one_of(st.binary(max_size=600).map(lambda b: __import__("base64").b64encode(b).decode()),
                                 st.text(max_size=40), HUGE)),
        st.builds(lambda s, n: {"event": "mark", "sequenceNumber": s, "streamSid": stream, "mark": {"name": n}},
                  seq, st.one_of(st.text(max_size=20), st.sampled_from(["apology", "0:1:160", "9:9:99999999", "1:x:2"]))),
        st.builds(lambda s, d: {"event": "dtmf", "sequenceNumber": s, "streamSid": stream,
                                "dtmf": {"track": "inbound_track", "digit": d}}, seq, st.text(max_size=3)),
        st.builds(lambda s: {"event": "stop", "sequenceNumber": s, "streamSid": stream,
                             "stop": {"accountSid": "AC" + "0" * 32, "callSid": call}}, seq),
        st.just({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
        st.builds(lambda e: {"event": e, "streamSid": stream}, st.text(max_size=12) | WEIRD_TEXT),
        JSON_ANY,
    )


@st.composite
def twilio_messages(draw: st.DrawFn, tokens: list[tuple[str, str]]) -> list[bytes]:
    """A stream as a broken or hostile Twilio might send it: mostly in order, partly mutated."""
    out: list[bytes] = []
    if draw(st.integers(0, 4)):
        out.append(draw(encoded({"event": "connected", "protocol": "Call", "version": "1.0.0"})))
    start = draw(twilio_start(tokens))
    if draw(st.integers(0, 2)):
        out.append(fw.text(json.dumps(start)))  # a start that works: the call goes on, OpenAI is dialled
    else:
        out.append(draw(encoded(draw(mutate(start, rate=3)))))
    for _ in range(draw(st.integers(0, 25))):
        msg = _fill(draw(_twilio_others()), start["streamSid"], start["start"]["callSid"])
        out.append(draw(encoded(draw(mutate(msg, rate=5)) if draw(st.integers(0, 2)) == 0 else msg)))
    return out


# ------------------------------------------------------------- Realtime (mock)


def _union_members(alias: Any) -> tuple[Any, ...]:
    inner = typing.get_args(alias)[0] if typing.get_origin(alias) is typing.Annotated else alias
    return typing.get_args(inner)


def client_event_models() -> tuple[type[BaseModel], ...]:
    from openai.types import realtime as ga

    return _union_members(ga.RealtimeClientEvent)


def from_annotation(ann: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values of the type ``ann`` (a pydantic field annotation of the ``openai`` SDK)."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        return from_annotation(args[0], depth)
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin is typing.Union or str(origin) == "types.UnionType":
        return st.one_of(*[from_annotation(a, depth) for a in args])
    if origin in (list, typing.List, tuple):
        return st.lists(from_annotation(args[0], depth + 1) if args else JSON_ANY, max_size=3 if depth < 3 else 0)
    if origin in (dict, typing.Dict):
        return st.dictionaries(st.text(max_size=8), from_annotation(args[1], depth + 1) if len(args) > 1 else JSON_ANY,
                               max_size=3 if depth < 3 else 0)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return model_dict(ann, depth + 1) if depth < 5 else st.just({})
    if ann is str:
        return st.one_of(st.text(max_size=16), st.sampled_from(["auto", "audio/pcmu", "realtime", "server_vad"]))
    if ann is bool:
        return st.booleans()
    if ann is int:
        return st.integers(-5, 100_000)
    if ann is float:
        return st.floats(-2, 2, allow_nan=False)
    if ann is type(None):
        return st.none()
    return JSON_ANY


@functools.cache
def model_dict(model: type[BaseModel], depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """A dict in the shape of ``model``: required fields always, optional ones sometimes."""
    required = {k: from_annotation(f.annotation, depth) for k, f in model.model_fields.items() if f.is_required()}
    optional = {k: from_annotation(f.annotation, depth) for k, f in model.model_fields.items() if not f.is_required()}
    return st.fixed_dictionaries(required, optional=optional)


@functools.cache  # built once: the SDK's models make a large tree of strategies
def realtime_event() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(*[model_dict(m) for m in client_event_models()])


GOOD_UPDATE = {"type": "session.update", "session": {
    "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": {"type": "server_vad"}},
                                  "output": {"format": {"type": "audio/pcmu"}}}}}


@st.composite
def realtime_messages(draw: st.DrawFn) -> list[bytes]:
    """A Realtime session as a broken or hostile client might drive it."""
    out: list[bytes] = []
    if draw(st.booleans()):
        out.append(fw.text(json.dumps(GOOD_UPDATE)))
    for _ in range(draw(st.integers(1, 20))):
        ev = draw(realtime_event())
        if draw(st.integers(0, 2)) == 0:
            ev = draw(mutate(ev, rate=3))
        out.append(draw(encoded(ev)))
    return out


# ---------------------------------------------------------------- framing abuse

CLOSE_CODES = st.sampled_from([0, 999, 1000, 1001, 1004, 1005, 1006, 1012, 1014, 1015, 1016, 2999, 3000, 4999, 5000,
                               65535])


@st.composite
def abusive_frames(draw: st.DrawFn, good: list[bytes]) -> list[bytes]:
    """Frames a WebSocket peer must refuse (RFC 6455), mixed with ``good`` ones."""
    kinds = [
        st.builds(lambda op, p: fw.frame(op, p), st.sampled_from([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]), st.binary(max_size=20)),
        st.builds(lambda r: fw.text(b'{"event":"x"}', rsv=r), st.integers(1, 7)),
        st.builds(lambda p: fw.text(p, mask=False), st.binary(max_size=40)),  # a client frame unmasked
        st.builds(lambda p: fw.frame(fw.OP_PING, p, fin=False), st.binary(max_size=10)),  # fragmented control
        st.builds(lambda n: fw.frame(fw.OP_PING, b"p" * n), st.integers(126, 300)),  # control frame too long
        st.builds(lambda p: fw.frame(fw.OP_CONT, p), st.binary(max_size=20)),  # continuation of nothing
        st.builds(lambda c, r: fw.close(c, r), CLOSE_CODES, st.sampled_from([b"", b"bye", b"\xff\xfe", b"x" * 123])),
        st.just(fw.frame(fw.OP_CLOSE, b"\x03")),  # a 1-byte close payload
        st.builds(lambda p: fw.frame(fw.OP_PING, p), st.binary(max_size=125)),  # legal: must be ponged
        st.builds(lambda a, b: fw.text(a, fin=False) + fw.frame(fw.OP_PING, b"") + fw.frame(fw.OP_CONT, b),
                  st.binary(max_size=10), st.binary(max_size=10)),  # fragments with a ping between (legal)
        st.builds(lambda a: fw.text(a, fin=False) + fw.text(a), st.binary(max_size=10)),  # new message mid-fragment
        st.builds(lambda n: fw.frame(fw.OP_TEXT, b"", length=n), st.sampled_from([2**17, 2**21, 2**31, 2**63 - 1, 2**64 - 1])),
        st.builds(lambda n, k: fw.frame(fw.OP_TEXT, b"x" * k, length=n), st.integers(10, 5000), st.integers(0, 9)),  # cut short
        st.sampled_from(good) if good else st.just(b""),
        st.binary(min_size=1, max_size=64),  # garbage bytes
    ]
    return [draw(st.one_of(*kinds)) for _ in range(draw(st.integers(1, 6)))]


# ------------------------------------------------------------------ handshakes


@st.composite
def bad_upgrade(draw: st.DrawFn, path: str, port: int, headers: list[tuple[str, str]]) -> tuple[bytes, bool]:
    """A WebSocket upgrade request that is wrong in one or a few ways, and whether its head is whole
    (a whole head is owed an HTTP answer; one cut short may just be closed)."""
    way = draw(st.integers(0, 11))
    if way == 6:  # a head cut short, then EOF
        head = fw.upgrade(path, port, headers)
        return head[: draw(st.integers(1, len(head) - 2))], False
    if way == 11:  # bare LF line ends (RFC 9112 lets a server accept them): not a whole head to a strict one
        return fw.upgrade(path, port, headers).replace(b"\r\n", b"\n"), False
    return draw(_bad_upgrade(way, path, port, headers)), True


@st.composite
def _bad_upgrade(draw: st.DrawFn, way: int, path: str, port: int, headers: list[tuple[str, str]]) -> bytes:
    if way == 0:
        return fw.upgrade(path, port, headers, key=draw(st.sampled_from(["", "short", "!!!!", "a" * 200])))
    if way == 1:
        return fw.upgrade(path, port, headers, version=draw(st.sampled_from(["8", "", "13, 8", "99999999999"])))
    if way == 2:
        return fw.upgrade(path, port, headers, method=draw(st.sampled_from(["POST", "PUT", "get", "CONNECT"])))
    if way == 3:
        head = fw.upgrade(path, port, headers)
        drop = draw(st.sampled_from([b"Upgrade: websocket\r\n", b"Connection: Upgrade\r\n", b"Host: "]))
        return head.replace(drop, b"X-" + drop, 1)
    if way == 4:  # oversized heads (the bridge reads 16 KiB of head, websockets 8 KiB per line)
        n = draw(st.sampled_from([9_000, 17_000, 40_000, 70_000]))
        return fw.upgrade(path, port, headers + [("X-Big", "b" * n)])
    if way == 5:  # many headers
        return fw.upgrade(path, port, headers + [(f"X-H{i}", "v") for i in range(draw(st.integers(100, 400)))])
    if way == 7:
        return fw.upgrade(draw(st.sampled_from([path + "?x=1", path + "/", "/" + path, path + "%00", path.upper()])),
                          port, headers)
    if way == 8:
        return fw.upgrade(path, port, headers).replace(b"HTTP/1.1", draw(st.sampled_from([b"HTTP/1.0", b"HTTP/2.0", b"HTTP/9"])), 1)
    if way == 9:
        return fw.upgrade(path, port, headers + [("Bad Header", "x"), ("\x01", "\x02")])
    return fw.upgrade(path, port, headers + [("X-Latin", "\udcff\udcfe")])  # way 10


# ------------------------------------------------------------------------ HTTP

FORM_KEYS = st.sampled_from(["CallSid", "From", "To", "AccountSid", "CallStatus", "Direction", "ApiVersion", "Digits",
                             "callSid", "", "a" * 300])
CONTENT_TYPES = st.sampled_from(["application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=latin-1",
                                 "multipart/form-data; boundary=x", "multipart/form-data", "application/json", "text/xml",
                                 "", "*/*", "application/x-www-form-urlencoded; charset=utf-9"])


@st.composite
def form_body(draw: st.DrawFn) -> bytes:
    from urllib.parse import quote

    pairs = draw(st.lists(st.tuples(FORM_KEYS | st.text(max_size=10), st.text(max_size=40) | WEIRD_TEXT), max_size=8))
    body = "&".join(f"{quote(k)}={quote(v, safe='', errors='surrogatepass') if draw(st.booleans()) else v}"
                    for k, v in pairs)
    raw = body.encode("utf-8", "surrogatepass")
    junk = draw(st.sampled_from([b"", b"%", b"%zz", b"%ff%fe", b"&&&==", b"\xff\xfe", b"--x\r\n\r\n--", b"A" * 1_100_000]))
    return raw + junk


@st.composite
def http_request(draw: st.DrawFn, port: int, paths: list[str], sign: Any = None) -> tuple[bytes, bool]:
    """One (or two pipelined) HTTP requests, each malformed in some way or none, and whether the
    first one is whole by its own framing (then it is owed an answer even though EOF follows)."""
    method = draw(st.sampled_from(["POST", "POST", "GET", "HEAD", "PUT", "DELETE", "OPTIONS", "BREW", "GET "]))
    path = draw(st.sampled_from(paths) | st.text(max_size=20).map(lambda s: "/" + s))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1x", ""]))
    body = draw(form_body()) if method in ("POST", "PUT") or draw(st.integers(0, 5)) == 0 else b""
    headers: list[tuple[str, str]] = [("Host", f"127.0.0.1:{port}")]
    headers.append(("Content-Type", draw(CONTENT_TYPES)))
    length = draw(st.sampled_from(["right", "right", "none", "short", "long", "negative", "junk", "chunked", "badchunk"]))
    if length == "right":
        headers.append(("Content-Length", str(len(body))))
    elif length == "short":
        headers.append(("Content-Length", str(max(0, len(body) - 5))))
    elif length == "long":
        headers.append(("Content-Length", str(len(body) + 10)))  # the server waits for bytes that never come
    elif length == "negative":
        headers.append(("Content-Length", "-1"))
    elif length == "junk":
        headers.append(("Content-Length", draw(st.sampled_from(["abc", "1e3", "99999999999999999999", "5, 6"]))))
    elif length in ("chunked", "badchunk"):
        headers.append(("Transfer-Encoding", "chunked"))
        body = (b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n") if length == "chunked" else \
            draw(st.sampled_from([b"zz\r\nabc\r\n0\r\n\r\n", b"5\r\nabc", b"fffffffffffffffff\r\n", body]))
    if draw(st.booleans()):
        headers.append(("Connection", draw(st.sampled_from(["close", "keep-alive", "Upgrade", "close, close"]))))
    if sign is not None and draw(st.integers(0, 2)):
        headers.append(("X-Twilio-Signature", sign(path, body) if draw(st.booleans()) else draw(st.text(max_size=40))))
    if draw(st.integers(0, 6)) == 0:
        headers.append(draw(st.sampled_from([("X-Big", "x" * 20_000), ("Bad Header", "1"), ("X-Fold", "a\r\n b"),
                                             ("Host", "evil.example.com"), ("X-Nul", "\x00")])))
    head = f"{method} {path} {version}".rstrip() + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    req = head.encode("utf-8", "surrogateescape") + body
    if draw(st.integers(0, 5)) == 0:  # pipelined: a second request right behind
        req += f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    return req, length in ("right", "chunked", "none", "short")


# ----------------------------------------------------------------- all together


@dataclass(frozen=True)
class Target:
    """A server to fuzz, as the strategies need to know it."""

    name: str  # bridge | bridge_auth | mock
    port: int
    ws_path: str  # /media-stream | /v1/realtime
    ws_headers: tuple[tuple[str, str], ...] = ()  # what a valid upgrade carries (a signature, a key)
    http_paths: tuple[str, ...] = ()
    tokens: tuple[tuple[str, str], ...] = ()  # (CallSid, per-call token) pairs from the bridge's webhook
    sign: Any = None  # (path, body) -> X-Twilio-Signature of a webhook request

    @property
    def is_bridge(self) -> bool:
        return self.name.startswith("bridge")


@st.composite
def cases(draw: st.DrawFn, targets: list[Target]) -> Case:
    """One connection's worth of abuse against one of ``targets``."""
    t = draw(st.sampled_from(targets))
    kind = draw(st.sampled_from(["messages", "messages", "messages", "frames", "handshake", "http"]))
    good = fw.upgrade(t.ws_path, t.port, list(t.ws_headers))
    if kind == "messages":
        msgs = draw(twilio_messages(list(t.tokens))) if t.is_bridge else draw(realtime_messages())
        return Case(t.name, kind, msgs, upgrade=good, messages=len(msgs))
    if kind == "frames":
        base = [fw.text(json.dumps(GOOD_UPDATE))] if not t.is_bridge else \
            [fw.text(json.dumps(draw(twilio_start(list(t.tokens)))))]
        frames = draw(abusive_frames(base))
        return Case(t.name, kind, frames, upgrade=good, messages=len(frames))
    if kind == "handshake":
        head, whole = draw(bad_upgrade(t.ws_path, t.port, list(t.ws_headers)))
        return Case(t.name, kind, [head], note="whole" if whole else "cut", messages=1)
    req, whole = draw(http_request(t.port, list(t.http_paths), t.sign))
    return Case(t.name, kind, [req], note="whole" if whole else "cut", messages=1)


__all__ = ["Case", "Target", "cases", "twilio_messages", "realtime_messages", "abusive_frames", "bad_upgrade", "http_request",
           "mutate", "encoded", "model_dict", "realtime_event", "client_event_models", "GOOD_UPDATE", "ULAW_FRAME"]
