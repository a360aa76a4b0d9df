"""Detectors on seeded series with planted changes; FDR, seasonal removal and TCPD scoring."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import betainc

import cxagent.detect as detect
from cxagent.detect import BOCPD, MeanObs, RateObs, get_detector
from cxagent.detect.fdr import adjusted_p_values, benjamini_hochberg, min_support
from cxagent.detect.penalised import SegmentCost, select_change_points
from cxagent.detect.residual import tail_p_values
from cxagent.detect.seasonal import (
    mean_profile,
    rate_profile,
    remove_mean_profile,
    remove_rate_profile,
)
from tests.conftest import load_module


def rate_step(
    seed: int,
    *,
    n_series: int = 1,
    t: int = 300,
    at: int = 200,
    trials: int = 400,
    before: float = 0.10,
    after: float = 0.16,
    rho: float = 0.0,
) -> tuple[RateObs, int]:
    """Seeded rate series whose rate steps from ``before`` to ``after`` at column ``at``."""
    rng = np.random.default_rng(seed)
    n = rng.integers(trials // 2, trials * 3 // 2, size=(n_series, t))
    p = np.where(np.arange(t) < at, before, after) * np.ones((n_series, 1))
    if rho > 0:  # beta-binomial: the hour's rate itself varies
        k = (1 - rho) / rho
        p = rng.beta(p * k, (1 - p) * k)
    return RateObs(rng.binomial(n, p).astype(float), n.astype(float)), at


DETECTORS = ["zscore", "ewma", "scan", "bocpd"]


@pytest.mark.parametrize("name", DETECTORS)
def test_given_planted_step_in_rate_when_scanning_then_change_found_near_true_index(
    name: str,
) -> None:
    obs, at = rate_step(1, after=0.15)
    result = get_detector(name).scan(obs)
    cps = result.change_points[0]
    assert cps.size >= 1 and np.min(np.abs(cps - at)) <= 3, cps
    first = int(np.argmax(result.step.p_value[0, at:] <= 0.001))  # first alarm after the change
    assert first <= 12  # same-day detection
    assert abs(int(result.step.change_start[0, at + first]) - at) <= 3


@pytest.mark.parametrize("name", DETECTORS)
def test_given_stationary_overdispersed_series_when_bh_over_all_then_no_false_alarm(
    name: str,
) -> None:
    obs, _ = rate_step(2, n_series=150, t=224, at=224, trials=1000, rho=0.002)
    detector = get_detector(name).fit(obs.columns(0, 200))
    step = detector.update(obs.columns(200))
    rejected, _ = benjamini_hochberg(step.p_value, alpha=0.05)
    assert rejected.sum() == 0


@pytest.mark.parametrize("name", DETECTORS)
def test_given_same_rate_jump_when_tiny_vs_large_denominator_then_only_large_flagged(
    name: str,
) -> None:
    rng = np.random.default_rng(3)
    t, at = 201, 200
    n = np.array([[5.0] * t, [2000.0] * t])
    s = rng.binomial(n.astype(int), 0.1).astype(float)
    s[:, at] = 0.4 * n[:, at]  # both jump from 10% to 40% in the last hour
    step = get_detector(name, direction="increase").fit(RateObs(s[:, :at], n[:, :at]))
    p = step.update(RateObs(s[:, at:], n[:, at:])).p_value[:, -1]
    assert p[0] > 0.01, p  # 2 late of 5 orders: noise
    assert p[1] < 1e-6, p


def test_given_binomial_tail_when_small_counts_then_not_normal_approximation() -> None:
    # 2 events where 0.4 are expected: normal z = 2.6 (p 0.005) but the binomial tail is 0.06
    n = np.full((1, 101), 20.0)
    s = np.zeros((1, 101))
    s[0, :100:5] = 1.0
    s[0, 1:100:5] = 1.0  # 40 events in 2,000 trials: 2%
    s[0, -1] = 2.0
    detector = get_detector("zscore", direction="increase", half_life=None).fit(
        RateObs(s[:, :100], n[:, :100])
    )
    p = detector.update(RateObs(s[:, 100:], n[:, 100:])).p_value[0, 0]
    assert 0.04 < p < 0.09


@pytest.mark.parametrize("name", ["zscore", "ewma", "scan"])
def test_given_residual_detector_when_updating_in_chunks_then_same_as_scan(name: str) -> None:
    obs, _ = rate_step(4, n_series=3, after=0.13)
    scanned = get_detector(name).scan(obs).step
    detector = get_detector(name).fit(obs.columns(0, 0))
    parts = [detector.update(obs.columns(a, b)) for a, b in ((0, 120), (120, 121), (121, None))]
    online = detect.DetectionStep.concat(parts)
    for field in ("score", "z", "p_value", "change_start"):
        np.testing.assert_allclose(getattr(online, field), getattr(scanned, field))


def test_given_one_lam_per_series_when_scanning_then_each_series_as_with_its_own_lam() -> None:
    obs, at = rate_step(5, n_series=2, after=0.12)
    both = get_detector("ewma", lam=np.array([0.4, 0.1])).scan(obs).step
    for row, lam in enumerate((0.4, 0.1)):
        one = RateObs(obs.successes[[row]], obs.trials[[row]])
        alone = get_detector("ewma", lam=lam).scan(one).step
        np.testing.assert_allclose(both.p_value[row], alone.p_value[0])
    # a small lasting step: the slow chart accumulates it, the fast one barely sees it
    assert both.z[1, at + 40] > 1.5 * both.z[0, at + 40] > 0
    with pytest.raises(ValueError, match="3 values for 2 series"):
        get_detector("ewma", lam=np.array([0.4, 0.1, 0.2])).scan(obs)


def test_given_small_lasting_step_when_scan_then_it_accumulates_from_its_start() -> None:
    obs, at = rate_step(6, n_series=1, after=0.112)  # +12% on 10%: under 1 sd an hour
    scan = get_detector("scan", direction="increase", max_window=48).scan(obs).step
    ewma = get_detector("ewma", direction="increase", lam=0.4).scan(obs).step
    zscore = get_detector("zscore", direction="increase", window=48).scan(obs).step
    later = at + 47
    # the best stretch reaches back to the step (the grid's 32 or 48 columns), and its z is
    # as strong as a z-score's whose window is the 48 shifted columns, far beyond the fast
    # EWMA's memory
    assert at - 1 <= int(scan.change_start[0, later]) <= at + 16
    assert scan.z[0, later] >= 0.9 * zscore.z[0, later]
    assert scan.z[0, later] > 2 * ewma.z[0, later] > 0
    # a stretch is never longer than the window
    assert np.all(scan.change_start[0] >= np.arange(obs.shape[1]) - 47)
    assert list(detect.Scan.stretches(48)) == [1, 2, 4, 8, 16, 32, 48]


def test_given_scan_when_compared_with_window_sums_then_z_is_the_best_stretch_on_the_grid() -> None:
    obs, _ = rate_step(9, n_series=3, t=150, at=150)  # no change: no alarm moves a baseline
    kw = {"direction": "increase", "alpha": 1e-12, "half_life": None}
    scan = get_detector("scan", max_window=12, **kw).fit(obs.columns(0, 60))
    step = scan.update(obs.columns(60))
    windows = []
    for length in (1, 2, 4, 8, 12):
        z = get_detector("zscore", window=length, **kw).fit(obs.columns(0, 60))
        windows.append(z.update(obs.columns(60)).z)
    np.testing.assert_allclose(step.z, np.max(windows, axis=0), rtol=1e-9, atol=1e-9)


def test_given_one_bad_column_when_scan_then_as_strong_as_a_one_column_z_score() -> None:
    rng = np.random.default_rng(8)
    n = np.full((1, 201), 500.0)
    s = rng.binomial(500, 0.1, size=(1, 201)).astype(float)
    s[0, -1] = 90.0  # 18% in the last column
    history, last = RateObs(s[:, :200], n[:, :200]), RateObs(s[:, 200:], n[:, 200:])
    scan = get_detector("scan", direction="increase").fit(history).update(last)
    one = get_detector("zscore", direction="increase", window=1).fit(history).update(last)
    assert scan.z[0, 0] >= one.z[0, 0] > 5
    with pytest.raises(ValueError, match="max_window must be >= 1"):
        get_detector("scan", max_window=0)


@pytest.mark.parametrize("kind", ["rate", "mean"])
def test_given_bocpd_when_fit_then_update_then_same_as_scanning_full_series(kind: str) -> None:
    rates, at = rate_step(5, n_series=2, t=260, at=180, after=0.14)
    if kind == "rate":
        obs: RateObs | MeanObs = rates
        params = {"prior_mean": 0.1, "overdispersion": 0.0}
    else:
        obs = MeanObs(rates.successes / rates.trials, rates.trials)
        params = {"prior_mean": 0.1, "prior_scale": 0.3}
    scanned = get_detector("bocpd", **params).scan(obs)
    detector = get_detector("bocpd", **params).fit(obs.columns(0, 150))
    parts = [detector.update(obs.columns(150, 200)), detector.update(obs.columns(200))]
    online = detect.DetectionStep.concat(parts)
    for field in ("score", "z", "p_value", "change_start"):
        np.testing.assert_allclose(getattr(online, field), getattr(scanned.step, field)[:, 150:])
    assert all(np.min(np.abs(cps - at)) <= 3 for cps in scanned.change_points)


def test_given_bocpd_trend_when_series_is_a_clean_ramp_then_no_change_point() -> None:
    rng = np.random.default_rng(6)
    ramp = np.linspace(0, 5, 300) + rng.normal(0, 0.2, 300)
    assert get_detector("bocpd", trend=True).scan(MeanObs(ramp)).change_points[0].size == 0
    kink = np.where(np.arange(300) < 150, 0.0, np.arange(300) - 150.0) * 0.05
    cps = get_detector("bocpd", trend=True).scan(MeanObs(kink + rng.normal(0, 0.2, 300)))
    assert np.min(np.abs(cps.change_points[0] - 150)) <= 10


@pytest.mark.parametrize("select", ["mbic", "map"])
def test_given_bocpd_truncated_when_scanning_then_same_change_points_as_exact(select: str) -> None:
    obs, at = rate_step(8, n_series=4, t=400, at=250, after=0.13)
    exact = get_detector("bocpd", max_runs=None, select=select).scan(obs)
    detector = BOCPD(max_runs=40, select=select)  # type: ignore[arg-type]
    truncated = detector.scan(obs)
    for a, b in zip(exact.change_points, truncated.change_points, strict=True):
        np.testing.assert_array_equal(a, b)
        assert np.min(np.abs(b - at)) <= 3
    assert detector.stats_.shape[2] <= 40 and np.all(detector.pruned_mass_ < 0.5)
    alarms = (exact.step.p_value <= 0.001) == (truncated.step.p_value <= 0.001)
    assert alarms.mean() > 0.99


def sawtooth(seed: int, t: int = 600, period: int = 30) -> np.ndarray:
    """Recurring jumps that decay back (like TCPD's bank series): no change in the process."""
    rng = np.random.default_rng(seed)
    phase = np.arange(t) % period
    return 2.0 * np.exp(-phase / 8.0) + rng.normal(0, 0.05, t)


def test_given_recurring_sawtooth_when_mbic_then_far_fewer_change_points_than_map() -> None:
    x = MeanObs(sawtooth(9))
    by_map = get_detector("bocpd", trend=True, select="map").scan(x).change_points[0]
    by_mbic = get_detector("bocpd", trend=True).scan(x).change_points[0]
    assert by_map.size >= 15  # every tooth is a segment to the MAP path
    assert by_mbic.size <= by_map.size // 2


def test_given_level_step_and_spurious_candidates_when_mbic_then_only_true_one_kept() -> None:
    rng = np.random.default_rng(10)
    y = np.where(np.arange(200) < 120, 0.0, 1.0) + rng.normal(0, 0.3, 200)
    w = np.ones(200)
    candidates = np.array([[30, 60, 119, 121, 120, 170, -1]])
    for trend in (False, True):
        chosen = select_change_points(y[None], w[None], candidates, rate=False, trend=trend)
        np.testing.assert_array_equal(chosen[0], [120])
    flat = select_change_points(y[None, :120], w[None, :120], candidates, rate=False, trend=True)
    assert flat[0].size == 0
    s = rng.binomial(500, np.where(np.arange(200) < 80, 0.10, 0.13))[None].astype(float)
    rate_candidates = np.array([[30, 60, 80, 119, 170]])
    chosen = select_change_points(
        s, np.full((1, 200), 500.0), rate_candidates, rate=True, trend=False
    )
    np.testing.assert_array_equal(chosen[0], [80])


def test_given_random_segments_when_costing_then_matches_weighted_least_squares() -> None:
    rng = np.random.default_rng(11)
    y, w = rng.normal(0, 1, 50) + 0.1 * np.arange(50), rng.uniform(0.5, 2, 50)
    for trend in (False, True):
        cost = SegmentCost(y, w, rate=False, trend=trend)
        for start, stop in ((0, 50), (3, 17), (20, 22), (40, 41)):
            t = np.arange(start, stop, dtype=float)
            design = np.stack([np.ones_like(t), t] if trend else [np.ones_like(t)], axis=1)
            sw = np.sqrt(w[start:stop])
            coef = np.linalg.lstsq(design * sw[:, None], y[start:stop] * sw, rcond=None)[0]
            rss = float(np.sum(w[start:stop] * (y[start:stop] - design @ coef) ** 2))
            got = cost.cost(np.array([start]), np.array([stop]))[0] * cost.variance
            assert got == pytest.approx(rss, abs=1e-8)


def test_given_one_sided_tail_shortcut_when_computing_p_values_then_same_as_both_tails() -> None:
    rng = np.random.default_rng(12)
    n = rng.integers(0, 60, 5000).astype(float)
    theta = rng.uniform(0.02, 0.5, n.size)
    s = rng.binomial(n.astype(int), np.clip(theta * rng.uniform(0.5, 2, n.size), 0, 1))
    var = n * theta * (1 - theta) * rng.uniform(1, 3, n.size)
    c = np.where(var > 0, n * theta * (1 - theta) / np.where(var > 0, var, 1), 1)
    k, m = c * s, c * n
    up = np.where(k > 0, betainc(np.maximum(k, 1e-12), m - k + 1, theta), 1.0)
    down = np.where(m - k > 0, betainc(np.maximum(m - k, 1e-12), k + 1, 1 - theta), 1.0)
    expected = {"increase": up, "decrease": down, "both": np.minimum(1, 2 * np.minimum(up, down))}
    for direction, want in expected.items():
        _, p = tail_p_values(True, s.astype(float), n, var, theta, direction)  # type: ignore[arg-type]
        np.testing.assert_allclose(p, np.where((n > 0) & (var > 0), want, 1.0), rtol=1e-12)


def test_given_speed_benchmark_when_run_small_then_reports_timings_and_sanity() -> None:
    bench = load_module("detect_speed")
    obs, step = bench.synthetic(30, 120, seed=1)
    assert obs.shape == (30, 120) and np.all(step < 120 - 24)
    report = bench.run("bocpd", obs, step, hours=4)
    assert {"scan_seconds", "update_ms_per_hour", "planted_found", "max_pruned_mass"} <= set(report)


def test_given_planted_weekly_pattern_when_profiling_then_recovered() -> None:
    rng = np.random.default_rng(7)
    t, how = 168 * 6, np.arange(168 * 6) % 168
    shape = 1 + 0.5 * np.sin(2 * np.pi * np.arange(168) / 24) + 0.2 * (np.arange(168) >= 120)
    n = np.full((1, t), 20000.0)
    s = rng.binomial(20000, 0.05 * shape[how])[None, :].astype(float)
    factors = rate_profile(s, n)
    np.testing.assert_allclose(factors[0], shape / shape.mean(), atol=0.06)
    flat = remove_rate_profile(RateObs(s, n), factors)
    assert np.std(flat.successes / flat.trials) < 0.25 * np.std(s / n)
    x = 10 + 3 * np.sin(2 * np.pi * how / 168) + 0.01 * np.arange(t) + rng.normal(0, 0.15, t)
    offsets = mean_profile(x[None, :])
    np.testing.assert_allclose(offsets[0], 3 * np.sin(2 * np.pi * np.arange(168) / 168), atol=0.35)
    resid = remove_mean_profile(MeanObs(x), offsets).values[0]
    assert np.std(np.diff(resid)) < 0.3


def test_given_hand_example_when_bh_then_matches() -> None:
    p = [0.01, 0.04, 0.03, 0.005, 0.2, np.nan]
    rejected, q = benjamini_hochberg(p, alpha=0.05)
    np.testing.assert_allclose(q, [0.025, 0.05, 0.05, 0.025, 0.2, np.nan])
    assert rejected.tolist() == [True, True, True, True, False, False]
    by = adjusted_p_values(p, method="by")
    np.testing.assert_allclose(by[:5], np.array([0.025, 0.05, 0.05, 0.025, 0.2]) * (137 / 60))
    with pytest.raises(ValueError, match="'bh' or 'by'"):
        adjusted_p_values(p, method="holm")  # type: ignore[arg-type]


def test_given_small_cohort_when_min_support_then_not_eligible() -> None:
    eligible = min_support([8, 140, 60], [20, 1000, 1000], [0.1, 0.1, 0.1], min_trials=100)
    assert eligible.tolist() == [False, True, False]


def test_given_hand_example_when_scoring_tcpd_then_f1_and_cover_match() -> None:
    bench = load_module("changepoint")
    ann = {"a": [10], "b": [10, 20]}
    assert bench.clean([0, 11, 11, 26, 29], 30) == [11, 26]
    assert bench.f_measure(ann, [11, 26]) == pytest.approx(20 / 27)
    assert bench.covering(ann, [11, 26], 30) == pytest.approx(0.713447, abs=1e-6)
    assert bench.true_positives({10, 17}, {8, 12}) == 2  # the tie at 10 takes 8, the smaller
    assert bench.f_measure({"a": []}, []) == 1.0


def test_given_perfect_and_empty_detections_when_scoring_nab_then_100_and_0() -> None:
    nab = load_module("nab")
    cost = {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11}
    windows = [(50, 89), (300, 339)]  # 1000 rows: rows 0-149 are probationary
    perfect, n = nab.score_file([50, 300], windows, 1000, cost)
    assert n == 1 and perfect == pytest.approx(1.0)  # the first window is probationary
    assert nab.normalised(perfect, n, cost) == pytest.approx(100.0)
    assert nab.normalised(nab.score_file([], windows, 1000, cost)[0], n, cost) == 0.0
    late, _ = nab.score_file([339], windows, 1000, cost)  # right edge: almost no credit
    assert 0 < late < 0.1
    far, _ = nab.score_file([700], windows, 1000, cost)  # far past a window: the full A_FP
    near, _ = nab.score_file([341], windows, 1000, cost)  # just past it: a small cost
    assert far == pytest.approx(-1 - 0.11) and -1 - 0.11 < near < -1


def test_given_unknown_name_when_getting_detector_then_plain_error() -> None:
    with pytest.raises(ValueError, match="known detectors: bocpd, ewma, scan, zscore"):
        get_detector("cusum")
    assert all(hasattr(detect, name) for name in detect.__all__)
    assert "bocpd" in str(sorted(detect.detector_names()))
