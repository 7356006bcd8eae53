"""``error`` events shaped like the real Realtime server's.

A bridge under test reacts to errors by their ``code`` and sometimes by their
message text (many match "Cancellation failed" or "already shorter than"), so
the mock must say exactly what the real service says where that is known
(protocols.md 2.3, 2.4 "error", part 3, and live captures). Wherever a code or
a wording is not confirmed by a source, the builder says so in a comment: treat
it as a configurable assumption, not a fact.

Every builder returns ``{"type": "error", "error": {...}}`` *without* the
top-level server ``event_id``; the session adds that when it sends the event.
``error.event_id`` is the id of the client event that caused the error (None
when the client sent none -- and the real server sometimes sends None even
when it did, protocols.md 2.4).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


def error_event(
    message: str,
    *,
    code: str | None,
    type: str = INVALID_REQUEST,  # noqa: A002 - the wire field is called "type"
    param: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """The generic error event; key order as the real server sends it."""
    return {
        "type": "error",
        "error": {"type": type, "code": code, "message": message, "param": param, "event_id": event_id},
    }


# ---------------------------------------------------------------- wording helpers


def quote_value(value: Any) -> str:
    """How the API quotes a value in a message: strings in single quotes, else JSON."""
    if isinstance(value, str):
        return f"'{value}'"
    return orjson.dumps(value).decode()


def supported_values(values: Iterable[Any]) -> str:
    """``'a'``, ``'a' and 'b'``, ``'a', 'b', and 'c'`` -- the API's serial-comma list."""
    quoted = [quote_value(v) for v in values]
    if len(quoted) <= 1:
        return "".join(quoted)
    if len(quoted) == 2:
        return f"{quoted[0]} and {quoted[1]}"
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]


# ---------------------------------------------------------------- framing / JSON


def binary_frame() -> dict[str, Any]:
    """A binary WebSocket frame. Code and text observed live (GA, 2026-09)."""
    return error_event(
        "Expected a text WebSocket message; binary frames are not supported.", code="invalid_event"
    )


def invalid_json() -> dict[str, Any]:
    """Text that is not JSON. Code ``invalid_json`` observed live; the message was
    captured only up to "Invalid event: failed to parse JSON value." -- whatever
    parser detail followed is unconfirmed, so the mock stops there."""
    return error_event("Invalid event: failed to parse JSON value.", code="invalid_json")


def not_an_object(got: str, event_id: str | None = None) -> dict[str, Any]:
    """Valid JSON that is not an object (``[]``, ``"x"``, ``5``). **Unconfirmed**: no
    source shows the real answer; ``invalid_event`` is the closest documented code."""
    return error_event(f"Invalid event: expected a JSON object, but got {got} instead.",
                       code="invalid_event", event_id=event_id)


def missing_type(event_id: str | None = None) -> dict[str, Any]:
    """No ``type`` field: exact example from the API reference (protocols.md 2.4)."""
    return error_event("The 'type' field is missing.", code="invalid_event", event_id=event_id)


def unknown_event_type(value: Any, supported: Iterable[str], event_id: str | None = None) -> dict[str, Any]:
    """An unknown client event type. Observed live (GA): code ``invalid_value``,
    param ``type``, "Invalid value: 'nope'. Supported values are: 'session.update', …,
    and 'response.cancel'." (the brief guessed ``invalid_event``; the capture wins)."""
    return error_event(
        f"Invalid value: {quote_value(value)}. Supported values are: {supported_values(supported)}.",
        code="invalid_value",
        param="type",
        event_id=event_id,
    )


# ---------------------------------------------------------------- parameter validation


def missing_required_parameter(path: str, event_id: str | None = None) -> dict[str, Any]:
    """Text exact (``Missing required parameter: 'session.type'.``, protocols.md 2.3);
    the code ``missing_required_parameter`` is **unconfirmed** (protocols.md 2.4)."""
    return error_event(f"Missing required parameter: '{path}'.", code="missing_required_parameter",
                       param=path, event_id=event_id)


def unknown_parameter(path: str, event_id: str | None = None) -> dict[str, Any]:
    """Code, text and param observed live (``Unknown parameter: 'session.bogus_field'.``)."""
    return error_event(f"Unknown parameter: '{path}'.", code="unknown_parameter", param=path, event_id=event_id)


def invalid_type(path: str, expected: str, got: str, event_id: str | None = None) -> dict[str, Any]:
    """``Invalid type for 'session.audio.input.format': expected an object, but got a
    string instead.`` (exact, protocols.md 2.2). Code ``invalid_type`` is the API's
    usual one for this text; not seen in a Realtime capture (**unconfirmed**)."""
    return error_event(f"Invalid type for '{path}': expected {expected}, but got {got} instead.",
                       code="invalid_type", param=path, event_id=event_id)


def invalid_value(value: Any, supported: Iterable[Any], path: str, event_id: str | None = None) -> dict[str, Any]:
    """A value outside an enum; same wording as the unknown-event-type error."""
    return error_event(
        f"Invalid value: {quote_value(value)}. Supported values are: {supported_values(supported)}.",
        code="invalid_value",
        param=path,
        event_id=event_id,
    )


def out_of_range(
    path: str, bound: float, got: float, *, below: bool, integer: bool, event_id: str | None = None
) -> dict[str, Any]:
    """A number below a minimum / above a maximum. Live capture: code
    ``integer_below_min_value`` on ``session.audio.input.format.rate`` with
    "Expected a value >= 24000"; the rest of the sentence follows the API's usual
    wording and is **unconfirmed**, as are the decimal / above-max variants."""
    kind = "integer" if integer else "decimal"
    side = "below minimum" if below else "above maximum"
    op = ">=" if below else "<="
    code = f"{kind}_{'below_min' if below else 'above_max'}_value"
    return error_event(
        f"Invalid '{path}': {kind} {side} value. Expected a value {op} {quote_value(bound)}, "
        f"but got {quote_value(got)} instead.",
        code=code,
        param=path,
        event_id=event_id,
    )


def invalid_event(message: str, event_id: str | None = None, param: str | None = None) -> dict[str, Any]:
    """A semantically invalid event (code ``invalid_event``, seen in the API reference)."""
    return error_event(message, code="invalid_event", param=param, event_id=event_id)


# ---------------------------------------------------------------- session / dialect


def beta_shape_disabled() -> dict[str, Any]:
    """Today's answer to the retired beta dialect, exact (protocols.md 2.1); the
    server then closes with WebSocket code 4000."""
    return error_event(
        "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API.",
        code="beta_api_shape_disabled",
    )


def cannot_update_voice(event_id: str | None = None) -> dict[str, Any]:
    """Changing the voice after assistant audio exists. The message is widely quoted
    from real logs; the code ``cannot_update_voice`` is **unconfirmed**. Re-sending
    the *same* voice is accepted."""
    return error_event("Cannot update a conversation's voice if assistant audio is present.",
                       code="cannot_update_voice", event_id=event_id)


def transcription_update_on_realtime(event_id: str | None = None) -> dict[str, Any]:
    """``session.type: "transcription"`` sent to a realtime session. Message quoted from
    a user report; code and param **unconfirmed**."""
    return error_event("Passing a transcription session update event to a realtime session is not allowed.",
                       code="invalid_value", param="session.type", event_id=event_id)


def max_duration_text(limit_s: float = 3600) -> str:
    """The real wording names whole minutes (15, 30, 60 as the limit grew; protocols.md 2 F). A
    limit that is not whole minutes exists only on the mock's compressed clock, so its wording
    (seconds) is the mock's own."""
    if limit_s >= 60 and limit_s % 60 == 0:
        minutes = int(limit_s // 60)
        return f"Your session hit the maximum duration of {minutes} minute{'s' if minutes != 1 else ''}."
    return f"Your session hit the maximum duration of {limit_s:g} seconds."


def session_expired(limit_s: float = 3600) -> dict[str, Any]:
    """The session's maximum duration reached. Code ``session_expired`` and the message as
    reported for the 15- and 30-minute limits; at 60 minutes **unconfirmed**. The service then
    closes with 1001 and the same text as the reason (:data:`EXPIRED_CLOSE_CODE`)."""
    return error_event(max_duration_text(limit_s), code="session_expired")


#: the close code after ``session_expired`` ("going away", reachy_mini_conversation_app#134)
EXPIRED_CLOSE_CODE = 1001


def server_error(
    message: str = "The server had an error while processing your request. Sorry about that!",
) -> dict[str, Any]:
    """A server-side failure: ``type`` server_error, no code (the API's stock text)."""
    return error_event(message, code=None, type=SERVER_ERROR)


# ---------------------------------------------------------------- buffer / conversation / response


def commit_empty(buffered_ms: float, event_id: str | None = None) -> dict[str, Any]:
    """Commit with < 100 ms buffered; text as observed in many client logs."""
    return error_event(
        "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
        f"but buffer only has {buffered_ms:.2f}ms of audio.",
        code="input_audio_buffer_commit_empty",
        event_id=event_id,
    )


def already_active_response(response_id: str, event_id: str | None = None) -> dict[str, Any]:
    """A second response.create while one is active (code and text observed)."""
    return error_event(
        f"Conversation already has an active response in progress: {response_id}. "
        "Wait until the response is finished before creating a new one.",
        code="conversation_already_has_active_response",
        event_id=event_id,
    )


def cancel_not_active(event_id: str | None = None) -> dict[str, Any]:
    """response.cancel with nothing to cancel (code and text observed)."""
    return error_event("Cancellation failed: no active response found", code="response_cancel_not_active",
                       event_id=event_id)


def truncate_too_long(audio_ms: int, requested_ms: int, event_id: str | None = None) -> dict[str, Any]:
    """``audio_end_ms`` beyond the item's audio. Text observed (protocols.md part 3,
    pitfall 1: "Audio content of 9800ms is already shorter than 11579ms"). The code is
    not in any source: ``invalid_value`` and param ``audio_end_ms`` are **unconfirmed**."""
    return error_event(f"Audio content of {audio_ms}ms is already shorter than {requested_ms}ms",
                       code="invalid_value", param="audio_end_ms", event_id=event_id)


def unsupported_content_type(event_id: str | None = None) -> dict[str, Any]:
    """Truncating an item without model output audio (code and text observed)."""
    return error_event("Only model output audio messages can be truncated", code="unsupported_content_type",
                       event_id=event_id)


def item_not_found(item_id: str, event_id: str | None = None, param: str | None = "item_id") -> dict[str, Any]:
    """An unknown item id. The text "Item with item_id not found: <id>" is quoted from a
    real log; the code ``item_not_found`` is **unconfirmed**."""
    return error_event(f"Item with item_id not found: {item_id}", code="item_not_found", param=param,
                       event_id=event_id)
