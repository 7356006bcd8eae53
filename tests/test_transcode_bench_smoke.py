"""loadtests/transcode_bench.py runs and prints both resamplers side by side (a short run)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "loadtests"))

import transcode_bench  # noqa: E402


def test_one_run_prints_fir_and_soxr_hq_latency_snr_alias_and_cpu(capsys):
    assert transcode_bench.main(["--frames", "20"]) == 0
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line}
    assert {"FIR", "HQ", "quality"} <= set(rows)
    fir, hq = rows["FIR"], rows["HQ"]
    assert fir[0] == fir[1] == "5.0 / 5.0"  # withheld per direction: the filter's delay, constant
    assert float(hq[0].split(" / ")[0]) > 20  # soxr HQ withholds tens of ms
    assert float(fir[2].split()[0]) >= 35.0  # round trip
    assert float(fir[3].split()[0]) >= float(hq[3].split()[0]) - 0.5  # alias rejection at the int16 output


def test_the_lookahead_table_shows_what_less_lookahead_costs(capsys):
    """The reason the caller's side keeps a lookahead: with none (least-squares or minimum-phase) the
    round trip falls far below 35 dB; the shipped 5 ms keeps it above."""
    assert transcode_bench.main(["--frames", "5"]) == 0
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip()
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line}
    snr = {k: float(v.split()[0]) for k, v in rows.items() if k.startswith(("lookahead", "minimum-phase"))}
    assert snr["lookahead 0 ms"] < 35 and snr["minimum-phase, no lookahead"] < 35
    assert snr["lookahead 5 ms (shipped)"] >= 35
    assert snr["lookahead 1 ms"] < snr["lookahead 2 ms"] < snr["lookahead 5 ms (shipped)"]
