"""What to do when a ``wss://`` stream meets a plain local server.

A bridge behind a tunnel or a proxy builds its ``<Stream url>`` as ``wss://``
from its public URL, because real Twilio only streams over TLS. Run locally on
plain HTTP, the same TwiML sends the caller to TLS where nothing speaks it: the
handshake gets a plain HTTP answer (``SSLError: WRONG_VERSION_NUMBER``), or, with
no port in the URL, port 443 of the loopback host refuses. Both errors are true
and say nothing of the cause, so the call's error gets this hint (sans-IO: the
trio and the gevent driver can both use it).
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterator
from urllib.parse import urlsplit

#: OpenSSL's reasons for a TLS handshake answered by something that is not TLS
#: (the wording changed across OpenSSL versions)
NOT_TLS_REASONS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST",
                             "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL"})


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, its causes and contexts, and the members of any exception group among them."""
    todo, seen = [exc], set()
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [x for x in (e.__cause__, e.__context__) if x is not None]
        if isinstance(e, BaseExceptionGroup):
            todo += list(e.exceptions)


def _not_tls(exc: BaseException) -> bool:
    return any(isinstance(e, ssl.SSLError) and not isinstance(e, ssl.SSLCertVerificationError)
               and (getattr(e, "reason", None) in NOT_TLS_REASONS
                    or any(r in str(e) for r in NOT_TLS_REASONS))
               for e in _chain(exc))


def _refused(exc: BaseException) -> bool:
    return any(isinstance(e, ConnectionRefusedError) for e in _chain(exc))


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_port_hint(stream_url: str, exc: BaseException, *, webhook_url: str | None = None) -> str | None:
    """The hint for a ``wss://`` stream that failed to connect because nothing speaks TLS
    there, or None when the failure is something else.

    ``webhook_url`` is the voice webhook whose TwiML named the stream (None when the caller
    was pointed at the stream directly); it names the plain port when the stream URL has
    none (the webhook's own port is the likely one).
    """
    parts = urlsplit(stream_url)
    if parts.scheme.lower() != "wss":
        return None
    port = parts.port or 443
    if _not_tls(exc):
        why = "the server there answered the TLS handshake in plain text"
        hostport = parts.netloc
    elif port == 443 and _loopback(parts.hostname) and _refused(exc):
        why = f"nothing listens on {parts.hostname}:443"
        hook = urlsplit(webhook_url or "")
        hostport = hook.netloc if hook.scheme == "http" and _loopback(hook.hostname) else "HOST:PORT"
    else:
        return None
    path = parts.path or "/"
    direct = f"--target ws://{hostport}{path}"
    if webhook_url is None:
        return f"nothing speaks TLS at {stream_url} ({why}): for a plain local server use {direct}"
    return (f"the TwiML streams to {stream_url} but nothing speaks TLS there ({why}) — the bridge builds "
            f"its stream URL as wss://: set its public URL to http://{hostport}, or point callsim at the "
            f"stream directly with {direct}")
