"""``loadtests/soak.py`` judges memory by its least-squares slope after the warm-up.

The soak itself is minutes of real calls (run it by hand or before a release: the README of
``loadtests``' scripts is their ``--help``); what can be checked in a moment is the verdict:
a leak shows as a slope, allocator warm-up before ``--warmup-s`` does not, and too few
samples say so rather than pass.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "loadtests"))
import soak  # noqa: E402


def _samples(rss):  # one sample every 30 s
    return [{"t_s": 30.0 * i, "bridge_rss_mb": v} for i, v in enumerate(rss)]


def test_a_steady_leak_is_its_slope_per_minute():
    samples = _samples([70 + 0.4 * i for i in range(21)])  # +0.4 MB per 30 s
    assert abs(soak.slope_per_min(samples, "bridge_rss_mb", 0) - 0.8) < 1e-9


def test_warm_up_growth_before_the_cut_is_left_out():
    samples = _samples([60, 66, 70] + [70.0, 70.1, 69.9, 70.0, 70.1, 70.0, 69.9, 70.0])
    assert abs(soak.slope_per_min(samples, "bridge_rss_mb", 90)) < 0.1
    assert soak.slope_per_min(samples, "bridge_rss_mb", 0) > 0.5  # with the warm-up it would look like a leak


def test_too_few_samples_give_no_verdict():
    assert soak.slope_per_min(_samples([70, 71]), "bridge_rss_mb", 0) is None
    assert soak.slope_per_min(_samples([70, None, 71, None]), "bridge_rss_mb", 0) is None
