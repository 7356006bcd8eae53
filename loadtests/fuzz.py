#!/usr/bin/env python
"""Fuzz both servers we ship while good calls keep going through them.

    python loadtests/fuzz.py                        # 60 s, the bridge (with and without auth) and the mock
    python loadtests/fuzz.py --seconds 20 --target mock
    python loadtests/fuzz.py --long --json fuzz.json # 10 minutes

It starts, each its own process, the mock OpenAI server and two bridges pointed at it —
one without ``TWILIO_AUTH_TOKEN`` and one with it (webhook and stream upgrade signed,
per-call tokens checked) — then throws Hypothesis-generated abuse at them
(:mod:`fuzzgen`: malformed Twilio and Realtime messages built from the message schemas
and the ``openai`` SDK's types, framing abuse, bad upgrades, malformed webhook requests)
one connection per example, judging each answer (:mod:`fuzzcheck`). Meanwhile a good
call is placed through each bridge every ``--good-every`` seconds from a process of its
own (:mod:`goodcall`).

At the end, slow and idle peers are probed (:mod:`httpprobe`: Connection: close, idle
keep-alive, a head or a body that never ends, 300 idle sockets, media streams never
started, a call with no audio) and reported without judging the exit status.

It prints messages and connections per second, crashes (a server process that exited),
good calls passed/failed, findings by kind with one example each, RSS and open fds of
every server before and after, and the leak check (bridge ``active_calls``, mock open
sessions, 1 s after the last example). Exit status 1 on a crash, a failed good call or a
leak; ``--strict`` also fails on findings.

Hypothesis runs in rounds of ``--round`` examples, each with its own seed (``--seed`` +
round number), generation only: a server that crashed cannot be shrunk against, so the
last cases sent to it are printed as the repro instead.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import deque
from pathlib import Path
from typing import Any

import fuzzcheck
import fuzzgen
import httpprobe
import servers
from goodcall import GoodCaller
from hypothesis import HealthCheck, Phase, given, seed, settings
from soak import slope_per_min

AUTH_TOKEN = "fuzz-auth-token-0123456789abcdef"
MOCK_SDK_REJECTS = "mock sent an event the SDK rejects"
BRIDGE_PATHS = ("/incoming-call", "/incoming-call", "/media-stream", "/health", "/metrics", "/api/conversations",
                "/api/conversations/CA00", "/", "/incoming-call?x=1")
MOCK_PATHS = ("/_mock/health", "/_mock/sessions", "/_mock/sessions/1", "/_mock/behaviour", "/v1/realtime", "/")


def sign_webhook(public_url: str) -> Any:
    from twilio.request_validator import RequestValidator

    v = RequestValidator(AUTH_TOKEN)

    def sign(path: str, body: bytes) -> str:
        params = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        return v.compute_signature(public_url + path, params)

    return sign


def call_tokens(bridge: servers.Server, n: int) -> list[tuple[str, str]]:
    """(CallSid, per-call token) pairs, asked of the bridge's own webhook as Twilio would."""
    out = []
    sign = sign_webhook(bridge.url)
    for i in range(n):
        sid = f"CA{i:032x}"
        body = urllib.parse.urlencode({"CallSid": sid, "From": "+15551230000", "To": "+15559870000"}).encode()
        req = urllib.request.Request(bridge.url + "/incoming-call", data=body, headers={
            "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": sign("/incoming-call", body)})
        with urllib.request.urlopen(req, timeout=5) as r:
            m = re.search(rb'<Parameter name="token" value="([^"]+)"', r.read())
        if m:
            out.append((sid, m.group(1).decode()))
    return out


def last_exception(log: Path) -> str:
    """The exception a crashed server died of, from its log: our own frames and the error line."""
    lines = [ln.strip(" |") for ln in log.read_text(errors="replace").splitlines()]
    errs = [i for i, ln in enumerate(lines) if re.match(r"^[\w.]+(Error|Exception)\b", ln)]
    if not errs:
        return "(no exception in the log)"
    end = errs[-1]
    ours = [m for ln in lines[max(0, end - 40):end]
            if (m := re.match(r'^File ".*/((?:bridge|simulator)/[^"]+)", line (\d+), in (\S+)', ln))]
    return " <- ".join(f"{m[1]}:{m[2]} {m[3]}" for m in reversed(ours[-3:])) + "\n    " + lines[end]


def stream_signature(bridge: servers.Server) -> str:
    from twilio.request_validator import RequestValidator

    return RequestValidator(AUTH_TOKEN).compute_signature(f"ws://127.0.0.1:{bridge.port}/media-stream", {})


class Fuzzer:
    """The servers, the targets built on them, and the rounds of examples."""

    def __init__(self, tmp: Path, target: str) -> None:
        self.tmp = tmp
        # few records of closed sessions: the mock's RSS after the run then says leak, not history
        self.mock = servers.start_mock(tmp, extra=["--keep-sessions", "50"])
        self.bridge = servers.start_bridge(tmp, self.mock)
        self.bridge_auth = servers.start_bridge(tmp, self.mock, name="bridge_auth", auth_token=AUTH_TOKEN) \
            if target in ("bridge", "both") else None
        self.servers = {s.name: s for s in (self.mock, self.bridge, self.bridge_auth) if s is not None}
        self.targets: list[fuzzgen.Target] = []
        if target in ("bridge", "both"):
            assert self.bridge_auth is not None
            self.targets.append(fuzzgen.Target("bridge", self.bridge.port, "/media-stream", http_paths=BRIDGE_PATHS))
            self.targets.append(fuzzgen.Target(
                "bridge_auth", self.bridge_auth.port, "/media-stream",
                ws_headers=(("X-Twilio-Signature", stream_signature(self.bridge_auth)),),
                http_paths=BRIDGE_PATHS, tokens=tuple(call_tokens(self.bridge_auth, 16)),
                sign=sign_webhook(self.bridge_auth.url)))
        if target in ("mock", "both"):
            self.targets.append(fuzzgen.Target("mock", self.mock.port, "/v1/realtime",
                                               ws_headers=(("Authorization", f"Bearer {servers.API_KEY}"),),
                                               http_paths=MOCK_PATHS))
        self.tally = fuzzcheck.Tally()
        self.last: dict[str, deque[fuzzgen.Case]] = {t.name: deque(maxlen=5) for t in self.targets}
        self.crashes: dict[str, dict[str, Any]] = {}

    def alive_targets(self) -> list[fuzzgen.Target]:
        return [t for t in self.targets if t.name not in self.crashes]

    def check_crashes(self) -> None:
        for name, s in self.servers.items():
            if name not in self.crashes and not s.alive:
                self.crashes[name] = {"exit_code": s.exit_code, "after_examples": self.tally.cases,
                                      "last_cases": [c.short(1500) for c in self.last.get(name, ())],
                                      "log_tail": s.tail(30), "exception": last_exception(s.log)}

    def round(self, n: int, round_seed: int) -> None:
        targets = self.alive_targets()
        if not targets:
            return

        @seed(round_seed)
        @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck), derandomize=False)
        @given(fuzzgen.cases(targets))
        def one(case: fuzzgen.Case) -> None:
            t = next(t for t in targets if t.name == case.target)
            if t.name in self.crashes:
                return
            self.last[t.name].append(case)
            verdict = fuzzcheck.play(case, t.port)
            if verdict.finding == "connect_failed":  # refused: the server may be dying of the last case
                self.last[t.name].pop()  # (this one never reached it)
                try:
                    self.servers[t.name].proc.wait(3)
                except subprocess.TimeoutExpired:
                    pass
            if not self.servers[t.name].alive or not self.mock.alive:
                self.check_crashes()
                if verdict.finding == "connect_failed":
                    return  # counted as the crash, not as a finding
            self.tally.add(case, verdict)

        one()
        self.check_crashes()

    def stop(self) -> None:
        for s in self.servers.values():
            s.stop()


def run_probes(fz: Fuzzer) -> dict[str, dict[str, Any]]:
    """Slow and idle peers (:mod:`httpprobe`) against the bridge (no auth) and the mock, at once."""
    b, m = fz.bridge, fz.mock
    probes: dict[str, Any] = {}
    if b.alive:
        probes.update({
            "bridge: Connection: close": lambda: httpprobe.connection_close(b.port, "/health"),
            "bridge: idle keep-alive": lambda: httpprobe.idle_keepalive(b.port, "/health"),
            "bridge: slow head": lambda: httpprobe.slow_head(b.port),
            "bridge: slow body": lambda: httpprobe.slow_body(b.port, "/incoming-call"),
            "bridge: 300 idle sockets": lambda: httpprobe.idle_sockets(b.port, "/health"),
            "bridge": lambda: {
                "streams never started": httpprobe.stream_never_started(
                    b.port, lambda: servers.bridge_active_calls(b), []),
                "a call without audio": httpprobe.call_without_audio(
                    b.port, httpprobe.start_message("CA" + "2" * 32, "x"), [])},
        })
    if m.alive:
        probes.update({
            "mock: Connection: close": lambda: httpprobe.connection_close(m.port, "/_mock/health"),
            "mock: slow head": lambda: httpprobe.slow_head(m.port),
            "mock: slow body": lambda: httpprobe.slow_body(m.port, "/_mock/behaviour"),
            "mock: 300 idle sockets": lambda: httpprobe.idle_sockets(m.port, "/_mock/health"),
        })
    return httpprobe.run_all(probes)


def run(a: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(a.tmp or tempfile.mkdtemp(prefix="callsim-fuzz-"))
    tmp.mkdir(parents=True, exist_ok=True)
    fz = Fuzzer(tmp, a.target)
    try:
        before = {name: s.stats() for name, s in fz.servers.items()}
        good = [GoodCaller(fz.bridge.url + "/incoming-call", seconds=a.seconds, every=a.good_every,
                           log=tmp / "goodcall.log")]
        if fz.bridge_auth is not None:
            good.append(GoodCaller(fz.bridge_auth.url + "/incoming-call", seconds=a.seconds, every=a.good_every,
                                   auth_token=AUTH_TOKEN, log=tmp / "goodcall_auth.log"))
        t0 = time.monotonic()
        r = 0
        samples: list[dict[str, Any]] = []
        while time.monotonic() - t0 < a.seconds and fz.alive_targets():
            fz.round(a.round, a.seed + r)
            r += 1
            samples.append({"t_s": time.monotonic() - t0,
                            **{f"{n}_rss_mb": s.stats()["rss_mb"] for n, s in fz.servers.items()}})
            if a.progress:
                print(f"  {time.monotonic() - t0:5.0f} s: {fz.tally.cases} cases, {len(fz.tally.findings)} kinds of "
                      f"finding, crashes: {sorted(fz.crashes) or 'none'}", flush=True)
        elapsed = time.monotonic() - t0
        for g in good:
            g.wait(a.seconds + 60)
        fz.check_crashes()
        settled = servers.wait_settled(fz.bridge if fz.bridge.alive else None, fz.mock if fz.mock.alive else None, 1.0)
        if fz.bridge_auth is not None and fz.bridge_auth.alive:
            settled["bridge_auth_active_calls"] = servers.bridge_active_calls(fz.bridge_auth)
        after = {name: s.stats() for name, s in fz.servers.items()}
        tb = {name: servers.log_tracebacks(s.log) for name, s in fz.servers.items()}
        rejected = servers.log_lines(fz.mock.log, MOCK_SDK_REJECTS)  # the mock checks what it sends
        if rejected:
            fz.tally.findings["mock: sent an event the SDK rejects"] = len(rejected)
            fz.tally.examples["mock: sent an event the SDK rejects"] = rejected[0][:400]
        probes = run_probes(fz) if a.probes else {}  # after the figures: they leave sockets behind them
    finally:
        fz.stop()
    t = fz.tally
    return {
        "seconds": round(elapsed, 1), "rounds": r, "cases": t.cases, "messages": t.messages,
        "cases_per_s": round(t.cases / elapsed, 1), "messages_per_s": round(t.messages / elapsed, 1),
        "by_kind": dict(t.by_kind), "statuses": dict(t.statuses), "close_codes": dict(t.close_codes),
        "findings": dict(t.findings), "finding_examples": t.examples, "crashes": fz.crashes,
        "good_calls": {"passed": sum(g.passed for g in good), "failed": [f for g in good for f in g.failed]},
        "before": before, "after": after, "leaks": settled, "tracebacks_logged": tb, "logs": str(tmp),
        "probes": probes,
        # memory slope over the last 70 % of the run (the first rounds fill caches and arenas)
        "rss_slope_mb_per_min": {n: slope_per_min(samples, f"{n}_rss_mb", 0.3 * elapsed) for n in fz.servers},
    }


def report(doc: dict[str, Any]) -> int:
    print(f"\nfuzzed {doc['seconds']} s: {doc['cases']} connections ({doc['cases_per_s']}/s), "
          f"{doc['messages']} messages/frames/requests ({doc['messages_per_s']}/s)")
    print("  by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(doc["by_kind"].items())))
    print(f"  close codes: {doc['close_codes']}")
    g = doc["good_calls"]
    print(f"good calls: {g['passed']} passed, {len(g['failed'])} failed"
          + "".join(f"\n  failed: {f['why']}" for f in g["failed"][:5]))
    print(f"{'server':<12} {'RSS MB before':>14} {'after':>8} {'fds before':>11} {'after':>6}  tracebacks in log")
    for name, b in doc["before"].items():
        aft = doc["after"].get(name, {})
        print(f"{name:<12} {_n(b['rss_mb']):>14} {_n(aft.get('rss_mb')):>8} {_n(b['fds']):>11} {_n(aft.get('fds')):>6}  "
              f"{doc['tracebacks_logged'].get(name, 0)}")
    print("RSS slope over the last 70 % of the run: " + ", ".join(
        f"{n} {'-' if v is None else f'{v:+.2f}'} MB/min" for n, v in doc["rss_slope_mb_per_min"].items()))
    print(f"leak check 1 s after: {doc['leaks']}")
    print(f"crashes: {len(doc['crashes'])}")
    for name, c in doc["crashes"].items():
        print(f"  {name} exited with {c['exit_code']} after {c['after_examples']} examples, on:\n    {c['exception']}\n"
              f"  the last case sent to it:\n    {c['last_cases'][-1][:700] if c['last_cases'] else '(none)'}")
    print(f"findings: {sum(doc['findings'].values())} in {len(doc['findings'])} kinds")
    for k, n in sorted(doc["findings"].items(), key=lambda kv: -kv[1]):
        print(f"  {n:6d}  {k}\n          e.g. {doc['finding_examples'][k][:400]}")
    if doc["probes"]:
        print("slow and idle peers (not judged in the exit status):")
        for name, p in sorted(doc["probes"].items()):
            print(f"  {'ok  ' if p['ok'] else 'FIND'} {name}: {p['detail']}")
    leaked = any(v for v in doc["leaks"].values())
    return 1 if doc["crashes"] or g["failed"] or leaked else 0


def _n(v: Any) -> str:
    return "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz (default 60)")
    p.add_argument("--long", action="store_true", help="fuzz for 10 minutes")
    p.add_argument("--target", choices=["bridge", "mock", "both"], default="both")
    p.add_argument("--seed", type=int, default=18, help="seed of the first round (round k uses seed + k)")
    p.add_argument("--round", type=int, default=200, help="examples per Hypothesis round")
    p.add_argument("--good-every", type=float, default=5.0, help="seconds between good calls, per bridge")
    p.add_argument("--json", help="write every figure here")
    p.add_argument("--tmp", help="directory for the servers' logs (default: a new temporary one)")
    p.add_argument("--strict", action="store_true", help="exit 1 on findings too")
    p.add_argument("--progress", action="store_true", help="a line per round")
    p.add_argument("--no-probes", dest="probes", action="store_false",
                   help="skip the slow/idle-peer probes at the end (they take ~15 s)")
    a = p.parse_args(argv)
    if a.long:
        a.seconds = max(a.seconds, 600.0)
    doc = run(a)
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=2, default=str))
    status = report(doc)
    if a.strict and doc["findings"]:
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
