"""callsim.bridge.settings: env/.env loading, validation, derived URLs, and secrets never leaking."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from callsim.bridge.settings import REDACTED, Settings
from pydantic import ValidationError

KEY = "sk-proj-THIS-MUST-NEVER-BE-LOGGED-0123456789"
TWILIO_TOKEN = "twilio-auth-token-also-secret"

ENV_NAMES = [name.upper() for name in Settings.model_fields]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No stray env vars or .env from the developer's shell leak into these tests."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def make(**kw) -> Settings:
    return Settings(_env_file=None, **kw)


def test_defaults():
    s = make()
    assert s.openai_api_key.get_secret_value() == ""
    assert s.openai_realtime_url == "wss://api.openai.com/v1/realtime"
    assert s.openai_model == "gpt-realtime"
    assert s.openai_dialect == "ga"
    assert s.audio_mode == "passthrough"
    assert s.voice == "marin"
    assert "phone" in s.instructions
    assert (s.vad_type, s.vad_threshold, s.vad_prefix_padding_ms, s.vad_silence_duration_ms) == (
        "server_vad", 0.5, 300, 500)
    assert s.interrupt_response is True
    assert s.transcription_model == "gpt-4o-mini-transcribe"
    assert s.greeting_say is None and s.ai_greeting is None
    assert s.twilio_auth_token is None and not s.validate_signatures
    assert s.max_concurrent_calls == 200
    assert s.database_path == Path("callsim-bridge.sqlite3")
    assert s.stream_url == "ws://127.0.0.1:8080/media-stream"
    assert s.busy_message and s.apology_message


def test_env_vars_case_insensitive(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("public_url", "https://bridge.example.com/")
    monkeypatch.setenv("Audio_Mode", "transcode")
    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("TRANSCRIPTION_MODEL", "")
    monkeypatch.setenv("INTERRUPT_RESPONSE", "false")
    s = make()
    assert s.openai_api_key.get_secret_value() == KEY
    assert s.public_url == "https://bridge.example.com"
    assert s.audio_mode == "transcode"
    assert s.port == 9001
    assert s.transcription_model is None  # empty disables
    assert s.interrupt_response is False


def test_dotenv_file(tmp_path):
    env = tmp_path / ".env"
    env.write_text(f"OPENAI_API_KEY={KEY}\nVOICE=cedar\nOPENAI_DIALECT=beta\nGREETING_SAY=\nUNRELATED_TOOL_SETTING=1\n")
    s = Settings()  # default env_file=".env" in the cwd (tmp_path)
    assert s.openai_api_key.get_secret_value() == KEY
    assert s.voice == "cedar"
    assert s.openai_dialect == "beta"
    assert s.greeting_say is None


def test_env_var_beats_dotenv(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("VOICE=cedar\n")
    monkeypatch.setenv("VOICE", "alloy")
    assert Settings().voice == "alloy"


@pytest.mark.parametrize("bad", ["ftp://x", "wss://x", "example.com", "https://", "https://x/?a=1"])
def test_public_url_must_be_http(bad):
    with pytest.raises(ValidationError):
        make(public_url=bad)


@pytest.mark.parametrize("field,value", [
    ("openai_dialect", "v3"), ("audio_mode", "pcm"), ("vad_type", "none"), ("vad_threshold", 2.0),
])
def test_literal_and_range_validation(field, value):
    with pytest.raises(ValidationError):
        make(**{field: value})


def test_tls_files_must_come_together(tmp_path):
    with pytest.raises(ValidationError):
        make(tls_cert_file=tmp_path / "c.pem")
    s = make(tls_cert_file=tmp_path / "c.pem", tls_key_file=tmp_path / "k.pem")
    assert s.tls_key_file == tmp_path / "k.pem"


@pytest.mark.parametrize("public,stream", [
    ("https://bridge.example.com", "wss://bridge.example.com/media-stream"),
    ("https://bridge.example.com:8443/", "wss://bridge.example.com:8443/media-stream"),
    ("http://localhost:8080", "ws://localhost:8080/media-stream"),
    ("https://example.com/voice", "wss://example.com/voice/media-stream"),
])
def test_stream_url(public, stream):
    assert make(public_url=public).stream_url == stream


def test_webhook_url():
    s = make(public_url="https://bridge.example.com/")
    assert s.webhook_url("/incoming-call") == "https://bridge.example.com/incoming-call"
    assert s.webhook_url("incoming-call") == "https://bridge.example.com/incoming-call"


def test_stream_secret_derivation():
    a, b = make(), make()
    assert a.stream_secret_bytes and a.stream_secret_bytes == b.stream_secret_bytes  # per process
    assert make(twilio_auth_token=TWILIO_TOKEN).stream_secret_bytes == TWILIO_TOKEN.encode()
    assert make(twilio_auth_token=TWILIO_TOKEN, stream_token_secret="explicit").stream_secret_bytes == b"explicit"
    assert make(twilio_auth_token=TWILIO_TOKEN).validate_signatures


def test_line_keeping_defaults_and_when_a_token_is_required(monkeypatch):
    s = make()
    assert (s.max_pending_streams, s.stream_start_timeout_s, s.media_timeout_s, s.twilio_send_timeout_s,
            s.stream_token_ttl_s) == (50, 5.0, 5.0, 5.0, 30.0)
    assert s.require_stream_token is None and not s.stream_token_required  # local runs: ws:// straight in
    assert make(twilio_auth_token=TWILIO_TOKEN).stream_token_required
    assert make(require_stream_token=True).stream_token_required
    assert not make(twilio_auth_token=TWILIO_TOKEN, require_stream_token=False).stream_token_required
    monkeypatch.setenv("REQUIRE_STREAM_TOKEN", "")
    assert make().require_stream_token is None  # REQUIRE_STREAM_TOKEN= means "the default"


def test_secrets_never_leak(caplog):
    s = make(openai_api_key=KEY, twilio_auth_token=TWILIO_TOKEN, stream_token_secret="streamsecret")
    red = s.redacted()
    texts = [repr(s), str(s), repr(red), str(red), f"{s}", f"{s!r}", s.model_dump_json()]
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").info("settings: %s %r %s", s, s, red)
    texts.append(caplog.text)
    for t in texts:
        for secret in (KEY, TWILIO_TOKEN, "streamsecret"):
            assert secret not in t
    assert red["openai_api_key"] == REDACTED
    assert red["twilio_auth_token"] == REDACTED
    assert red["stream_token_secret"] == REDACTED
    assert red["voice"] == "marin" and red["database_path"] == "callsim-bridge.sqlite3"
    assert set(red) == set(Settings.model_fields)


def test_redacted_shows_unset_secrets_as_unset():
    red = make().redacted()
    assert red["openai_api_key"] == ""
    assert red["twilio_auth_token"] is None


def test_resample_quality_defaults_to_the_low_delay_fir_and_rejects_typos():
    assert make().resample_quality == "FIR"
    assert make(resample_quality="HQ").resample_quality == "HQ"  # soxr stays selectable
    with pytest.raises(ValidationError):
        make(resample_quality="fir2")


def test_transfer_number_is_e164_and_needs_the_twilio_account():
    sid = "AC" + "ab" * 16
    s = make(transfer_number=" +15550009999 ", twilio_account_sid=sid, twilio_auth_token="t")
    assert s.transfer_number == "+15550009999" and s.transfer_say == "Connecting your call."
    assert make(transfer_number="", transfer_say="").transfer_number is None
    with pytest.raises(ValidationError, match="E.164"):
        make(transfer_number="555-0100", twilio_account_sid=sid, twilio_auth_token="t")
    with pytest.raises(ValidationError, match="transfer_number needs twilio_account_sid"):
        make(transfer_number="+15550009999", twilio_auth_token="t")


def test_the_console_session_settings_have_the_settings_own_types():
    """Every value the bridge starts with is one the console's SessionSettings accepts (it is built
    from Settings at each start): same annotation, same bounds, field by field."""
    from callsim.bridge.session_settings import SHARED, SessionSettings, configured

    assert set(SHARED) == set(SessionSettings.model_fields) - {"tools"}
    for name in SHARED:
        ours, theirs = Settings.model_fields[name], SessionSettings.model_fields[name]
        assert (ours.annotation, ours.metadata) == (theirs.annotation, theirs.metadata), name
    s = make(voice="cedar", vad_eagerness="low", vad_prefix_padding_ms=5_000, instructions="x" * 20_000)
    assert configured(s, ["a"]).model_dump() == {**{f: getattr(s, f) for f in SHARED}, "tools": ["a"]}


@pytest.mark.parametrize(("field", "value"), [
    ("voice", "my voice"), ("voice", "v" * 41), ("instructions", "x" * 20_001), ("vad_eagerness", "LOW"),
    ("vad_eagerness", "eager"), ("vad_prefix_padding_ms", 5_001), ("vad_silence_duration_ms", 10_001),
])
def test_session_values_the_console_would_refuse_are_refused_at_start(field, value):
    with pytest.raises(ValidationError, match=field):
        make(**{field: value})


@pytest.mark.parametrize(("field", "good", "bad", "says"), [
    ("twilio_account_sid", "AC" + "ab" * 16, "AC123", "twilio_account_sid must be AC followed by 32 hex digits"),
    ("transfer_number", "+15550009999", "555-0100",
     r"transfer_number must be an E\.164 number \(\+ and up to 15 digits\)"),
])
def test_fixed_format_settings_are_stripped_and_checked_alike(field, good, bad, says):
    account = {"twilio_account_sid": "AC" + "cd" * 16, "twilio_auth_token": "t"}
    assert getattr(make(**{**account, field: f"  {good}\t"}), field) == good
    with pytest.raises(ValidationError, match=f"{says}, got '{bad}'"):
        make(**{**account, field: bad})
