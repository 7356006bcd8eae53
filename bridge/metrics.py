"""Prometheus metrics for the bridge, cheap on the audio hot path.

Why plain ints: ``prometheus_client``'s ``Counter.inc()`` takes a lock (and ``labels(...)``
looks the child up first), an order of magnitude more than ``obj.n += 1``. Frames are counted
50×/s per direction per call, so nothing on the hot path touches prometheus objects:

* per-call counts live in each call's own ``stats`` dict (``CallCore.stats``);
  :meth:`BridgeMetrics.bind_calls` lets a scrape sum the live calls, and
  :meth:`BridgeMetrics.call_ended` folds a finished call's stats into totals;
* process-wide counts are plain ``int`` attributes (``metrics.frames_in += 1``
  also works);
* a custom collector turns all of it into metric families only when
  ``/metrics`` is scraped. The bridge runs on one trio thread, so no lock.

Each :class:`BridgeMetrics` owns its ``CollectorRegistry`` so several apps in one
test process never collide on metric names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["BridgeMetrics"]

PREFIX = "callsim_bridge_"

#: per-call stats keys that map onto the bridge-wide counters of the same name
_STAT_COUNTERS = ("frames_in", "frames_out", "barge_ins", "truncates")
#: per-call stats keys that are errors: reported as errors_total{kind=<key>}
_STAT_ERRORS = ("truncate_errors", "openai_errors", "twilio_bad", "openai_bad")
#: per-call stats keys counted elsewhere (tool_call() has the tool and outcome)
_STAT_SKIP = ("tool_calls",)
_NAME_OK = re.compile(r"^[a-z_][a-z0-9_]*$")

StatsSource = Callable[[], Iterable[Any]]  # objects with a ``stats: Mapping[str, int]``


class BridgeMetrics:
    """Counters as plain ints; :meth:`render` produces the Prometheus text."""

    def __init__(self, error_kinds: Iterable[str] = ()) -> None:
        #: calls currently bridged (gauge): use call_started()/call_ended()
        self.active_calls = 0
        #: calls ever started
        self.calls_total = 0
        #: media frames Twilio -> OpenAI
        self.frames_in = 0
        #: audio frames/deltas OpenAI -> Twilio
        self.frames_out = 0
        #: caller speech started while the assistant was audible
        self.barge_ins = 0
        #: conversation.item.truncate sent
        self.truncates = 0
        #: calls refused as busy (max_concurrent_calls reached); bump with busy()
        self.busy_total = 0
        #: errors by kind (pre-declared kinds render as 0 so rate() works from the start)
        self.errors: dict[str, int] = dict.fromkeys(error_kinds, 0)
        #: tool calls by (tool, outcome)
        self.tool_calls: dict[tuple[str, str], int] = {}
        #: other per-call stats of finished calls (e.g. marks_ignored, deltas_dropped)
        self.call_stats: dict[str, int] = {}
        self._live: StatsSource = tuple
        self._pending: Callable[[], int] = int  # media streams accepted, no valid start yet

        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(self))

    # ------------------------------------------------------------ mutators
    def bind_calls(self, live_calls: StatsSource) -> None:
        """Scrapes add the ``stats`` of ``live_calls()`` (calls still in progress)."""
        self._live = live_calls

    def bind_pending(self, pending_streams: Callable[[], int]) -> None:
        """The pending-streams gauge reads ``pending_streams()`` at scrape time."""
        self._pending = pending_streams

    def stream_ended(self, stats: Mapping[str, int] | None = None) -> None:
        """A media stream that never became a call is gone: fold its ``stats`` (e.g. bad messages)."""
        if stats:
            self._fold(stats, self)

    def call_started(self) -> None:
        self.active_calls += 1
        self.calls_total += 1

    def call_ended(self, stats: Mapping[str, int] | None = None) -> None:
        """One call fewer; fold its final ``stats`` (if any) into the totals."""
        self.active_calls = max(0, self.active_calls - 1)
        if stats:
            self._fold(stats, self)

    def busy(self) -> None:
        self.busy_total += 1

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def tool_call(self, tool: str, outcome: str) -> None:
        key = (tool, outcome)
        self.tool_calls[key] = self.tool_calls.get(key, 0) + 1

    # ------------------------------------------------------------ output
    @staticmethod
    def _fold(stats: Mapping[str, int], into: Any) -> None:
        for key, n in stats.items():
            if not n or key in _STAT_SKIP:
                continue
            if key in _STAT_COUNTERS:
                setattr(into, key, getattr(into, key) + n)
            elif key in _STAT_ERRORS:
                into.errors[key] = into.errors.get(key, 0) + n
            else:
                into.call_stats[key] = into.call_stats.get(key, 0) + n

    def snapshot(self) -> dict[str, Any]:
        """Current values, finished plus live calls (what a scrape would show)."""
        view = _View(self)
        for call in self._live():
            stats = getattr(call, "stats", None)
            if stats:
                self._fold(stats, view)
        return {
            "active_calls": self.active_calls,
            "pending_streams": self._pending(),
            "calls_total": self.calls_total,
            "frames_in": view.frames_in,
            "frames_out": view.frames_out,
            "barge_ins": view.barge_ins,
            "truncates": view.truncates,
            "busy": self.busy_total,
            "errors": view.errors,
            "call_stats": view.call_stats,
            "tool_calls": {f"{t}/{o}": n for (t, o), n in self.tool_calls.items()},
        }

    def render(self) -> tuple[bytes, str]:
        """``(body, content_type)`` for the ``/metrics`` response."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _View:
    """A scratch copy of the foldable totals, so a scrape never mutates them."""

    def __init__(self, m: BridgeMetrics) -> None:
        self.frames_in, self.frames_out = m.frames_in, m.frames_out
        self.barge_ins, self.truncates = m.barge_ins, m.truncates
        self.errors = dict(m.errors)
        self.call_stats = dict(m.call_stats)


class _Collector(Collector):
    """Builds metric families from a BridgeMetrics' ints at scrape time."""

    def __init__(self, m: BridgeMetrics) -> None:
        self._m = m

    def collect(self) -> Iterator[Metric]:
        m = self._m
        snap = m.snapshot()
        yield GaugeMetricFamily(PREFIX + "active_calls", "Calls currently bridged.", value=snap["active_calls"])
        yield GaugeMetricFamily(PREFIX + "pending_streams", "Media streams accepted, waiting for a valid start.",
                                value=snap["pending_streams"])
        for name, doc, value in (
            ("calls", "Calls started.", snap["calls_total"]),
            ("frames_in", "Media frames forwarded Twilio -> OpenAI.", snap["frames_in"]),
            ("frames_out", "Audio frames forwarded OpenAI -> Twilio.", snap["frames_out"]),
            ("barge_ins", "Caller interruptions of audible assistant speech.", snap["barge_ins"]),
            ("truncates", "conversation.item.truncate events sent.", snap["truncates"]),
            ("busy", "Calls refused because max_concurrent_calls was reached.", snap["busy"]),
        ):
            yield CounterMetricFamily(PREFIX + name, doc, value=value)
        errors = CounterMetricFamily(PREFIX + "errors", "Errors by kind.", labels=["kind"])
        for kind, n in sorted(snap["errors"].items()):
            errors.add_metric([kind], n)
        yield errors
        tools = CounterMetricFamily(
            PREFIX + "tool_calls", "Tool calls by tool and outcome.", labels=["tool", "outcome"]
        )
        for (tool, outcome), n in sorted(m.tool_calls.items()):
            tools.add_metric([tool, outcome], n)
        yield tools
        for key, n in sorted(snap["call_stats"].items()):
            if _NAME_OK.match(key):
                yield CounterMetricFamily(PREFIX + "call_" + key, f"Per-call stat {key!r}, summed.", value=n)
