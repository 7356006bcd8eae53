"""Bridge configuration from the environment and a ``.env`` file.

Why pydantic-settings: every knob is typed and validated once at startup, so a
typo'd ``PUBLIC_URL`` or ``AUDIO_MODE`` fails loudly before the first call rather
than as dead air mid-call. Secrets are ``SecretStr`` so that ``repr()``, ``str()``
and :meth:`Settings.redacted` (what the app logs) can never print them.

Environment variable names are the field names, case-insensitive, no prefix
(``OPENAI_API_KEY``, ``PUBLIC_URL``, ``PORT`` …), matching what Twilio/OpenAI
tutorials and hosting platforms already set.
"""

from __future__ import annotations

import difflib
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field, SecretStr, StringConstraints, ValidationError, ValidationInfo, field_validator, model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "REDACTED", "SettingsError", "describe_errors", "check_keys", "Voice", "Instructions",
           "VadType", "VadThreshold", "VadPrefixPaddingMs", "VadSilenceDurationMs", "VadEagerness"]

REDACTED = "**********"

# One random secret per process: used for per-call stream tokens when neither
# STREAM_TOKEN_SECRET nor TWILIO_AUTH_TOKEN is configured. Module-level so every
# Settings instance in the process (app, tests) agrees on it.
_PROCESS_SECRET = secrets.token_urlsafe(32)

DEFAULT_INSTRUCTIONS = (
    "You are a friendly, concise voice assistant answering a phone call. "
    "Speak naturally in short sentences, one idea at a time, and let the caller "
    "interrupt you. Ask a clarifying question when a request is ambiguous. "
    "Never read out URLs, markdown or long lists. If you use a tool, say briefly "
    "what you are checking. If you cannot help, say so plainly."
)

# The session settings' types, shared with the console's SessionSettings (session_settings.py):
# the bridge builds those from these at every start, so a bound only one of them had would turn a
# bad environment value into a crash instead of the one-line settings error.
Voice = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,40}$")]
Instructions = Annotated[str, StringConstraints(max_length=20_000)]
VadType = Literal["server_vad", "semantic_vad"]
VadThreshold = Annotated[float, Field(ge=0.0, le=1.0)]
VadPrefixPaddingMs = Annotated[int, Field(ge=0, le=5_000)]
VadSilenceDurationMs = Annotated[int, Field(ge=0, le=10_000)]
VadEagerness = Literal["low", "medium", "high", "auto"]

#: settings that are identifiers of a fixed format: (the pattern, what it says in words)
_FORMATS = {
    "twilio_account_sid": (r"AC[0-9a-fA-F]{32}", "AC followed by 32 hex digits"),
    "transfer_number": (r"\+[1-9][0-9]{1,14}", "an E.164 number (+ and up to 15 digits)"),
}


class Settings(BaseSettings):
    """All bridge settings; construct once at startup and pass around."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        extra="ignore",  # a shared .env may hold keys for other tools
    )

    # --- OpenAI leg -------------------------------------------------------
    openai_api_key: SecretStr = Field(
        SecretStr(""), description="OpenAI API key (required for real calls; never logged)."
    )
    openai_realtime_url: str = Field(
        "wss://api.openai.com/v1/realtime",
        description="Realtime WebSocket endpoint; point it at the mock for tests.",
    )
    openai_model: str = Field("gpt-realtime", description="Realtime model, sent as ?model=.")
    openai_dialect: Literal["ga", "beta"] = Field(
        "ga", description="Realtime API dialect: GA event names/session shape, or the beta one."
    )
    openai_connect_timeout_s: float = Field(
        5.0, gt=0, description="Give up on the OpenAI handshake after this long (then apologise)."
    )
    openai_session_max_s: float = Field(
        3600.0, gt=0,
        description="OpenAI's maximum session duration (60 minutes today): the bridge renews the session"
                    " before it, so a longer call goes on (bridge/renewal.py).",
    )
    openai_renew_before_s: float = Field(
        300.0, ge=0,
        description="Open the next OpenAI session this long before the maximum and switch the call to it"
                    " at the first quiet moment (no reply playing, caller silent); 0 = never renew (the call"
                    " ends with the session).",
    )
    response_first_audio_timeout_s: float = Field(
        2.2, gt=0,
        description="A reply due (caller's turn committed, or response.create sent) with no audio after this"
                    " long: OpenAI is not answering, apologise and end the call. Above the real model's slow"
                    " first audio (~2 s); with the 0.5 s VAD silence the caller waits < 3 s.",
    )
    response_stall_timeout_s: float = Field(
        2.0, gt=0,
        description="A reply under way sends nothing for this long, and its queued audio has played out:"
                    " the session has stalled, apologise and end the call.",
    )

    # --- audio ------------------------------------------------------------
    audio_mode: Literal["passthrough", "transcode"] = Field(
        "passthrough",
        description="passthrough: forward G.711 mu-law untouched; transcode: mu-law <-> pcm16 24 kHz.",
    )
    resample_quality: Literal["FIR", "QQ", "LQ", "MQ", "HQ", "VHQ"] = Field(
        "FIR",
        description="Resampler of transcode mode: FIR, the low-delay polyphase filter (5 ms per direction),"
                    " or a soxr quality (QQ/LQ/MQ/HQ/VHQ; HQ withholds tens of ms per direction).",
    )
    voice: Voice = Field("marin", description="Assistant voice (letters, digits, _ and -).")
    instructions: Instructions = Field(DEFAULT_INSTRUCTIONS, description="System instructions for the session.")

    # --- turn detection ---------------------------------------------------
    vad_type: VadType = Field("server_vad", description="Turn detection kind.")
    vad_threshold: VadThreshold = Field(0.5, description="server_vad activation threshold.")
    vad_prefix_padding_ms: VadPrefixPaddingMs = Field(300, description="server_vad audio kept before speech start.")
    vad_silence_duration_ms: VadSilenceDurationMs = Field(500, description="server_vad silence that ends a turn.")
    vad_eagerness: VadEagerness = Field("auto", description="semantic_vad eagerness (low/medium/high/auto).")
    interrupt_response: bool = Field(
        True, description="Let the server cancel the reply when the caller starts speaking."
    )
    transcription_model: str | None = Field(
        "gpt-4o-mini-transcribe",
        description="Caller-audio transcription model; empty disables caller transcripts.",
    )

    # --- keys, silent callers, goodbyes (bridge/call_control.py) -----------
    dtmf_mode: Literal["off", "item", "respond"] = Field(
        "respond",
        description="A caller keypress (Twilio dtmf) reaches the model as a user text item naming the key"
                    " (item), and asks for a response (respond); off ignores keys.",
    )
    silence_reprompt_s: float = Field(
        0.0, ge=0,
        description="Re-prompt a caller silent this long after the assistant's audio played out (0: off);"
                    " after SILENCE_MAX_PROMPTS re-prompts, say goodbye and hang up.",
    )
    silence_max_prompts: int = Field(2, ge=0, le=10, description="Re-prompts before the silent caller's goodbye.")
    end_call_tool: bool = Field(
        True,
        description="Offer the model an end_call tool: the bridge hangs up once the goodbye has played.",
    )
    transfer_number: str | None = Field(
        None,
        description="E.164 number the transfer_call tool hands the caller to (the model never picks it); unset:"
                    " no transfer_call tool. The bridge redirects the live call over Twilio's REST API once the"
                    " assistant's pre-transfer phrase has played: needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN.",
    )
    transfer_say: str | None = Field(
        "Connecting your call.",
        description="Spoken by Twilio (TwiML <Say>) before it dials TRANSFER_NUMBER; empty: nothing.",
    )

    # --- greeting ---------------------------------------------------------
    greeting_say: str | None = Field(
        None, description="Optional TwiML <Say> text played before the stream connects."
    )
    ai_greeting: str | None = Field(
        None, description="If set, the AI speaks first, prompted with this text."
    )

    # --- Twilio leg / HTTP server -----------------------------------------
    twilio_auth_token: SecretStr | None = Field(
        None, description="If set, X-Twilio-Signature is checked on the webhook and the stream."
    )
    twilio_account_sid: str | None = Field(
        None, description="Account SID (AC...) for the numbers API: with TWILIO_AUTH_TOKEN and CONSOLE_TOKEN, "
                          "the console lists the account's phone numbers and points one at this bridge.",
    )
    twilio_api_url: str = Field(
        "https://api.twilio.com", description="Twilio's REST API base URL (another one: `callsim twilio-emulator`).",
    )
    public_url: str = Field(
        "",
        description="Externally reachable base URL (https://… in production); the stream URL derives from it. "
                    "Default: http://HOST:PORT, for local runs.",
    )
    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(8080, ge=0, le=65535, description="Bind port.")
    tls_cert_file: Path | None = Field(None, description="TLS certificate (PEM) to serve HTTPS/WSS directly.")
    tls_key_file: Path | None = Field(None, description="TLS private key (PEM).")
    max_concurrent_calls: int = Field(200, ge=1, description="Beyond this the webhook answers 'busy'.")
    busy_message: str = Field(
        "Sorry, all of our lines are busy right now. Please call again in a few minutes.",
        description="Spoken (TwiML <Say>) when max_concurrent_calls is reached.",
    )
    apology_message: str = Field(
        "Sorry, we are having technical difficulties. Please call again later. Goodbye.",
        description="Spoken when the OpenAI leg fails, so the caller never gets dead air.",
    )
    stream_token_secret: SecretStr | None = Field(
        None,
        description="HMAC secret for per-call stream tokens; default: TWILIO_AUTH_TOKEN, else random per process.",
    )
    stream_token_ttl_s: float = Field(
        30.0, gt=0,
        description="A per-call token opens one stream, within this long after the TwiML's greeting (<Say>) "
                    "has played: the bridge adds the greeting's length (at a slow 100 words/minute) to it. "
                    "Twilio opens the stream at once after the greeting; 30 s leaves room for a slow webhook "
                    "round trip and Twilio's set-up, and is the window in which an unused token can be replayed.",
    )
    require_stream_token: bool | None = Field(
        None,
        description="Refuse a stream whose start carries no per-call token. Default: only when "
                    "TWILIO_AUTH_TOKEN is set (without it anyone can fetch a token from the webhook, and "
                    "`callsim call --target ws://…/media-stream` is a documented local use). "
                    "A token that is presented is always checked.",
    )
    max_pending_streams: int = Field(
        50, ge=1,
        description="Media-stream sockets allowed at once before their valid start; beyond, the upgrade "
                    "gets 503. They are not calls: the busy answers count calls only.",
    )
    stream_start_timeout_s: float = Field(
        5.0, gt=0,
        description="Close a media stream that sends no valid start this long after the upgrade "
                    "(Twilio sends it at once).",
    )
    media_timeout_s: float = Field(
        5.0, gt=0,
        description="End a call, and its OpenAI session, when Twilio sends no media for this long "
                    "(it sends a frame every 20 ms for the whole call, silence included).",
    )
    twilio_send_timeout_s: float = Field(
        5.0, gt=0,
        description="End a call, and its OpenAI session, when one send to Twilio stays blocked this long "
                    "(the peer stopped reading; Twilio reads as it receives).",
    )
    max_connections: int = Field(
        1000, ge=1,
        description="Open TCP connections (HTTP and media streams) beyond which a new one is answered 503 "
                    "and closed; lowered at startup if the descriptor limit (ulimit -n) cannot hold it.",
    )
    http_keep_alive_timeout_s: float = Field(
        5.0, gt=0, description="An idle keep-alive HTTP connection is closed after this long (hypercorn's default)."
    )
    http_head_timeout_s: float = Field(
        10.0, gt=0, description="A connection's request head must arrive within this long, else 408 and close.",
    )
    http_request_timeout_s: float = Field(
        10.0, gt=0,
        description="A request's body must arrive and its answer be sent within this long, else 408 and close "
                    "(Twilio's webhook bodies are under 2 KB and sent at once; a slow body is an attack).",
    )

    # --- operator console ---------------------------------------------------
    console_token: SecretStr | None = Field(
        None, description="Token for the console, live feed, history API and MCP over HTTP; unset = those are off.",
    )

    # --- misc -------------------------------------------------------------
    tool_timeout_s: float = Field(5.0, gt=0, description="Per tool-call timeout.")
    database_path: Path = Field(Path("callsim-bridge.sqlite3"), description="SQLite transcript store.")
    log_level: str = Field("INFO", description="Python logging level.")

    # ---------------------------------------------------------------- validators
    @field_validator(
        "transcription_model", "greeting_say", "ai_greeting", "tls_cert_file", "tls_key_file",
        "twilio_auth_token", "stream_token_secret", "require_stream_token", "console_token",
        "twilio_account_sid", "transfer_number", "transfer_say", mode="before",
    )
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        """``FOO=`` in a .env file means "off", not "the empty string"."""
        if isinstance(v, str) and not v.strip():
            return None
        return v

    @field_validator(*_FORMATS)
    @classmethod
    def _check_format(cls, v: str | None, info: ValidationInfo) -> str | None:
        """Surrounding blanks dropped (a pasted value), the rest must match the field's format."""
        if v is None:
            return v
        pattern, what = _FORMATS[info.field_name]  # type: ignore[index]
        if not re.fullmatch(pattern, v.strip()):
            raise ValueError(f"{info.field_name} must be {what}, got {v!r}")
        return v.strip()

    @field_validator("twilio_api_url")
    @classmethod
    def _check_api_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"twilio_api_url must be http(s)://host[:port], got {v!r}")
        return v.rstrip("/")

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, v: str) -> str:
        """The stream URL is derived from this, never from a request's Host header."""
        v = v.strip()
        if not v:
            return v  # filled from host/port below
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"public_url must be http(s)://host[:port][/prefix], got {v!r}")
        if parts.query or parts.fragment:
            raise ValueError("public_url must not contain a query string or fragment")
        return v.rstrip("/")

    @field_validator("log_level")
    @classmethod
    def _upper_level(cls, v: str) -> str:
        return v.strip().upper()

    @model_validator(mode="after")
    def _derive_stream_secret(self) -> Settings:
        if not self.public_url:
            self.public_url = f"http://{self.host}:{self.port}"
        if self.stream_token_secret is None:
            self.stream_token_secret = self.twilio_auth_token or SecretStr(_PROCESS_SECRET)
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        if self.transfer_number and not (self.twilio_account_sid and self.twilio_auth_token):
            raise ValueError("transfer_number needs twilio_account_sid and twilio_auth_token: the transfer is "
                             "a request to Twilio's REST API")
        return self

    # ---------------------------------------------------------------- helpers
    @property
    def stream_url(self) -> str:
        """``wss://…/media-stream`` (``ws://`` for a local http public_url)."""
        base = self.public_url
        if base.startswith("https://"):
            base = "wss://" + base[len("https://"):]
        else:
            base = "ws://" + base[len("http://"):]
        return base + "/media-stream"

    def webhook_url(self, path: str) -> str:
        """Public URL of one of our HTTP endpoints: what Twilio signs for webhooks."""
        return self.public_url + "/" + path.lstrip("/")

    @property
    def stream_secret_bytes(self) -> bytes:
        """Key for :func:`callsim.bridge.security.call_token`."""
        assert self.stream_token_secret is not None  # set by the validator
        return self.stream_token_secret.get_secret_value().encode("utf-8")

    @property
    def stream_token_required(self) -> bool:
        """Whether a start without a per-call token is refused (see ``require_stream_token``)."""
        if self.require_stream_token is not None:
            return self.require_stream_token
        return self.twilio_auth_token is not None

    @property
    def validate_signatures(self) -> bool:
        """Twilio signatures are only checked when the auth token is configured."""
        return bool(self.twilio_auth_token and self.twilio_auth_token.get_secret_value())

    def redacted(self) -> dict[str, Any]:
        """A JSON-friendly dict of the settings, safe to log.

        Secrets become ``"**********"`` when set and ``None``/``""`` when not, so a
        log still tells an operator *whether* a key is configured.
        """
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = REDACTED if value.get_secret_value() else ""
            elif isinstance(value, Path):
                value = str(value)
            out[name] = value
        return out


class SettingsError(ValueError):
    """Settings the bridge cannot start with; ``str()`` is one line naming each bad setting."""


def env_name(field: str) -> str:
    """The environment variable of a setting (``audio_mode`` -> ``AUDIO_MODE``)."""
    return field.upper()


def describe_errors(exc: ValidationError, name: Callable[[str], str] = env_name) -> str:
    """A :class:`ValidationError` as one line: each bad setting by ``name(field)`` (its environment
    variable, or the flag that set it), what is wrong and the value it got (never a secret's)."""
    parts = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        msg = str(err["msg"]).removeprefix("Value error, ")
        if not field:  # a rule over several settings (TLS cert and key together)
            parts.append(msg)
            continue
        line = f"{name(field)}: {msg}"
        info = Settings.model_fields.get(field)
        got = repr(err.get("input"))
        secret = info is None or info.annotation in (SecretStr, SecretStr | None)
        if not secret and "input" in err and got not in msg:
            line += f", got {got}"
        parts.append(line)
    return "; ".join(parts)


def check_keys(config: dict[str, Any], name: Callable[[str], str] = str) -> None:
    """Refuse keys that are no setting: pydantic-settings ignores them (a shared .env holds other
    tools' keys), but in a settings dict a typo would silently keep the default."""
    known = list(Settings.model_fields)
    for key in config:
        if key not in Settings.model_fields:
            near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            raise SettingsError(f"{name(key)}: no such setting"
                                + (f" (did you mean {name(near[0])}?)" if near else ""))
