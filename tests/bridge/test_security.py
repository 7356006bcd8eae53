"""bridge.security: Twilio signatures (protocols.md 1.6) and per-call tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from twilio.request_validator import RequestValidator

from bridge.security import call_token, call_token_ok, stream_signature_ok, webhook_signature_ok

TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
    "Caller": "+14158675309",
}
VECTOR = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def sign(token: str, url: str) -> str:
    return base64.b64encode(hmac.new(token.encode(), url.encode(), hashlib.sha1).digest()).decode()


def test_webhook_vector():
    assert webhook_signature_ok(TOKEN, URL, PARAMS, VECTOR)


def test_webhook_vector_with_port_variant():
    # Twilio may have signed with or without the default port.
    assert webhook_signature_ok(TOKEN, "https://mycompany.com:443/myapp.php?foo=1&bar=2", PARAMS, VECTOR)


@pytest.mark.parametrize("token,url,params,sig", [
    ("54321", URL, PARAMS, VECTOR),
    (TOKEN, "https://mycompany.com/myapp.php?foo=1&bar=3", PARAMS, VECTOR),
    (TOKEN, "https://evil.com/myapp.php?foo=1&bar=2", PARAMS, VECTOR),
    (TOKEN, URL, {**PARAMS, "Digits": "1235"}, VECTOR),
    (TOKEN, URL, {**PARAMS, "Extra": "x"}, VECTOR),
    (TOKEN, URL, PARAMS, VECTOR[:-2] + "A="),
    (TOKEN, URL, PARAMS, None),
    (TOKEN, URL, PARAMS, ""),
    ("", URL, PARAMS, VECTOR),
])
def test_webhook_rejects(token, url, params, sig):
    assert not webhook_signature_ok(token, url, params, sig)


def test_webhook_multidict_params():
    from werkzeug.datastructures import MultiDict

    params = MultiDict([("a", "2"), ("a", "1"), ("b", "x")])
    sig = RequestValidator(TOKEN).compute_signature("https://h/x", params)
    assert sig == sign(TOKEN, "https://h/xa1a2bx")
    assert webhook_signature_ok(TOKEN, "https://h/x", params, sig)


STREAM = "wss://bridge.example.com/media-stream"


def test_stream_signature_over_wss_url_with_empty_params():
    assert stream_signature_ok(TOKEN, STREAM, sign(TOKEN, STREAM))


@pytest.mark.parametrize("signed,configured", [
    ("wss://bridge.example.com:443/media-stream", STREAM),
    (STREAM, "wss://bridge.example.com:443/media-stream"),
    ("ws://127.0.0.1/media-stream", "ws://127.0.0.1:80/media-stream"),
    ("ws://127.0.0.1:8080/media-stream", "ws://127.0.0.1:8080/media-stream"),
])
def test_stream_signature_port_variants(signed, configured):
    assert stream_signature_ok(TOKEN, configured, sign(TOKEN, signed))


@pytest.mark.parametrize("sig", [
    sign(TOKEN, "https://bridge.example.com/media-stream"),  # wrong scheme
    sign(TOKEN, "wss://bridge.example.com/other"),
    sign(TOKEN, "wss://bridge.example.com:80/media-stream"),  # RequestValidator's wss quirk
    sign("other", STREAM),
    None,
    "",
    "not base64 é",
])
def test_stream_signature_rejects(sig):
    assert not stream_signature_ok(TOKEN, STREAM, sig)


def test_call_token_per_call_sid():
    secret = b"s3cret"
    a, b = call_token(secret, "CA" + "a" * 32), call_token(secret, "CA" + "b" * 32)
    assert a != b
    assert len(a) == 22 and base64.urlsafe_b64decode(a + "==")
    assert a == call_token(secret, "CA" + "a" * 32)  # deterministic
    assert call_token_ok(secret, "CA" + "a" * 32, a)
    assert call_token_ok(secret, "CA" + "b" * 32, b)
    assert not call_token_ok(secret, "CA" + "b" * 32, a)  # token of another call
    assert not call_token_ok(b"other", "CA" + "a" * 32, a)  # another secret
    assert call_token(b"other", "CA" + "a" * 32) != a


@pytest.mark.parametrize("token", [None, "", "x", "é" * 22])
def test_call_token_rejects_garbage(token):
    assert not call_token_ok(b"s", "CA1", token)
    assert not call_token_ok(b"s", None, call_token(b"s", "CA1"))
