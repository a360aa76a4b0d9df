"""The hypothesis library: one module per root cause, registered here in ranking order.

``REGISTRY`` maps each cause's name (the scenario vocabulary) to its ``Hypothesis``;
``normal_variance`` is the answer when none of them beats noise. A new hypothesis is a new
module with a ``HYPOTHESIS`` and a line below; the investigation, the timing, change-log and
alignment tests and the product managers' summary read it from here.
"""

from __future__ import annotations

from typing import Final

from cxagent.hypotheses import (
    batching_policy,
    dasher_shortage,
    eta_model_bias,
    inventory_drop,
    normal_variance,
    prep_time_drift,
)
from cxagent.hypotheses.base import Driver, Hypothesis

REGISTRY: Final[dict[str, Hypothesis]] = {
    h.name: h
    for h in (
        batching_policy.HYPOTHESIS,
        prep_time_drift.HYPOTHESIS,
        dasher_shortage.HYPOTHESIS,
        eta_model_bias.HYPOTHESIS,
        inventory_drop.HYPOTHESIS,
    )
}
CAUSES: Final = tuple(REGISTRY)
# the lateness mechanisms, which share the day bootstrap of ``rca.timeline.late_impacts``
MECHANISMS: Final = tuple(name for name, h in REGISTRY.items() if h.outcome == "late")
NORMAL: Final = normal_variance.NAME

__all__ = ["CAUSES", "MECHANISMS", "NORMAL", "REGISTRY", "Driver", "Hypothesis"]
