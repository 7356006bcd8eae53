"""Request authentication: Twilio signatures and per-call stream tokens.

Two independent checks, because they protect different things:

* ``X-Twilio-Signature`` proves a request came from Twilio (HMAC-SHA1 with the
  account auth token, protocols.md 1.6). On the WebSocket upgrade there is no
  body, so Twilio signs the ``wss://host/path`` URL with empty params.
* The per-call token (HMAC-SHA256 of the CallSid) is put in ``<Parameter>`` by our
  webhook and must come back in ``start.customParameters``: only a stream that
  went through *our* webhook for *that* call can open an OpenAI session, even
  when signature checking is off (no auth token configured, local runs).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from twilio.request_validator import RequestValidator

__all__ = ["webhook_signature_ok", "stream_signature_ok", "call_token", "call_token_ok"]

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


def call_token(secret: bytes, call_sid: str) -> str:
    """22-char URL-safe token binding a stream to its CallSid (128 bits of HMAC-SHA256)."""
    mac = hmac.new(secret, b"callsim-stream:" + call_sid.encode("utf-8"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:16]).rstrip(b"=").decode("ascii")


def call_token_ok(secret: bytes, call_sid: str | None, token: str | None) -> bool:
    """Constant-time check of a token from ``customParameters``; missing → False."""
    if not call_sid or not token or not isinstance(token, str):
        return False
    return hmac.compare_digest(
        call_token(secret, call_sid).encode("ascii"), token.encode("utf-8", "surrogatepass")
    )
