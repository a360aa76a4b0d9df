"""Is a slice worse than the rest of its parent? A calibrated difference-in-differences test.

With ``g_t = O_rest / E_rest`` the rest of the parent's observed-over-expected factor in
window ``t``, slice A should see ``E_a g_t`` bad events if nothing set it apart. The excess
``O_a - sum_t E_a g_t`` has variance ``sum_t E_a g_t (1 + E_a / E_rest) + (E_a g_t)^2 v``:
Poisson noise, the error of the estimated factor (the delta method for a ratio estimator)
and ``v``, how much A's rate moves apart from its reference from one window to the next.
When the rest shares A's market, ``v`` is A's ``kappa^2`` (``calibrate``): the market's shock
cancels. When the rest lies in other markets (SF grocery against other regions' grocery),
nothing cancels and ``v`` is A's own ``tau^2``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from cxagent.incidents.calibrate import N_DAYPARTS
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
    obs, exp = effects.observed[comp], effects.expected[comp]
    oa, ea = obs[a, cols], exp[a, cols]
    ob, eb = obs[parent, cols] - oa, exp[parent, cols] - ea
    g = (np.maximum(ob, 0.0) + 0.5) / (np.maximum(eb, 0.0) + 0.5)
    m = ea * g
    cal = model.calibration
    if same_market:
        rel = np.full(len(cols), cal.kappa2[a])
    else:
        rel = cal.tau2[a, dayparts[cols] % N_DAYPARTS]
    var = float(np.sum(m * (1 + ea / (np.maximum(eb, 0.0) + 0.5)) + m**2 * rel))
    if var <= 0:
        return 1.0
    return float(ndtr(-(oa.sum() - m.sum() - 0.5) / np.sqrt(var)))
