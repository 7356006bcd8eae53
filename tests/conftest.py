"""What every test shares: it reaches nothing but loopback.

``requests`` (under the ``twilio`` client) and ``httpx`` honour ``*_PROXY`` variables; the suite's
servers (the Twilio emulator, the bridge, the mock) listen on 127.0.0.1 and must be reached
directly, whatever the machine running the suite has configured."""

from __future__ import annotations

import pytest

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def _loopback_without_proxy(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
