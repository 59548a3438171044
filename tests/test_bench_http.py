"""bench/bench_http.py's reading of wrk's latency histogram: wrk's coordinated-omission correction
undone exactly (its figures were checked against wrk's own printout: docs/benchmarks.md, "HTTP")."""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from bench_http import _percentile, uncorrect  # noqa: E402 - bench/ is not a package


def wrk_correct(histogram: dict[int, int], expected: int) -> dict[int, int]:
    """wrk 4.1's stats_correct (src/stats.c), transcribed: every value n >= 2 expected adds its count
    at n - expected, n - 2 expected, ... while above expected."""
    data = dict(histogram)
    for n in range(expected * 2, max(histogram, default=0) + 1):
        count = histogram.get(n, 0)
        m = n - expected
        while count and m > expected:
            data[m] = data.get(m, 0) + count
            m -= expected
    return data


@given(st.dictionaries(st.integers(1, 3000), st.integers(1, 50), min_size=1, max_size=200), st.integers(1, 400))
def test_uncorrect_gives_back_what_wrk_measured(measured, interval):
    assert uncorrect(wrk_correct(measured, interval), interval) == measured


def test_the_correction_moves_the_tail_and_percentiles_are_read_as_wrk_reads_them():
    measured = {1000: 98, 40_000: 2}  # 2 % of the requests took 40 ms, one connection cycle is 5 ms
    corrected = wrk_correct(measured, 5000)
    assert _percentile(measured, 97) == 1.0 and _percentile(corrected, 97) > 5.0
    assert uncorrect(corrected, 5000) == measured
