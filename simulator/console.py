"""What a scenario run prints: a results table that fits the console, then one line per failure.

Read by people at a terminal and in CI logs, so every line fits the width in use and nothing
is cut inside a word:

- the width is ``$COLUMNS`` when set, else the terminal's, else (output piped, as in CI)
  :data:`PIPED_WIDTH` = 100 columns: wide enough for a failure line to read in one or two
  lines, narrow enough for any CI log viewer;
- the table keeps scenario names whole; below :data:`WIDE` columns it shows the verdict, the
  worst turn latency, the worst bridge overhead and one ``details`` cell (barge-in, codec,
  underruns), at :data:`WIDE` and more one column per figure and the run time;
- the verdicts come under the table, one line each and each self-contained (``grep``-able):
  ``failed  scenario[call N]: expectation — measured X, limit Y — what to fix``, then
  ``error`` lines for calls that could not run and ``skipped`` lines with their reasons;
- every other line (status, profile, summary, report paths) is wrapped at the width with a
  hanging indent.
"""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from .measure.expectation_hints import hint, show_limit, show_measured
from .measure.measurements import CallMetrics

if TYPE_CHECKING:
    from .runner import ScenarioRun

PIPED_WIDTH = 100  # output piped (CI logs) and no $COLUMNS
WIDE = 120  # from this width on, the table shows one column per figure
MIN_WIDTH = 40
MAX_LINES_PER_EXPECTATION = 5  # failure lines of one expectation in one scenario; the rest are counted
LABEL_WIDTH = 8  # "skipped " — the verdict lines' label column, also their hanging indent

_STYLE = {"passed": "green", "skipped": "yellow", "interrupted": "yellow"}  # any other status is red
_LABEL_STYLE = {"failed": "red", "error": "red", "skipped": "yellow"}


# ================================================================== the console


def console_width(environ: Mapping[str, str], terminal_columns: int | None) -> int:
    """``$COLUMNS`` if set, else the terminal's width, else :data:`PIPED_WIDTH`."""
    cols = environ.get("COLUMNS", "").strip()
    if cols.isdigit() and int(cols) > 0:
        return max(MIN_WIDTH, int(cols))
    if terminal_columns:
        return max(MIN_WIDTH, terminal_columns)
    return PIPED_WIDTH


def make_console() -> Console:
    """The run's console on stdout, at :func:`console_width`."""
    probe = Console()
    terminal = probe.size.width if probe.is_terminal else None
    return Console(width=console_width(os.environ, terminal))


_GLUE = "\x00"  # a space no line may break at, while wrapping
_UNBREAKABLE = re.compile(r"(?<=\d) (?=(?:ms|dB|s)\b)|(?<=[≤≥]) |(?<=limit) (?=[≤≥]|p\d\d )|(?<=limit p\d\d) (?=[≤≥])"
                          r"|(?<=\[call) |(?<=\[calls) ")


def wrap(text: str, width: int, indent: int = 4, first: str = "") -> list[str]:
    """``first + text`` as lines of at most ``width`` columns, broken between words (never between a number
    and its unit); the lines after the first start ``indent`` columns in. Only a single word longer than a
    line (a long path) is cut."""
    glued = _UNBREAKABLE.sub(_GLUE, " ".join(text.split()))
    lines = textwrap.wrap(glued, width=width, initial_indent=first, subsequent_indent=" " * indent,
                          break_on_hyphens=False, break_long_words=False) or [first.rstrip()]
    out = []
    for line in lines:  # a word longer than a line starts a line of its own, then is cut
        while len(line) > width:
            out.append(line[:width])
            line = " " * indent + line[width:]
        out.append(line)
    return [line.replace(_GLUE, " ") for line in out]


def print_wrapped(console: Console, text: str, *, indent: int = 4, first: str = "",
                  style: str | None = None) -> None:
    for line in wrap(text, console.width, indent, first):
        console.print(line, style=style, markup=False, highlight=False, soft_wrap=True)


def status_lines(run: ScenarioRun) -> list[str]:
    """The line printed when a scenario's calls are done (then its notes), unwrapped."""
    status = {"passed": "passed", "skipped": "skipped"}.get(run.status, run.status.upper())
    why = f" — {run.skip_reason}" if run.status == "skipped" and run.skip_reason else ""
    return [f"{run.scenario.name}: {status} in {run.seconds:.1f} s{why}"] + [f"note: {n}" for n in run.notes]


def print_status(console: Console, run: ScenarioRun) -> None:
    head, *notes = status_lines(run)
    print_wrapped(console, head, first="  ", indent=6)
    for note in notes:
        print_wrapped(console, note, first="    ", indent=10)


# ====================================================================== the table


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.0f}"


def _worst(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None


def _p50(values: Iterable[float | None]) -> float | None:
    vals = sorted(v for v in values if v is not None)
    return vals[len(vals) // 2] if vals else None


def _codec(ms: list[CallMetrics]) -> str:
    codec = [m.codec for m in ms if m.codec.checked]
    if not codec:
        return ""
    if all(x.bit_exact for x in codec):
        return "bit-exact"
    snrs = [x.snr_db for x in codec if x.snr_db is not None]
    return f"SNR {min(snrs):.1f} dB" if snrs else "not bit-exact"


def _details(ms: list[CallMetrics]) -> str:
    """The narrow table's one cell for the figures only some scenarios have."""
    bis = [b for m in ms for b in m.barge_ins]
    parts = []
    clear = _worst(b.clear_ms for b in bis)
    if clear is not None:
        parts.append(f"clear {clear:.0f} ms")
    trunc = _worst(b.truncate_error_ms for b in bis)
    if trunc is not None:
        parts.append(f"trunc ±{trunc:.0f} ms")
    if codec := _codec(ms):
        parts.append(codec)
    underrun = sum(m.underrun_ms for m in ms)
    if underrun:
        parts.append(f"underrun {underrun:.0f} ms")
    return ", ".join(parts) or "—"


def _result(run: ScenarioRun) -> str:
    return f"[{_STYLE.get(run.status, 'red')}]{run.status}"


_NARROW = ("turn\nmax ms", "bridge\nmax ms")
_WIDE = ("turn\np50 ms", "turn\nmax ms", "bridge\nmax ms", "clear\nms", "talk-over\nms", "trunc\nms",
         "\ncodec", "underrun\nms", "time\ns")
_WIDE_VALUES = {"\ncodec": len("SNR 99.9 dB")}  # the widest value a column holds, when wider than its head


def _head_width(head: str) -> int:
    return max(max(len(w) for w in head.split("\n")), _WIDE_VALUES.get(head, 5))


def _fits_wide(name_width: int, width: int) -> bool:
    """One column per figure only when every head and value fits whole: nothing is squeezed."""
    fixed = name_width + len("calls") + len("skipped") + sum(_head_width(h) for h in _WIDE)
    return width >= WIDE and fixed + 2 * (len(_WIDE) + 2) <= width


def results_table(runs: list[ScenarioRun], width: int = 80) -> Table:
    """One row per scenario, laid out for a console ``width`` columns wide (see the module doc)."""
    name_width = max([len("scenario")] + [len(r.scenario.name) for r in runs])
    wide = _fits_wide(name_width, width)
    t = Table(title="callsim results", header_style="bold", box=None, padding=(0, 1), pad_edge=False,
              show_edge=False, title_justify="left")
    t.add_column("\nscenario", no_wrap=True, min_width=name_width)
    t.add_column("\ncalls", justify="right", no_wrap=True)
    t.add_column("\nresult", no_wrap=True)
    for h in _WIDE if wide else _NARROW:
        t.add_column(h, justify="left" if "codec" in h else "right", no_wrap=True, min_width=_head_width(h))
    if not wide:
        t.add_column("\ndetails")  # the one column that wraps (between words) when space runs out
    for run in runs:
        # a skipped scenario's calls ran, but their figures are not what the scenario is about
        ms = [m for m in run.metrics if m.status != "skipped"]
        turns = [tm for m in ms for tm in m.turns]
        bis = [b for m in ms for b in m.barge_ins]
        row = [run.scenario.name, str(len(run.metrics)), _result(run)]
        if wide:
            row += [_ms(_p50(x.latency_ms for x in turns)), _ms(_worst(x.latency_ms for x in turns)),
                    _ms(_worst(x.overhead_ms for x in turns)), _ms(_worst(b.clear_ms for b in bis)),
                    _ms(_worst(b.talk_over_ms for b in bis)), _ms(_worst(b.truncate_error_ms for b in bis)),
                    _codec(ms) or "—", _ms(sum(m.underrun_ms for m in ms)), f"{run.seconds:.1f}"]
        else:
            row += [_ms(_worst(x.latency_ms for x in turns)), _ms(_worst(x.overhead_ms for x in turns)),
                    _details(ms)]
        t.add_row(*row)
    return t


# =================================================================== the verdicts


def _calls(indices: list[int]) -> str:
    """``[call 0]``, ``[calls 0–4]`` or ``[calls 0, 2, 5]``."""
    if len(indices) == 1:
        return f"[call {indices[0]}]"
    if indices == list(range(indices[0], indices[-1] + 1)):
        return f"[calls {indices[0]}–{indices[-1]}]"
    return f"[calls {', '.join(map(str, indices))}]"


def _failure(scenario: str, m: CallMetrics, e: dict[str, Any]) -> str:
    name, measured, limit = e["name"], e.get("measured"), e.get("limit")
    # nothing measured: the message says what happened instead (its part before the advice)
    shown = show_measured(name, measured) or str(e.get("message") or "not measured").split(" — ")[0]
    fix = hint(name, measured, limit)
    return f"{scenario}[call {m.call_index}]: {name} — {shown}, {show_limit(name, limit)}" + (
        f" — {fix}" if fix else "")


def verdict_lines(runs: list[ScenarioRun]) -> list[tuple[str, str]]:
    """``(label, text)`` for each failed expectation of a call, each call error, then each skip.

    Labels are ``failed``, ``error`` and ``skipped``. Expectations a call did not get judged on because it
    errored or its scenario was skipped are not listed again: the error or skip line says why."""
    failed: list[tuple[str, str]] = []
    errors: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    for run in runs:
        name = run.scenario.name
        if run.status == "skipped":
            skipped.append(("skipped", f"{name}: {run.skip_reason or 'the scenario does not apply'}"))
            continue
        if run.interrupted:
            skipped.append(("skipped", f"{name}: interrupted (Ctrl-C) before it finished: nothing judged"))
            continue
        shown: dict[str, int] = {}
        over: dict[str, int] = {}
        groups: dict[tuple[tuple[str, ...], str], list[int]] = {}
        for m in run.metrics:
            if m.status == "error" or m.error:
                errors.append(("error", f"{name}[call {m.call_index}]: {m.error or 'the call ended in an error'}"))
                continue
            if m.status == "skipped":
                skipped.append(("skipped", f"{name}[call {m.call_index}]: {m.skip_reason or 'does not apply'}"))
                continue
            by_reason: dict[str, list[str]] = {}
            for e in m.expectations:
                if e.get("status") == "failed":
                    n = shown.get(e["name"], 0)
                    if n < MAX_LINES_PER_EXPECTATION:
                        failed.append(("failed", _failure(name, m, e)))
                        shown[e["name"]] = n + 1
                    else:
                        over[e["name"]] = over.get(e["name"], 0) + 1
                elif e.get("status") == "skipped":
                    by_reason.setdefault(str(e.get("message") or "not judged"), []).append(e["name"])
            for reason, names in by_reason.items():
                groups.setdefault((tuple(names), reason), []).append(m.call_index)
        for exp, n in over.items():
            failed.append(("failed", f"{name}: {exp} failed in {n} more call(s): see report.html"))
        for (names, reason), indices in groups.items():
            skipped.append(("skipped", f"{name}{_calls(indices)} {', '.join(names)} — {reason}"))
    return failed + errors + skipped


def print_verdicts(console: Console, runs: list[ScenarioRun]) -> None:
    """The verdict lines under the table, each wrapped with a hanging indent under its label."""
    verdicts = verdict_lines(runs)
    if verdicts:
        console.print()
    for label, text in verdicts:
        head, *rest = wrap(text, console.width, LABEL_WIDTH, first=f"{label:<{LABEL_WIDTH - 1}} ")
        console.print(head[:LABEL_WIDTH], style=_LABEL_STYLE.get(label), end="", markup=False, highlight=False,
                      soft_wrap=True)
        console.print(head[LABEL_WIDTH:], markup=False, highlight=False, soft_wrap=True)
        for line in rest:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    if verdicts:
        console.print()
