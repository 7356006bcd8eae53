"""Read a TOML/JSON table key by key, so that every mistake is one line naming its key.

Scenario files and mock behaviours are written by hand. A wrong value must be refused when
the file is loaded, before a mock, a bridge or a call is started, and the message must say
where it is (``[expect] turn_latency_p95_ms: expected a number of ms, got "fast"``) — not
surface minutes later as a traceback from deep inside a run. A typo'd key must not be
ignored either (it would silently turn an expectation off), so :meth:`Table.finish` refuses
the keys nobody read, with a "did you mean" when one is close.

Hand-written rather than a pydantic model: the messages speak the file's language (its
section, a step's number, the unit of a value), a step is a table whose one key says what it
is, and "did you mean" is one call here — pydantic would need as much code to reword its
errors.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Collection, Iterable
from typing import Any

class DataError(ValueError):
    """A value in a data file is wrong. ``str()`` is one line: the key's path, then what is wrong."""


def show(value: Any) -> str:
    """A value as the file spells it: ``"fast"``, ``true``, ``-5``, ``[…]``, ``{…}``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "a table {" + ", ".join(value)[:60] + "}"
    if isinstance(value, (list, tuple)):
        return "a list" if value else "an empty list"
    return repr(value)


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The choice closest to a misspelt ``word``, if one is close enough."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def one_of(value: Any, choices: Collection[str]) -> str:
    """``expected one of "a", "b", got "c" (did you mean "a"?)``."""
    msg = f"expected one of {', '.join(show(c) for c in choices)}, got {show(value)}"
    if isinstance(value, str) and (near := did_you_mean(value, choices)):
        msg += f" (did you mean {show(near)}?)"
    return msg


def is_number(value: Any) -> bool:
    """An int or a finite float; TOML's ``true`` is not a number here."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Table:
    """One table of a file, read key by key; each getter marks its key as known.

    ``where`` is the table's place (``"[expect]"``, ``"[caller] steps[3]"``, ``""`` for the top),
    used as the prefix of every message.
    """

    def __init__(self, data: Any, where: str = "") -> None:
        if not isinstance(data, dict):
            raise DataError(f"{where or 'the file'}: expected a table, got {show(data)}")
        self.data: dict[str, Any] = data
        self.where = where
        self._read: set[str] = set()

    def key(self, key: str) -> str:
        """``[expect] turn_latency_p95_ms``: the path of ``key`` in messages."""
        return f"{self.where} {key}".strip()

    def error(self, key: str, message: str) -> DataError:
        return DataError(f"{self.key(key)}: {message}")

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = None) -> Any:
        """The value as it is (``default`` when absent); marks ``key`` as known."""
        self._read.add(key)
        return self.data.get(key, default)

    def number(self, key: str, default: Any = None, *, unit: str = "", minimum: float | None = None,
               above: float | None = None, maximum: float | None = None, integer: bool = False) -> Any:
        """A number (an int with ``integer``) within the bounds; ``default`` when absent."""
        value = self.raw(key)
        if value is None:  # absent, or JSON's null
            return default
        return check_number(value, self.key(key), unit=unit, minimum=minimum, above=above, maximum=maximum,
                            integer=integer)

    def boolean(self, key: str, default: Any = None) -> Any:
        value = self.raw(key)
        if value is None:  # absent, or JSON's null
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {show(value)}")
        return value

    def string(self, key: str, default: Any = None, *, choices: Collection[str] | None = None,
               nonempty: bool = False) -> Any:
        value = self.raw(key)
        if value is None:  # absent, or JSON's null
            return default
        return check_string(value, self.key(key), choices=choices, nonempty=nonempty)

    def strings(self, key: str, default: Any = ()) -> Any:
        """A string or a list of strings, as a tuple."""
        value = self.raw(key)
        if value is None:  # absent, or JSON's null
            return default
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, (list, tuple)):
            raise self.error(key, f"expected a string or a list of strings, got {show(value)}")
        return tuple(check_string(v, f"{self.key(key)}[{i + 1}]") for i, v in enumerate(value))

    def table(self, key: str) -> Table:
        """A sub-table (empty when absent), its keys named ``[key] …`` at the top level."""
        value = self.raw(key, {})
        where = f"[{key}]" if not self.where else f"{self.where} {key}"
        return Table(value, where)

    def items(self, key: str) -> list[tuple[str, Any]]:
        """A list's entries with their place in messages (``[caller] steps[2]``, 1-based)."""
        value = self.raw(key, [])
        if not isinstance(value, (list, tuple)):
            raise self.error(key, f"expected a list, got {show(value)}")
        return [(f"{self.key(key)}[{i + 1}]", v) for i, v in enumerate(value)]

    def finish(self) -> None:
        """Refuse the keys no getter read: a typo must not silently turn something off."""
        unknown = [k for k in self.data if k not in self._read]
        if not unknown:
            return
        key = unknown[0]
        known = sorted(self._read)
        near = did_you_mean(key, known)
        hint = f"did you mean {near}?" if near else f"known: {', '.join(known)}"
        raise DataError(f"{self.key(key)}: unknown key ({hint})")


def check_number(value: Any, where: str, *, unit: str = "", minimum: float | None = None,
                 above: float | None = None, maximum: float | None = None, integer: bool = False) -> Any:
    what = ("a whole number" if integer else "a number") + (f" of {unit}" if unit else "")
    if not is_number(value) or (integer and not isinstance(value, int)):
        raise DataError(f"{where}: expected {what}, got {show(value)}")
    suffix = f" {unit}" if unit else ""
    if minimum is not None and value < minimum:
        raise DataError(f"{where}: must be at least {minimum:g}{suffix}, got {value:g}")
    if above is not None and value <= above:
        raise DataError(f"{where}: must be more than {above:g}{suffix}, got {value:g}")
    if maximum is not None and value > maximum:
        raise DataError(f"{where}: must be at most {maximum:g}{suffix}, got {value:g}")
    return value


def check_string(value: Any, where: str, *, choices: Collection[str] | None = None, nonempty: bool = False) -> str:
    if not isinstance(value, str):
        if choices:
            raise DataError(f"{where}: {one_of(value, choices)}")
        raise DataError(f"{where}: expected a string, got {show(value)}")
    if choices is not None and value not in choices:
        raise DataError(f"{where}: {one_of(value, choices)}")
    if nonempty and not value.strip():
        raise DataError(f"{where}: must not be empty")
    return value


def check_names(names: Iterable[tuple[str, str]], known: Collection[str], what: str) -> None:
    """Each ``(where, name)`` must be in ``known``: ``[mock] replies[1]: unknown fixture "x" (did you
    mean "y"?)``."""
    for where, name in names:
        if name not in known:
            near = did_you_mean(name, known)
            hint = f"did you mean {show(near)}?" if near else f"`callsim fixtures` lists the {len(known)} known"
            raise DataError(f"{where}: unknown {what} {show(name)} ({hint})")
