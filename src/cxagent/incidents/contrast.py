"""Is a slice worse than the rest of its parent? A calibrated difference-in-differences test.

With ``g_t = O_rest / E_rest`` the rest of the parent's observed-over-expected factor in
window ``t``, slice A should see ``m_t = E_a (1 + gamma_t (g_t - 1))`` bad events if nothing
set it apart (``gamma``: the market link of ``calibrate``, 1 across markets). The excess
``O_a - sum_t m_t`` has variance ``sum_t m_t + (E_a gamma_t)^2 g_t / E_rest + m_t^2 v``:
Poisson noise, the error of the estimated factor (the delta method for a ratio estimator)
and ``v``, how much A's rate moves apart from its reference from one window to the next.
When the rest shares A's market, ``v`` is A's ``kappa^2`` (``calibrate``): the market's shock
cancels. When the rest lies in other markets (SF grocery against other regions' grocery),
nothing cancels and ``v`` is A's own ``tau^2``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from cxagent.incidents.calibrate import MIN_FACTOR, N_DAYPARTS, link_gamma
from cxagent.incidents.detection import MetricModel
from cxagent.incidents.effects import Effects


def contrast_p(
    effects: Effects,
    model: MetricModel,
    a: int,
    parent: int,
    cols: np.ndarray,
    *,
    dayparts: np.ndarray,
    same_market: bool,
) -> float:
    """One-sided p-value that slice ``a`` got worse than the rest of ``parent`` on
    ``model``'s component over window positions ``cols``."""
    comp = model.component
    obs, exp, tri = effects.observed[comp], effects.expected[comp], effects.trials[comp]
    oa, ea, na = obs[a, cols], exp[a, cols], tri[a, cols]
    ob, eb = obs[parent, cols] - oa, np.maximum(exp[parent, cols] - ea, 0.0) + 0.5
    g = (np.maximum(ob, 0.0) + 0.5) / eb
    cal = model.calibration
    if same_market:
        gamma = link_gamma(
            float(cal.link_power[a]), ea, na, eb, np.maximum(tri[parent, cols] - na, 0.0)
        )
        rel = np.full(len(cols), cal.kappa2[a])
    else:
        gamma = np.ones(len(cols))
        rel = cal.tau2[a, dayparts[cols] % N_DAYPARTS]
    m = ea * np.maximum(1.0 + gamma * (g - 1.0), MIN_FACTOR)
    var = float(np.sum(m + (ea * gamma) ** 2 * g / eb + m**2 * rel))
    if var <= 0:
        return 1.0
    return float(ndtr(-(oa.sum() - m.sum() - 0.5) / np.sqrt(var)))
