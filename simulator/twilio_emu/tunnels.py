"""Tunnels, sans-IO: the public URL Twilio signs, the local origin it actually reaches.

A real deployment sits behind a public ``https://``/``wss://`` host (ngrok, a load
balancer); offline, the servers listen on ``127.0.0.1`` without TLS. ``--tunnel
https://bridge.example=http://127.0.0.1:5050`` tells the emulator to sign requests to
``https://bridge.example/…`` exactly as Twilio would (so a bridge configured with that
public URL validates them) and to send them to ``http://127.0.0.1:5050/…``, as the tunnel
would. One mapping serves both protocols of a host, as a tunnel does: the mapping above
also takes ``wss://bridge.example/…`` to ``ws://127.0.0.1:5050/…``, and a ``wss://``
mapping takes ``https://`` along. A URL with no mapping is used as it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

_SECURE = {"http": False, "ws": False, "https": True, "wss": True}
_FAMILY = {"http": "http", "https": "http", "ws": "ws", "wss": "ws"}


@dataclass(frozen=True, slots=True)
class Tunnel:
    public: str  # scheme://host[:port], lower case
    local: str

    @property
    def public_key(self) -> tuple[bool, str]:
        p = urlsplit(self.public)
        return _SECURE[p.scheme], p.netloc


def parse_tunnel(spec: str) -> Tunnel:
    """``PUBLIC_ORIGIN=LOCAL_ORIGIN`` → :class:`Tunnel`; ``ValueError`` saying what is wrong."""
    public, sep, local = (s.strip() for s in spec.partition("="))
    if not sep or not public or not local:
        raise ValueError(f"{spec!r}: expected PUBLIC_ORIGIN=LOCAL_ORIGIN, "
                         "e.g. https://bridge.example=http://127.0.0.1:5050")
    return Tunnel(_origin(public, "public"), _origin(local, "local"))


def _origin(url: str, which: str) -> str:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _SECURE or not parts.hostname:
        raise ValueError(f"{which} origin {url!r} must be http(s):// or ws(s):// with a host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{which} origin {url!r} must be an origin only (no path, query or fragment)")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"{which} origin {url!r} has an invalid port") from None
    return f"{scheme}://{parts.netloc.lower()}"


class Tunnels:
    """The mappings of one emulator; :meth:`local` is where a public URL is really sent."""

    def __init__(self, tunnels: Iterable[Tunnel] = ()) -> None:
        self._map: dict[tuple[bool, str], Tunnel] = {}
        for t in tunnels:
            if t.public_key in self._map:
                raise ValueError(f"{t.public} is tunnelled twice")
            self._map[t.public_key] = t

    def __bool__(self) -> bool:
        return bool(self._map)

    def local(self, url: str) -> str:
        """``url`` with its origin replaced by the tunnel's local one (the scheme family kept:
        a ``wss`` URL goes to ``ws(s)``, an ``https`` one to ``http(s)``)."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _SECURE:
            return url
        t = self._map.get((_SECURE[scheme], parts.netloc.lower()))
        if t is None:
            return url
        local = urlsplit(t.local)
        family = _FAMILY[scheme]
        new_scheme = family + ("s" if _SECURE[local.scheme] else "")
        return urlunsplit((new_scheme, local.netloc, parts.path, parts.query, parts.fragment))
