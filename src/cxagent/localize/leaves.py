"""The leaf table: one row per combination of the dimensions, with observed and expected
numerators and the dispersion-free variance of their difference.

Additive KPIs (counts, sums): expected = the forecast; base variance = the forecast
(Poisson).

Ratio KPIs (numerator over denominator, e.g. late orders over delivered orders): numerator
and denominator are kept apart. Each leaf's baseline rate comes from its before window,
shrunk toward the overall baseline rate ``R0`` by a prior worth ``prior_events`` events
(a beta prior with ``prior_events / R0`` pseudo-trials), so a sparse leaf with no events in
the before window does not get a zero expectation. The expected numerator is the observed
denominator times that rate, and the base variance is the two-proportion variance
``n r (1 - r) (1 + n / (n0 + k))``: binomial noise of the after window plus the uncertainty of
the before-window rate (``(1 - r)`` is dropped when numerators can exceed denominators,
which makes it Poisson). A slice's rate is always sum(numerator) / sum(denominator).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from cxagent.errors import DataValidationError
from cxagent.localize.result import Kind

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class LeafTable:
    """Arrays aligned by leaf. ``denominator`` and the baseline arrays are set for ratios."""

    kind: Kind
    dims: tuple[str, ...]
    codes: tuple[IntArray, ...]
    labels: tuple[tuple[str, ...], ...]
    observed: FloatArray
    expected: FloatArray
    base: FloatArray
    denominator: FloatArray | None = None
    baseline_numerator: FloatArray | None = None
    baseline_denominator: FloatArray | None = None

    @property
    def n(self) -> int:
        return int(self.observed.size)


def _column(frame: pd.DataFrame, name: str) -> FloatArray:
    if name not in frame.columns:
        raise DataValidationError(f"missing column (have {list(frame.columns)})", column=name)
    values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values < 0.0)
    if bad.any():
        row = frame.loc[frame.index[int(np.argmax(bad))]].to_dict()
        raise DataValidationError(
            "values must be finite, non-negative numbers", column=name, example=row
        )
    return values


def build_leaves(
    leaves: pd.DataFrame,
    dims: list[str],
    *,
    kind: Kind,
    real: str,
    predict: str,
    real_den: str | None,
    predict_den: str | None,
    prior_events: float,
) -> LeafTable:
    """Validate the input, sum duplicate dimension combinations and derive expectations."""
    if kind not in ("additive", "ratio"):
        raise ValueError(f"kind must be 'additive' or 'ratio', got {kind!r}")
    if not dims or len(set(dims)) != len(dims):
        raise ValueError(f"dims must be a non-empty list of distinct columns, got {dims}")
    for d in dims:
        if d not in leaves.columns:
            raise DataValidationError("missing dimension column", column=d)
    value_cols = [real, predict]
    if kind == "ratio":
        if real_den is None or predict_den is None:
            raise ValueError("a ratio KPI needs real_den and predict_den (denominator columns)")
        value_cols += [real_den, predict_den]
    numeric = pd.DataFrame({c: _column(leaves, c) for c in value_cols})
    keys = pd.DataFrame({d: leaves[d].astype(str).to_numpy() for d in dims})
    table = pd.concat([keys, numeric], axis=1).groupby(dims, sort=True, as_index=False).sum()

    codes: list[IntArray] = []
    labels: list[tuple[str, ...]] = []
    for d in dims:
        c, uniques = pd.factorize(table[d], sort=True)
        codes.append(c.astype(np.int64))
        labels.append(tuple(str(u) for u in uniques))
    v = table[real].to_numpy(dtype=np.float64)
    f = table[predict].to_numpy(dtype=np.float64)
    key = (kind, tuple(dims), tuple(codes), tuple(labels))
    if kind == "additive":
        return LeafTable(*key, observed=v, expected=f, base=f.copy())

    assert real_den is not None and predict_den is not None
    n = table[real_den].to_numpy(dtype=np.float64)
    n0 = table[predict_den].to_numpy(dtype=np.float64)
    total_n0 = float(n0.sum())
    rate0 = max(float(f.sum()), 0.5) / total_n0 if total_n0 > 0 else 0.0
    if rate0 > 0.0:
        pseudo_trials = prior_events / rate0
        rate = (f + prior_events) / (n0 + pseudo_trials)
        proportion = bool(np.all(v <= n + 1e-9) and np.all(f <= n0 + 1e-9))
        spread = np.clip(1.0 - rate, 0.0, 1.0) if proportion else np.ones_like(rate)
        expected = n * rate
        base = expected * spread * (1.0 + n / (n0 + pseudo_trials))
    else:
        expected = np.zeros_like(n)
        base = np.zeros_like(n)
    return LeafTable(
        *key,
        observed=v,
        expected=expected,
        base=base,
        denominator=n,
        baseline_numerator=f,
        baseline_denominator=n0,
    )
