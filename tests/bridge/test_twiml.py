"""callsim.bridge.twiml: exact XML, as in protocols.md 1.4."""

from __future__ import annotations

import pytest
from callsim.bridge.twiml import busy_twiml, connect_twiml

HEAD = '<?xml version="1.0" encoding="UTF-8"?>'


def test_connect_with_parameters():
    xml = connect_twiml(
        "wss://example.com/media-stream", {"callSid": "CA123", "token": "abc_-1"}
    )
    assert xml == (
        HEAD + '<Response><Connect><Stream url="wss://example.com/media-stream">'
        '<Parameter name="callSid" value="CA123" /><Parameter name="token" value="abc_-1" />'
        "</Stream></Connect></Response>"
    )


def test_connect_with_greeting_and_escaping():
    xml = connect_twiml("ws://127.0.0.1:8080/media-stream", {"from": '+1555"<&>'}, greeting="Hi & welcome")
    assert xml == (
        HEAD + "<Response><Say>Hi &amp; welcome</Say>"
        '<Connect><Stream url="ws://127.0.0.1:8080/media-stream">'
        '<Parameter name="from" value="+1555&quot;&lt;&amp;&gt;" /></Stream></Connect></Response>'
    )
    assert xml.endswith("</Connect></Response>")  # nothing after </Connect>


def test_connect_without_parameters_or_greeting():
    assert connect_twiml("wss://h/media-stream", {}, greeting="") == (
        HEAD + '<Response><Connect><Stream url="wss://h/media-stream" /></Connect></Response>'
    )


@pytest.mark.parametrize("url", ["https://h/media-stream", "wss://h/media-stream?token=1", "/media-stream"])
def test_connect_refuses_bad_stream_urls(url):
    with pytest.raises(ValueError):
        connect_twiml(url, {})


def test_busy():
    assert busy_twiml("All lines are busy.") == (
        HEAD + "<Response><Say>All lines are busy.</Say><Hangup /></Response>"
    )
