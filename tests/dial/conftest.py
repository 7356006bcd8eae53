"""Every test of `callsim dial` stays on loopback: a name lookup of anything else fails it."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    """A lookup of any host but loopback (``dial.example`` or ``bridge.example`` escaping a tunnel,
    api.twilio.com) raises here, in whichever thread of this process makes it."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name not in (None, "127.0.0.1", "localhost", "::1"):
            raise OSError(f"the test looked up {name!r}: only loopback is allowed")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
