"""The in-process bridge, loaded by name (``module:callable``), and its settings checked up front.

The harness never imports a bridge (design.md rule 1): ``callsim demo`` and the pytest plugin
name one, by default ``callsim.bridge.server:embedded`` — an async context manager taking a
settings dict and yielding the bridge's base URL. A hook may also offer
``hook.check_config(settings_dict)``, raising ``ValueError`` with a one-line message: every
scenario's ``[bridge]`` table goes through it before a mock or a bridge is started, so
``audio_mode = "mp3"`` is refused at once, naming the file, not after the other scenarios ran.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

BridgeHook = Callable[[dict[str, Any]], AbstractAsyncContextManager[str]]


class HookError(ValueError):
    """The hook cannot be loaded, or refuses a scenario's settings; ``str()`` is one line."""


def load_hook(spec: str) -> BridgeHook:
    """``module:attribute`` → the bridge hook, imported now.

    The current directory is searched first, as ``pytest`` and ``uvicorn app:app`` do: a user's
    ``mybridge.py`` next to where they run ``callsim demo --bridge-hook mybridge:hook`` is found
    without ``PYTHONPATH=.``.
    """
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise HookError(f"--bridge-hook wants MODULE:CALLABLE, got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
            raise HookError(f"--bridge-hook {spec}: no module named {exc.name!r} (looked in {cwd} and on "
                            "sys.path)") from None
        raise HookError(f"--bridge-hook {spec}: importing {module} failed: {exc}") from None
    except Exception as exc:  # the user's module raised while importing: say what, in one line
        raise HookError(f"--bridge-hook {spec}: importing {module} failed: {type(exc).__name__}: {exc}") from None
    try:
        hook = getattr(mod, attr)
    except AttributeError:
        raise HookError(f"--bridge-hook {spec}: module {module} ({_origin(mod)}) has no attribute "
                        f"{attr!r}") from None
    if not callable(hook):
        raise HookError(f"--bridge-hook {spec}: {attr} is not callable")
    return hook  # type: ignore[no-any-return]


def check_config(hook: BridgeHook, config: dict[str, Any], where: str) -> None:
    """Ask the hook whether it can start with ``config`` (if it offers ``check_config``);
    ``where`` names the scenario file in the one-line :class:`HookError`."""
    check = getattr(hook, "check_config", None)
    if check is None:
        return
    try:
        check(config)
    except ValueError as exc:
        raise HookError(f"{where}: [bridge] {exc}") from None


def _origin(mod: Any) -> str:
    path = getattr(mod, "__file__", None)
    return str(Path(path)) if path else "built in"
