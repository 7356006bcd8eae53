"""Validate Realtime events with the ``openai`` package's own types.

Why the SDK's types and not our own schema: the mock must accept exactly what
a real client library may send and must itself send only what a real client
library can parse -- the SDK is the one definition both sides share.

Three things the SDK does not do for us, handled here:

* Its unions ignore their ``type`` discriminator (and its own parser maps an
  unknown type silently onto the first member), so we rebuild each union as
  ``Annotated[Union[members], Field(discriminator="type")]``: unknown types are
  caught, and validation is ~40x faster.
* Its models allow extra fields, but the real server rejects unknown
  parameters anywhere (``Unknown parameter: 'session.bogus_field'.``), so after
  validation we walk the model next to the raw dict looking for keys that are
  not fields.
* Pydantic errors have to become the real server's error events (codes
  ``missing_required_parameter``, ``invalid_type``, ``invalid_value``,
  ``integer_below_min_value``...), with dotted paths like
  ``item.content[0].type``. Pydantic reports every failing union branch; we
  pick the branch the client evidently meant (see :func:`_error_from_validation`).

Validation is strict (no ``"0"`` → 0, no ``1.0`` → 1): the real server checks JSON
types, and a lax mock would hide client bugs.

``input_audio_buffer.append`` arrives 50 times a second per call, so it has a
fast path that skips pydantic entirely once the JSON is parsed (orjson, once).
"""

from __future__ import annotations

import functools
import re
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Union

import orjson
from openai.types import realtime as _ga
from openai.types.beta import realtime as _beta
from openai.types.realtime.realtime_response_create_params import (
    RealtimeResponseCreateParams,
)
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from . import errors
from .dialect import DIALECTS, Dialect

APPEND = "input_audio_buffer.append"
_EVENT_ID_TYPES = (str, type(None))
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError

_UNIONS: dict[str, tuple[Any, Any]] = {
    "ga": (_ga.RealtimeClientEvent, _ga.RealtimeServerEvent),
    "beta": (_beta.RealtimeClientEvent, _beta.RealtimeServerEvent),
}

# The order the real server lists its client event types in the "Supported
# values" message (GA capture 2026-09; beta adds transcription_session.update
# second, as in beta-era logs). Types the SDK union has beyond these are
# appended in union order; types it lacks are left out, so the message lists
# exactly what this mock accepts.
_SUPPORTED_ORDER = (
    "session.update",
    "transcription_session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.truncate",
    "conversation.item.delete",
    "conversation.item.retrieve",
    "response.create",
    "response.cancel",
)


class _ResponseCreateParams(RealtimeResponseCreateParams):
    """GA ``response`` overrides whose ``input`` also takes ``item_reference``s.

    The SDK's client sends them (``ResponseCreateEventWithReferencesParam``) and
    the API documents them (protocols.md 2.3), but the SDK's *model* for
    response.create omits them; without this the mock would reject a valid event.
    """

    input: list[Union[_ga.ConversationItem, _ga.ResponseItemReference]] | None = None


class _ResponseCreateEvent(_ga.ResponseCreateEvent):
    """The GA response.create event with :class:`_ResponseCreateParams`."""

    response: _ResponseCreateParams | None = None


# SDK client-event models replaced by a subclass that accepts what the SDK client sends.
_CLIENT_OVERRIDES: dict[str, dict[str, type[BaseModel]]] = {"ga": {"response.create": _ResponseCreateEvent}}


@dataclass(frozen=True, slots=True)
class ClientEventError:
    """A client event the real server would reject; ``error`` is ready to send."""

    error: dict[str, Any]


# ----------------------------------------------------------------- the unions


def _check_dialect(dialect: str) -> None:
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; expected one of {DIALECTS}")


def _union_members(alias: Any) -> tuple[type[BaseModel], ...]:
    """Members of the SDK's ``Annotated[Union[...], PropertyInfo(...)]`` alias."""
    inner = typing.get_args(alias)[0] if typing.get_origin(alias) is Annotated else alias
    return typing.get_args(inner)


def _type_name(member: type[BaseModel]) -> str:
    return typing.get_args(member.model_fields["type"].annotation)[0]


@functools.cache
def _members(dialect: str, side: int) -> dict[str, type[BaseModel]]:
    _check_dialect(dialect)
    members = {_type_name(m): m for m in _union_members(_UNIONS[dialect][side])}
    if len(members) != len(_union_members(_UNIONS[dialect][side])):
        raise RuntimeError(f"duplicate event types in the SDK {dialect} union")
    if side == 0:
        members.update(_CLIENT_OVERRIDES.get(dialect, {}))
    return members


def _adapter(dialect: str, side: int) -> TypeAdapter[Any]:
    members = tuple(_members(dialect, side).values())
    return TypeAdapter(Annotated[Union[members], Field(discriminator="type")])  # type: ignore[valid-type]


@functools.cache
def client_event_type(dialect: Dialect) -> TypeAdapter[Any]:
    """Discriminated union of the dialect's SDK client events (cached)."""
    return _adapter(dialect, 0)


@functools.cache
def server_event_type(dialect: Dialect) -> TypeAdapter[Any]:
    """Discriminated union of the dialect's SDK server events (cached)."""
    return _adapter(dialect, 1)


@functools.cache
def client_event_names(dialect: Dialect) -> tuple[str, ...]:
    """The dialect's client event types, in the real server's "Supported values" order."""
    names = _members(dialect, 0)
    ordered = [n for n in _SUPPORTED_ORDER if n in names]
    return tuple(ordered + [n for n in names if n not in ordered])


@functools.cache
def server_event_names(dialect: Dialect) -> frozenset[str]:
    """The dialect's server event types (members of the SDK's server union)."""
    return frozenset(_members(dialect, 1))


# ----------------------------------------------------------------- client events


def parse_client_event(dialect: Dialect, raw: str | bytes) -> tuple[dict[str, Any], Any] | ClientEventError:
    """Parse and validate one client WebSocket message.

    ``raw`` is a *text* frame as ``str``; ``bytes`` (or bytearray/memoryview)
    means a *binary* frame, which the real server refuses.

    Returns ``(event_dict, model)`` or a :class:`ClientEventError`. On the
    ``input_audio_buffer.append`` fast path the model is ``None``: the dict is
    then guaranteed to hold a str ``audio``, the type, and at most an
    ``event_id`` that is a str or None -- everything a consumer needs.
    """
    if type(raw) is not str:
        if not isinstance(raw, str):
            return _not_text(raw)
        raw = str(raw)
    try:
        data = _loads(raw)
    except _JSONDecodeError:
        return ClientEventError(errors.invalid_json())
    # The hot path (50 appends/s per call): a few dict probes instead of pydantic.
    if type(data) is dict and data.get("type") == APPEND and type(data.get("audio")) is str and (
        len(data) == 2 or (len(data) == 3 and type(data.get("event_id", 0)) in _EVENT_ID_TYPES)
    ):
        return data, None
    return validate_client_event(dialect, data)


def _parse(dialect: Dialect, raw: str | bytes, *, fast: bool) -> tuple[dict[str, Any], Any] | ClientEventError:
    """:func:`parse_client_event`, or with ``fast=False`` always through pydantic (tests compare the two)."""
    if fast or not isinstance(raw, str):
        return parse_client_event(dialect, raw)
    try:
        data = _loads(raw)
    except _JSONDecodeError:
        return ClientEventError(errors.invalid_json())
    return validate_client_event(dialect, data)


def _not_text(raw: object) -> ClientEventError:
    if isinstance(raw, (bytes, bytearray, memoryview)):
        return ClientEventError(errors.binary_frame())
    raise TypeError(f"a WebSocket message is str or bytes, not {type(raw).__name__}")


def validate_client_event(dialect: Dialect, data: Any) -> tuple[dict[str, Any], Any] | ClientEventError:
    """Validate an already-decoded client event (the slow path of :func:`parse_client_event`)."""
    if type(data) is not dict:
        return ClientEventError(errors.not_an_object(json_kind(data)))
    eid = data.get("event_id")
    eid = eid if isinstance(eid, str) else None
    if "type" not in data:
        return ClientEventError(errors.missing_type(eid))
    etype = data["type"]
    if not isinstance(etype, str):
        return ClientEventError(errors.invalid_type("type", "a string", json_kind(etype), eid))
    if etype not in _members(dialect, 0):
        return ClientEventError(errors.unknown_event_type(etype, client_event_names(dialect), eid))
    try:
        model = client_event_type(dialect).validate_python(data, strict=True)
    except ValidationError as exc:
        return ClientEventError(_error_from_validation(exc, data, eid))
    unknown = first_unknown_parameter(model, data)
    if unknown is not None:
        return ClientEventError(errors.unknown_parameter(unknown, eid))
    return data, model


def first_unknown_parameter(model: Any, raw: Any, path: str = "") -> str | None:
    """Dotted path of the first key in ``raw`` that the validated ``model`` has no
    field for (the SDK models accept extras; the real server does not).

    Walks the raw dict in its own key order, so the error names what the client
    sent first, as a JSON-schema validator would.
    """
    if isinstance(model, BaseModel):
        if type(raw) is not dict:
            return None
        fields = type(model).model_fields
        for key, value in raw.items():
            sub = f"{path}.{key}" if path else key
            if key not in fields:
                return sub
            found = first_unknown_parameter(getattr(model, key), value, sub)
            if found is not None:
                return found
    elif isinstance(model, list) and type(raw) is list:
        for i, (m, r) in enumerate(zip(model, raw)):
            found = first_unknown_parameter(m, r, f"{path}[{i}]")
            if found is not None:
                return found
    return None


# ----------------------------------------------------------------- server events


def validate_server_event(dialect: Dialect, event: dict[str, Any]) -> Any:
    """Validate an event the mock is about to send; return the SDK model.

    Raises ``ValueError`` if ``event["type"]`` is not in the dialect's server
    union (e.g. a GA name on a beta session) and ``pydantic.ValidationError``
    (also a ValueError) if the event does not fit its type.
    """
    etype = event.get("type") if isinstance(event, dict) else None
    if etype not in server_event_names(dialect):
        raise ValueError(f"{etype!r} is not a {dialect} server event type")
    return server_event_type(dialect).validate_python(event, strict=True)


# ----------------------------------------------------------------- pydantic → API error

_EXPECTED = {  # pydantic error type → the API's name for the expected JSON type
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a decimal",
    "float_parsing": "a decimal",
    "bool_type": "a boolean",
    "bool_parsing": "a boolean",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "dict_type": "an object",
    "list_type": "an array",
    "tuple_type": "an array",
    "none_required": "null",
}
_LITERAL_RE = re.compile(r"'((?:[^'\\]|\\.)*)'|(-?\d+(?:\.\d+)?)")


def json_kind(value: Any) -> str:
    """The API's name for a JSON value's type, as in "but got a string instead"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return "an unsupported value"


def _format_path(path: list[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _locate(loc: tuple[str | int, ...], raw: Any, missing: bool) -> tuple[list[str | int], list[bool]]:
    """Split a pydantic ``loc`` into the real path in ``raw`` and union tags.

    Pydantic interleaves union-member tags (class names, ``'str'``,
    ``"literal[...]"``, the discriminator value) with field names; an element is
    a path step only if it indexes the raw data there. For a ``missing`` error
    the last element is the missing key itself.
    """
    path: list[str | int] = []
    is_path: list[bool] = []
    cur = raw
    last = len(loc) - 1
    for i, el in enumerate(loc):
        if type(cur) is dict and isinstance(el, str) and el in cur:
            path.append(el)
            cur = cur[el]
            is_path.append(True)
        elif type(cur) is list and isinstance(el, int) and 0 <= el < len(cur):
            path.append(el)
            cur = cur[el]
            is_path.append(True)
        elif missing and i == last:
            path.append(el)
            is_path.append(True)
        else:
            is_path.append(False)
    return path, is_path


def _literal_values(ctx: dict[str, Any] | None) -> list[Any]:
    values: list[Any] = []
    for s, num in _LITERAL_RE.findall((ctx or {}).get("expected", "")):
        if num:
            values.append(float(num) if "." in num else int(num))
        else:
            values.append(s)
    return values


def _same_kind(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return True
    return type(a) is type(b)


def _error_from_validation(exc: ValidationError, raw: dict[str, Any], eid: str | None) -> dict[str, Any]:
    """Turn a pydantic error list into the one error event the real server would send.

    Choosing among union branches: a branch whose own ``type``/``role`` literal
    did not match (the client plainly meant another member) is dropped with all
    its errors; among what is left, the deepest error wins (the branch that got
    furthest is the one the client meant); errors at that same path are merged
    (e.g. three audio-format members all saying "expected an object"). If every
    branch was dropped (an invalid discriminator value), all errors are kept so
    the message lists every supported value.
    """
    entries = []
    dropped: set[tuple[str | int, ...]] = set()
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        path, is_path = _locate(loc, raw, err["type"] == "missing")
        entries.append((loc, path, err))
        if (err["type"] == "literal_error" and len(loc) >= 2 and loc[-1] in ("type", "role")
                and is_path[-1] and not is_path[-2]):
            dropped.add(loc[:-1])
    kept = [e for e in entries if not any(e[0][: len(p)] == p for p in dropped)] or entries
    depth = max(len(e[1]) for e in kept)
    path = next(e[1] for e in kept if len(e[1]) == depth)
    group = [e[2] for e in kept if e[1] == path]
    where = _format_path(path)

    if any(e["type"] == "missing" for e in group):
        return errors.missing_required_parameter(where, eid)
    value = group[0]["input"]
    literals: list[Any] = []
    expected: list[str] = []
    for e in group:
        if e["type"] == "literal_error":
            for v in _literal_values(e.get("ctx")):
                if v not in literals:
                    literals.append(v)
                if json_kind(v) not in expected:
                    expected.append(json_kind(v))
        elif e["type"] in _EXPECTED and _EXPECTED[e["type"]] not in expected:
            expected.append(_EXPECTED[e["type"]])
    same = [v for v in literals if _same_kind(v, value)]
    if same:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < min(same):
            return errors.out_of_range(where, min(same), value, below=True,
                                       integer=isinstance(value, int), event_id=eid)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > max(same):
            return errors.out_of_range(where, max(same), value, below=False,
                                       integer=isinstance(value, int), event_id=eid)
        return errors.invalid_value(value, same, where, eid)
    if expected:
        if len(expected) == 1:
            wanted = expected[0]
        elif len(expected) == 2:
            wanted = f"one of {expected[0]} or {expected[1]}"
        else:
            wanted = "one of " + ", ".join(expected[:-1]) + ", or " + expected[-1]
        return errors.invalid_type(where, wanted, json_kind(value), eid)
    # Anything else (no SDK type uses other constraints today): keep pydantic's words.
    # Wording and code **unconfirmed**.
    return errors.error_event(f"Invalid value for '{where}': {group[0]['msg']}.", code="invalid_value",
                              param=where, event_id=eid)


def session_error(dialect: Dialect, session: Any, event_id: str | None = None) -> dict[str, Any] | None:
    """Validate a ``session.update``'s session object alone; the error event or None.

    Paths come out prefixed ``session.``, exactly as for the whole event.
    """
    event: dict[str, Any] = {"type": "session.update", "session": session}
    if event_id is not None:
        event["event_id"] = event_id
    result = validate_client_event(dialect, event)
    return result.error if isinstance(result, ClientEventError) else None
