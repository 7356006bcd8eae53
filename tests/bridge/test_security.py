"""callsim.bridge.security: Twilio signatures (protocols.md 1.6) and per-call tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from callsim.bridge.security import (
    StreamTokens,
    call_token,
    call_token_ok,
    stream_signature_ok,
    webhook_signature_ok,
)
from twilio.request_validator import RequestValidator

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


SID_A, SID_B = "CA" + "a" * 32, "CA" + "b" * 32
T0 = 1_700_000_000.0  # an injected wall clock: no test here waits


def test_call_token_binds_the_call_sid_the_secret_and_the_issue_time():
    secret = b"s3cret"
    a = call_token(secret, SID_A, T0)
    issued, nonce, mac = a.split(".")
    assert int(issued) == int(T0 * 1000) and len(nonce) == 11 and len(mac) == 22
    assert base64.urlsafe_b64decode(mac + "==")
    assert a != call_token(secret, SID_A, T0)  # a fresh nonce: every TwiML's token differs
    assert call_token(secret, SID_A, T0, nonce="n" * 11) == call_token(secret, SID_A, T0, nonce="n" * 11)
    ok = dict(now=T0 + 1, ttl_s=30)
    assert call_token_ok(secret, SID_A, a, **ok)
    assert not call_token_ok(secret, SID_B, a, **ok)  # token of another call
    assert not call_token_ok(b"other", SID_A, a, **ok)  # another secret
    forged = f"{int(T0 * 1000) + 60_000}.{nonce}.{mac}"  # a later issue time under the same mac
    assert not call_token_ok(secret, SID_A, forged, now=T0 + 100, ttl_s=30)


def test_call_token_expires_after_its_ttl():
    a = call_token(b"s", SID_A, T0)
    assert call_token_ok(b"s", SID_A, a, now=T0 + 29.9, ttl_s=30)
    assert call_token_ok(b"s", SID_A, a, now=T0 + 30, ttl_s=30)
    assert not call_token_ok(b"s", SID_A, a, now=T0 + 30.1, ttl_s=30)
    assert not call_token_ok(b"s", SID_A, a, now=T0 - 60, ttl_s=30)  # from the future: not ours then


@pytest.mark.parametrize("call_sid,token", [
    (SID_A, None), (SID_A, ""), (SID_A, "x"), (SID_A, "é" * 22), (SID_A, 123), (SID_A, ["a"]), (SID_A, b"abc"),
    (SID_A, {"t": 1}), (None, "VALID"), ("", "VALID"), (123, "VALID"), (["CA1"], "VALID"), ({}, "VALID"),
    (SID_A, "1.2.3"), (SID_A, "99999999999999999.AAAAAAAAAAA." + "A" * 22), ("\ud800", "VALID"),
])
def test_call_token_ok_is_false_for_garbage_of_any_type(call_sid, token):
    """The issue's crash was ``callSid: 123``: the wire's types are not to be trusted."""
    valid = call_token(b"s", SID_A, T0)
    token = valid if token == "VALID" else token
    assert call_token_ok(b"s", call_sid, token, now=T0, ttl_s=30) is False
    assert StreamTokens(b"s", 30).redeem(call_sid, token, T0) in ("missing", "invalid")


def test_a_token_is_taken_once():
    tokens = StreamTokens(b"s", ttl_s=30)
    a, b = tokens.issue(SID_A, T0), tokens.issue(SID_A, T0)  # two TwiMLs for one CallSid
    assert tokens.redeem(SID_A, a, T0 + 1) == "ok"
    assert tokens.redeem(SID_A, a, T0 + 2) == "reused"  # a second stream, or a replay after the call
    assert tokens.redeem(SID_A, b, T0 + 2) == "ok"  # the other TwiML's token is its own
    assert tokens.redeem(SID_B, tokens.issue(SID_A, T0), T0 + 2) == "invalid"
    assert tokens.redeem(SID_A, None, T0 + 2) == "missing"


def test_an_unused_token_expires_and_used_ones_are_forgotten_at_their_ttl():
    tokens = StreamTokens(b"s", ttl_s=30)
    late = tokens.issue(SID_A, T0)
    used = [tokens.issue(f"CA{i}", T0 + i) for i in range(10)]
    for i, t in enumerate(used):
        assert tokens.redeem(f"CA{i}", t, T0 + i + 0.5) == "ok"
    assert len(tokens) == 10
    assert tokens.redeem(SID_A, late, T0 + 31) == "expired"
    assert len(tokens) == 9  # CA0's was issued at T0: it can only be "expired" from now on
    assert tokens.redeem("CA0", used[0], T0 + 31) == "expired"
    assert tokens.redeem("CA5", used[5], T0 + 31) == "reused"
    assert tokens.redeem(SID_B, tokens.issue(SID_B, T0 + 100), T0 + 100) == "ok"
    assert len(tokens) == 1  # memory follows the TTL, not the number of calls ever seen


def test_a_clock_stepped_back_reopens_no_forgotten_token():
    tokens = StreamTokens(b"s", ttl_s=30)
    t = tokens.issue(SID_A, T0)
    assert tokens.redeem(SID_A, t, T0 + 1) == "ok"
    assert tokens.redeem(SID_B, tokens.issue(SID_B, T0 + 40), T0 + 40) == "ok"  # forgets SID_A's
    assert tokens.redeem(SID_A, t, T0 + 2) == "expired"  # NTP stepped the clock back 38 s


def test_memory_is_capped_without_letting_a_replay_through():
    tokens = StreamTokens(b"s", ttl_s=30, max_remembered=3)
    issued = [(f"CA{i}", tokens.issue(f"CA{i}", T0 + i / 10)) for i in range(5)]
    for sid, t in issued:
        assert tokens.redeem(sid, t, T0 + 1) == "ok"
    assert len(tokens) == 3
    assert [tokens.redeem(sid, t, T0 + 1) for sid, t in issued] == ["reused"] * 5  # forgotten: still refused
    fresh = tokens.issue("CA9", T0 + 0.05)  # issued before the newest forgotten one: refused, never taken twice
    assert tokens.redeem("CA9", fresh, T0 + 1) == "reused"
    assert tokens.redeem("CA10", tokens.issue("CA10", T0 + 1), T0 + 1) == "ok"
