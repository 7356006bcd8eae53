"""Request authentication: Twilio signatures and per-call stream tokens.

Two independent checks, because they protect different things:

* ``X-Twilio-Signature`` proves a request came from Twilio (HMAC-SHA1 with the
  account auth token, protocols.md 1.6). On the WebSocket upgrade there is no
  body, so Twilio signs the ``wss://host/path`` URL with empty params.
* The per-call token is put in ``<Parameter>`` by our webhook and must come back
  in ``start.customParameters``: only a stream that went through *our* webhook
  for *that* call, *recently*, and *once* can open an OpenAI session. The stream
  upgrade's signature cannot do this: it signs only the stream URL, so it is the
  same for every call and can be replayed. A token is ``<issued ms>.<nonce>.<mac>``
  (HMAC-SHA256 of CallSid, issue time and nonce), good for a TTL and for one
  ``start`` (:class:`StreamTokens` remembers the ones used until they expire).

Whether a *missing* token is refused is the app's choice (``require_stream_token``;
by default only when signatures are checked: without an auth token anyone can
fetch a token from the webhook, so requiring one would stop nobody and would
break the documented ``callsim call --target ws://…/media-stream``). A token that
*is* presented is always checked.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import re
import secrets
from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from twilio.request_validator import RequestValidator

__all__ = ["webhook_signature_ok", "stream_signature_ok", "call_token", "call_token_ok", "StreamTokens",
           "TokenVerdict"]

_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}


def webhook_signature_ok(
    auth_token: str, url: str, params: Mapping[str, str], signature: str | None
) -> bool:
    """Validate a webhook's ``X-Twilio-Signature`` over its public URL and form params.

    ``url`` must be the URL Twilio requested (our PUBLIC_URL + path + query), not
    one rebuilt from a proxied request. Multi-value mappings (werkzeug MultiDict)
    are supported by ``RequestValidator``.
    """
    if not signature or not auth_token:
        return False
    try:
        return bool(RequestValidator(auth_token).validate(url, params, signature))
    except Exception:  # malformed URL or params: never a 500, just "not valid"
        return False


def _url_variants(url: str) -> list[str]:
    """The URL as given, without its port, and with the scheme's default port.

    ``RequestValidator.validate`` does this too, but it adds ``:80`` to anything
    that is not ``https``, which is wrong for ``wss``; hence our own list.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if parts.username or parts.password:
        return [url]
    variants = [url, urlunsplit(parts._replace(netloc=host))]
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    if port:
        variants.append(urlunsplit(parts._replace(netloc=f"{host}:{port}")))
    return list(dict.fromkeys(variants))


def stream_signature_ok(auth_token: str, stream_url: str, signature: str | None) -> bool:
    """Validate the WebSocket upgrade's ``X-Twilio-Signature`` over ``stream_url``.

    ``stream_url`` is our configured ``wss://host/media-stream`` (never the Host
    header). Signed with empty params; accepted with or without the port.
    """
    if not signature or not auth_token:
        return False
    validator = RequestValidator(auth_token)
    try:
        expected = [validator.compute_signature(u, {}) for u in _url_variants(stream_url)]
    except Exception:
        return False
    given = signature.encode("utf-8", "surrogatepass")
    # Check every variant (no early exit) so timing does not tell which matched.
    ok = False
    for e in expected:
        ok |= hmac.compare_digest(e.encode("ascii"), given)
    return ok


# ------------------------------------------------------------------ per-call tokens

TokenVerdict = Literal["ok", "missing", "invalid", "expired", "reused"]

_TOKEN = re.compile(r"([0-9]{1,16})\.([A-Za-z0-9_-]{11})\.([A-Za-z0-9_-]{22})")
#: a token dated this far ahead of our clock is still taken (a stepped wall clock), no further
FUTURE_SLACK_S = 5.0


def _mac(secret: bytes, call_sid: str, issued_ms: str, nonce: str) -> str:
    msg = b"callsim-stream:" + call_sid.encode("utf-8", "surrogatepass") + b"\0" + issued_ms.encode() \
        + b"\0" + nonce.encode()
    mac = hmac.new(secret, msg, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:16]).rstrip(b"=").decode("ascii")


def call_token(secret: bytes, call_sid: str, issued_at: float, nonce: str | None = None) -> str:
    """A token binding a stream to ``call_sid``, issued at ``issued_at`` (Unix seconds).

    ``<ms>.<nonce>.<mac>``: the random nonce makes every TwiML's token different
    even for one CallSid in one millisecond (SIDs repeat under ``--seed``), so
    "used once" is about one TwiML, not one CallSid. 128 bits of HMAC-SHA256.
    """
    nonce = nonce if nonce is not None else secrets.token_urlsafe(8)
    if not re.fullmatch(r"[A-Za-z0-9_-]{11}", nonce):
        raise ValueError("nonce must be 11 URL-safe base64 characters")
    issued_ms = str(max(0, int(issued_at * 1000)))
    return f"{issued_ms}.{nonce}.{_mac(secret, call_sid, issued_ms, nonce)}"


def _parse(secret: bytes, call_sid: object, token: object) -> tuple[float, str] | None:
    """(issue time, mac) of a genuine token for ``call_sid``; None for anything else, any type."""
    if not isinstance(call_sid, str) or not call_sid or not isinstance(token, str):
        return None
    m = _TOKEN.fullmatch(token)
    if m is None:
        return None
    issued_ms, nonce, mac = m.groups()
    if not hmac.compare_digest(_mac(secret, call_sid, issued_ms, nonce).encode(), mac.encode()):
        return None
    return int(issued_ms) / 1000, mac


def call_token_ok(secret: bytes, call_sid: object, token: object, *, now: float, ttl_s: float) -> bool:
    """Constant-time check that ``token`` is ours, for ``call_sid``, and not older than ``ttl_s``.

    Safe for whatever came off the wire: a missing, non-string or malformed
    CallSid or token is False, never an exception. Single use is
    :class:`StreamTokens`' job.
    """
    parsed = _parse(secret, call_sid, token)
    return parsed is not None and now - ttl_s <= parsed[0] <= now + FUTURE_SLACK_S


class StreamTokens:
    """Issues per-call tokens and takes each one once, within its TTL (sans-IO: times are passed in).

    Why single use: a TwiML's parameters (CallSid, token) travel in clear in
    Twilio's request logs and in our answer; whoever has them must not open a
    second OpenAI session next to the call, nor another one after it. Twilio
    opens one stream per ``<Stream>`` and does not reconnect it.

    Memory is bounded twice: a used token is forgotten once it would have
    expired anyway, and at most ``max_remembered`` are kept. Past that, the
    oldest is dropped and every token issued no later than it is refused from
    then on (``_floor``), so forgetting can never let a replay through: under a
    flood the cost is refusing old tokens, never accepting one twice.
    """

    def __init__(self, secret: bytes, ttl_s: float, *, max_remembered: int = 50_000) -> None:
        if ttl_s <= 0 or max_remembered < 1:
            raise ValueError("ttl_s and max_remembered must be positive")
        self._secret = secret
        self.ttl_s = ttl_s
        self.max_remembered = max_remembered
        self._used: set[str] = set()  # macs of tokens already taken
        self._expiry: list[tuple[float, str]] = []  # (issued_at, mac): a heap, oldest first
        self._floor = float("-inf")  # tokens issued at or before this are refused (forgotten)
        self._now = float("-inf")  # the latest time seen: a wall clock stepped back reopens nothing

    def __len__(self) -> int:
        return len(self._used)

    def issue(self, call_sid: str, now: float) -> str:
        return call_token(self._secret, call_sid, now)

    def redeem(self, call_sid: object, token: object, now: float) -> TokenVerdict:
        """Take ``token`` for ``call_sid``: ``"ok"`` the first time only."""
        now = self._now = max(self._now, now)
        self._forget(now)
        if token is None or token == "":
            return "missing"
        parsed = _parse(self._secret, call_sid, token)
        if parsed is None:
            return "invalid"
        issued_at, mac = parsed
        if issued_at > now + FUTURE_SLACK_S:
            return "invalid"  # only someone with the secret could have made it
        if mac in self._used or issued_at <= self._floor:
            return "reused"
        if issued_at < now - self.ttl_s:
            return "expired"
        self._used.add(mac)
        heapq.heappush(self._expiry, (issued_at, mac))
        while len(self._used) > self.max_remembered:
            old, old_mac = heapq.heappop(self._expiry)
            self._used.discard(old_mac)
            self._floor = max(self._floor, old)
        return "ok"

    def _forget(self, now: float) -> None:
        """Drop used tokens past their TTL: they are refused as expired from now on anyway."""
        horizon = now - self.ttl_s
        while self._expiry and self._expiry[0][0] < horizon:
            _, mac = heapq.heappop(self._expiry)
            self._used.discard(mac)
