"""Function-calling tools for the Realtime session.

Why :meth:`ToolRegistry.call` never raises: a tool failure must not end the
phone call. Every outcome — unknown tool, bad JSON from the model, an exception
in the tool, a timeout — becomes a JSON ``{"error": "..."}`` output that goes
back to the model as the ``function_call_output``, so it can apologise or retry
in speech. Sync tools run in a worker thread (abandoned on timeout) so a slow
one never stalls the audio of other calls.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import trio

from .logsafe import wire

__all__ = ["Tool", "ToolRegistry", "ToolFn", "default_tools", "register_end_call", "register_transfer_call", "WEATHER"]

log = logging.getLogger("callsim.bridge.tools")

ToolFn = Callable[..., Any] | Callable[..., Awaitable[Any]]
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI function-name rule


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    fn: ToolFn
    is_async: bool


def _error(message: str) -> str:
    return json.dumps({"error": message})


class ToolRegistry:
    """Named tools: their Realtime ``tools`` schemas and a never-raising ``call``."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def register(self, name: str, description: str, parameters_schema: dict[str, Any], fn: ToolFn) -> None:
        """Add a tool; ``fn`` receives the model's arguments as keyword arguments."""
        if not _NAME_RE.match(name):
            raise ValueError(f"tool name must match {_NAME_RE.pattern}, got {name!r}")
        if name in self._tools:
            raise ValueError(f"tool {name!r} already registered")
        self._tools[name] = Tool(name, description, parameters_schema, fn, inspect.iscoroutinefunction(fn))

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def schemas(self) -> list[dict[str, Any]]:
        """The ``session.tools`` entries (same shape in the GA and beta dialects)."""
        return [
            {"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters}
            for t in self._tools.values()
        ]

    async def call(self, name: str, arguments_json: str, timeout_s: float, *, call_tag: str = "?") -> str:
        """Run a tool and return its output as a JSON string; errors become ``{"error": …}``.

        ``call_tag`` names the call in the log lines (a tool failing on one call of many
        must be findable); the tool's name comes from the model, so it is logged wire-safe.
        """
        tool = self._tools.get(name)
        if tool is None:
            return _error(f"unknown tool {name!r}")
        try:
            args = json.loads(arguments_json) if arguments_json and arguments_json.strip() else {}
        except (json.JSONDecodeError, TypeError) as e:
            return _error(f"arguments are not valid JSON: {e}")
        if not isinstance(args, dict):
            return _error("arguments must be a JSON object")
        try:
            inspect.signature(tool.fn).bind(**args)
        except TypeError as e:
            return _error(f"bad arguments for {name}: {e}")
        except ValueError:  # signature not introspectable (builtins): let the call decide
            pass

        result: Any = None
        try:
            with trio.move_on_after(timeout_s) as scope:
                if tool.is_async:
                    result = await tool.fn(**args)
                else:
                    result = await trio.to_thread.run_sync(
                        functools.partial(tool.fn, **args), abandon_on_cancel=True
                    )
                    if inspect.isawaitable(result):  # e.g. an object with async __call__
                        result = await result
        except Exception as e:  # the tool's own failure: report it to the model
            log.warning("call %s: tool %s failed: %s", call_tag, wire(name, 60), wire(repr(e)), exc_info=True)
            return _error(f"{name} failed: {type(e).__name__}: {e}")
        if scope.cancelled_caught:
            log.warning("call %s: tool %s timed out after %.1f s", call_tag, wire(name, 60), timeout_s)
            return _error(f"{name} timed out after {timeout_s:g} s")
        try:
            return json.dumps(result, default=str, ensure_ascii=False)
        except (TypeError, ValueError) as e:
            return _error(f"{name} returned an unserialisable result: {e}")


# --------------------------------------------------------------------- examples

#: Static demo data: the example tool must work offline and deterministically.
WEATHER: dict[str, dict[str, Any]] = {
    "london": {"city": "London", "temperature_c": 14, "conditions": "light rain"},
    "paris": {"city": "Paris", "temperature_c": 18, "conditions": "partly cloudy"},
    "new york": {"city": "New York", "temperature_c": 22, "conditions": "sunny"},
    "san francisco": {"city": "San Francisco", "temperature_c": 16, "conditions": "fog"},
    "tokyo": {"city": "Tokyo", "temperature_c": 25, "conditions": "humid, clear"},
    "sydney": {"city": "Sydney", "temperature_c": 20, "conditions": "windy"},
    "berlin": {"city": "Berlin", "temperature_c": 12, "conditions": "overcast"},
    "madrid": {"city": "Madrid", "temperature_c": 27, "conditions": "hot and sunny"},
}


def default_tools(now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> ToolRegistry:
    """A registry with ``get_current_time`` and ``get_weather``.

    ``now`` (an aware UTC datetime factory) is injectable so tests are deterministic.
    """
    registry = ToolRegistry()

    def get_current_time(timezone: str | None = None) -> dict[str, Any]:
        tz_name = (timezone or "UTC").strip() or "UTC"
        try:
            tz = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError):
            return {"error": f"unknown timezone {tz_name!r}; use an IANA name such as 'Europe/Paris'"}
        return {"timezone": tz_name, "iso": now().astimezone(tz).isoformat(timespec="seconds")}

    async def get_weather(city: str) -> dict[str, Any]:
        entry = WEATHER.get(" ".join(str(city).lower().split()))
        if entry is None:
            known = ", ".join(v["city"] for v in WEATHER.values())
            return {"error": f"no weather data for {city!r}; known cities: {known}"}
        return {**entry, "source": "static demo table"}

    registry.register(
        "get_current_time",
        "Get the current date and time, optionally in a given IANA time zone.",
        {
            "type": "object",
            "properties": {
                "timezone": {"type": "string", "description": "IANA time zone, e.g. 'America/New_York'. Default UTC."}
            },
            "required": [],
            "additionalProperties": False,
        },
        get_current_time,
    )
    registry.register(
        "get_weather",
        "Get the current weather for a city (demo data for a few large cities).",
        {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name, e.g. 'Paris'."}},
            "required": ["city"],
            "additionalProperties": False,
        },
        get_weather,
    )
    return registry


def register_end_call(registry: ToolRegistry) -> None:
    """Offer ``end_call`` (:mod:`.call_control`). The call core answers it itself — hanging up acts on
    the call, which a registry tool cannot — so this entry gives the session its schema and the
    console its on/off switch; run through the registry it only returns the same output."""
    from .call_control import END_CALL, END_CALL_OUTPUT, END_CALL_SCHEMA

    def end_call(reason: str | None = None) -> Any:
        return json.loads(END_CALL_OUTPUT)

    registry.register(END_CALL, END_CALL_SCHEMA["description"], END_CALL_SCHEMA["parameters"], end_call)


def register_transfer_call(registry: ToolRegistry) -> None:
    """Offer ``transfer_call`` (:mod:`.call_control`, :mod:`.transfer`): like ``end_call``, the call core
    answers it itself (the redirect acts on the call); this entry gives the session its schema and the
    console its switch. Run through the registry (the core did not take it) it says it cannot transfer."""
    from .call_control import TRANSFER_CALL, TRANSFER_CALL_SCHEMA

    def transfer_call(reason: str | None = None) -> Any:
        return {"error": "the transfer is not available on this call"}

    registry.register(TRANSFER_CALL, TRANSFER_CALL_SCHEMA["description"], TRANSFER_CALL_SCHEMA["parameters"],
                      transfer_call)
