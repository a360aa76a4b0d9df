"""``localize``: the top regressing slices of an additive or ratio KPI.

Pipeline (each step in its own module):

1. ``leaves``: validate, sum duplicate combinations, expected numerators and their
   dispersion-free variances (ratios: numerator and denominator apart, shrunk baselines).
2. ``variance``: robust fit of the leaf variance function on all leaves.
3. ``search``: greedy, explaining-away search over every slice of up to ``max_layer``
   attributes; a slice must pass Bonferroni over all candidates.
4. Refit the variance on the leaves outside the slices found (the normal leaves) and search
   again; this second pass gives the answer.
5. Statistics of each slice on all its leaves; BH q-values over the slices tested; stars.

The method combines the ripple-effect search of Squeeze (Li et al., ISSRE 2019) and the
explaining-away loop of RiskLoc (Kalander, arXiv 2205.10004, 2022) with count-based tests,
and extends Adtributor's ratio handling (Bhagwan et al., NSDI 2014) to combined slices.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cxagent.localize.leaves import FloatArray, LeafTable, build_leaves
from cxagent.localize.result import (
    Direction,
    Kind,
    LocalizationResult,
    LocalizeConfig,
    SliceFinding,
    Status,
    VarianceModel,
)
from cxagent.localize.search import Selection, build_cuboids, greedy_search
from cxagent.localize.significance import (
    benjamini_hochberg,
    deviance_statistic,
    p_value,
    stars,
)
from cxagent.localize.variance import fit_variance, leaf_variance

SIGNS: dict[str, float] = {"drop": -1.0, "rise": 1.0, "both": 0.0}


def localize(
    leaves: pd.DataFrame,
    dims: list[str],
    *,
    kind: Kind,
    real: str = "real",
    predict: str = "predict",
    real_den: str | None = None,
    predict_den: str | None = None,
    direction: Direction = "both",
    config: LocalizeConfig | None = None,
) -> LocalizationResult:
    """Find the few slices that together explain the change from ``predict`` to ``real``.

    ``leaves`` has one row per combination of ``dims`` (duplicates are summed). Additive
    KPIs use ``real`` (observed) and ``predict`` (expected). Ratio KPIs also need
    ``real_den`` and ``predict_den``: ``predict``/``predict_den`` are the before window's
    numerator and denominator. ``direction`` restricts the search to drops or rises.
    """
    cfg = config or LocalizeConfig()
    if direction not in SIGNS:
        raise ValueError(f"direction must be 'drop', 'rise' or 'both', got {direction!r}")
    table = build_leaves(
        leaves,
        dims,
        kind=kind,
        real=real,
        predict=predict,
        real_den=real_den,
        predict_den=predict_den,
        prior_events=cfg.prior_events,
    )
    if table.n == 0 or float(table.expected.sum()) <= 0.0:
        status: Status = "empty" if table.n == 0 else "no_expected"
        return LocalizationResult(kind, tuple(dims), direction, status, n_leaves=table.n)

    cuboids = build_cuboids(table, cfg.max_layer)
    residual = table.observed - table.expected
    sign = SIGNS[direction]

    def run(usable: np.ndarray) -> tuple[list[Selection], VarianceModel, FloatArray] | None:
        dispersion, relative, used = fit_variance(
            residual,
            table.base,
            table.expected,
            usable,
            min_fit_size=cfg.min_fit_size,
            min_fit_leaves=cfg.min_fit_leaves,
        )
        if used == 0 and not usable.all():
            return None  # too few normal leaves to refit: keep the first pass
        var = leaf_variance(table.base, table.expected, dispersion, relative)
        found, inflation = greedy_search(
            table, cuboids, var, sign=sign, alpha=cfg.alpha, max_slices=cfg.max_slices
        )
        return found, VarianceModel(dispersion, relative, inflation, used), var

    first = run(np.ones(table.n, dtype=bool))
    assert first is not None
    found, model, var = first
    if found:
        explained = np.logical_or.reduce([s.mask for s in found])
        second = run(~explained)
        if second is not None:
            found, model, var = second

    n_candidates = sum(c.size for c in cuboids)
    findings = _findings(table, found, var, model.inflation, sign, n_candidates)
    total_obs, total_exp = float(table.observed.sum()), float(table.expected.sum())
    return LocalizationResult(
        kind,
        tuple(dims),
        direction,
        "ok",
        slices=findings,
        n_leaves=table.n,
        n_candidates=n_candidates,
        total_observed=total_obs,
        total_expected=total_exp,
        total_change=_scale(table, total_obs - total_exp),
        variance=model,
    )


def _scale(table: LeafTable, excess: float) -> float:
    """Excess numerator in KPI units: itself for sums, over the total denominator for rates."""
    if table.denominator is None:
        return excess
    total = float(table.denominator.sum())
    return excess / total if total > 0 else math.nan


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def _findings(
    table: LeafTable,
    found: list[Selection],
    var: FloatArray,
    inflation: float,
    sign: float,
    n_candidates: int,
) -> list[SliceFinding]:
    total_excess = float(table.observed.sum() - table.expected.sum())
    rows = []
    for sel in found:
        m = sel.mask
        obs, exp = float(table.observed[m].sum()), float(table.expected[m].sum())
        stat = deviance_statistic(np.array([obs]), np.array([exp]), np.array([var[m].sum()]))
        z = math.copysign(math.sqrt(float(stat[0]) / inflation), obs - exp)
        p = p_value(z, sign)
        rows.append((sel, obs, exp, z, p))
    q_values = benjamini_hochberg([r[4] for r in rows], n_candidates)
    out = []
    for (sel, obs, exp, z, p), q in zip(rows, q_values, strict=True):
        delta = obs - exp
        den = obs_rate = exp_rate = base_rate = None
        if table.denominator is not None:
            assert table.baseline_numerator is not None and table.baseline_denominator is not None
            den = float(table.denominator[sel.mask].sum())
            obs_rate, exp_rate = _ratio(obs, den), _ratio(exp, den)
            base_rate = _ratio(
                float(table.baseline_numerator[sel.mask].sum()),
                float(table.baseline_denominator[sel.mask].sum()),
            )
            delta = _ratio(obs - exp, den)
        out.append(
            SliceFinding(
                slice=sel.slice,
                direction="drop" if obs < exp else "rise",
                n_leaves=int(sel.mask.sum()),
                observed=obs,
                expected=exp,
                delta=delta,
                contribution=_scale(table, obs - exp),
                share=(obs - exp) / total_excess if total_excess != 0.0 else math.nan,
                z=z,
                p_value=p,
                q_value=q,
                stars=stars(q),
                denominator=den,
                observed_rate=obs_rate,
                expected_rate=exp_rate,
                baseline_rate=base_rate,
            )
        )
    return out
