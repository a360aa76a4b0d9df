"""Thompson sampling over hero images and calls to action, per micro-segment, with propensities.

For every page view the storefront asks which variant to show in each slot (the hero image, the
call to action) to a visitor of a given micro-segment: persona x device x channel. The bandit
answers by Thompson sampling (Thompson 1933; Chapelle & Li 2011, "An empirical evaluation of
Thompson sampling", NeurIPS): it shows each arm with the posterior probability that the arm is
the best. Every decision logs that probability (its *propensity*), so that any other policy can
later be evaluated on the logs (``cxagent.stats.ope``).

Design (each point is documented in docs/storefront-bandit.md as well):

1. Reward: a funnel. An impression may lead to a click, a click to an add-to-cart, an
   add-to-cart to a purchase. Each arm has three conditional rates, each with a Beta posterior:
   ``q1 = P(click | impression)``, ``q2 = P(add-to-cart | click)``,
   ``q3 = P(purchase | add-to-cart)``. The funnel's likelihood factorises into three
   binomials (impressions -> clicks -> carts -> purchases), so with independent Beta priors
   the posteriors are independent Betas: exact conjugate updating, and the sparse purchase
   stage learns from carts rather than from impressions. The objective is the expected value
   per impression ``V = w_click q1 + w_cart q1 q2 + w_purchase q1 q2 q3`` with documented
   weights (``FunnelWeights``, in units of a click's value). The stages are nested: an outcome
   implies the earlier ones (a purchase attributed to a decision also counts as its cart, its
   click and its impression), which also makes out-of-order delivery harmless.
2. Sparse micro-segments borrow strength (empirical Bayes). A segment's prior for each arm is
   the posterior of the rest of its persona, and that one's prior is the posterior of the rest
   of the shop (leave-one-out, so no observation is counted twice), each capped at a prior
   strength of ``m`` impressions' worth of evidence. ``m`` is estimated per level from the
   data by the method of moments: how much more the click rates of segments (personas)
   differ than binomial noise explains (``_pooling_strength``); ``prior_strength`` may fix
   it instead. A new segment therefore starts from what its persona (or the shop) has
   learned, and its own data take over once it has more than ``m`` impressions.
3. Burn-in: the arms are shown uniformly until every arm has ``burn_in`` impressions at some
   level of the segment's back-off chain (the segment, its persona or the shop).
4. A minimum traffic share ``eps`` per arm keeps every arm observable (and every arm
   evaluable off-policy): the served distribution is ``(1 - K eps) pi_TS + eps``, and the
   propensity logged is that mixture probability. ``eps`` is ``min_share`` while the segment
   is young and then decays with the square root of its traffic, down to ``min_share_limit``
   (``BanditConfig.floor``): a fixed floor's regret grows linearly with the traffic, this
   one's as its square root until it meets the limit (at ``100 n0`` impressions with the
   defaults), then linearly at the limit's rate; importance weights stay at most
   ``1 / min_share_limit``.
5. ``pi_TS`` is computed by Monte Carlo (``draws`` vectorised posterior draws) and cached per
   (segment, slot) for one *policy version*; the arm is then drawn from the cached
   distribution. The logged propensity is thus the exact probability of the served arm: the
   Monte Carlo error only makes the served policy differ slightly from ideal Thompson sampling,
   it never makes the log wrong. The policy version advances in batches of recorded outcomes
   (``refresh_*`` settings), which keeps a decision to a dictionary lookup and a uniform draw.
   Chapelle & Li (2011) show Thompson sampling copes well with such delayed, batched updates.
6. State: impression and outcome counts per (level, slot, arm). Outcome events carry the
   decision id; a decision remembers the deepest funnel stage it has reached, so a duplicated
   or redelivered event cannot count twice; event ids are remembered too.
7. ``snapshot`` / ``restore`` round-trip the whole state through plain (JSON-ready) dicts.
8. ``policy_value``: per segment, slot and arm, the posterior mean of ``V`` with a 95%
   interval, the probability of being best and the probability served.

Thread safety: one lock guards decisions and updates. Several worker processes would each hold
their own ``Bandit`` and learn from their share of the traffic only; merging their counts
(through ``snapshot`` and a store) is left to the service.
"""

from __future__ import annotations

import bisect
import math
import threading
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "OUTCOMES",
    "ArmValue",
    "Bandit",
    "BanditConfig",
    "Decision",
    "FunnelWeights",
    "Outcome",
    "RecordStatus",
    "Segment",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

Outcome = Literal["impression", "click", "add_to_cart", "purchase"]
RecordStatus = Literal["counted", "duplicate", "unknown"]
OUTCOMES: Final[tuple[Outcome, ...]] = ("impression", "click", "add_to_cart", "purchase")
_DEPTH: Final[dict[str, int]] = {name: i + 1 for i, name in enumerate(OUTCOMES)}
ANY: Final = "*"
SHOP: Final = f"{ANY}|{ANY}|{ANY}"
SCHEMA: Final = 1
# A prior passed down the back-off chain is never weaker than a uniform Beta(1, 1).
_MIN_PRIOR: Final = 2.0


# --- segments ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """A micro-segment: persona x device x channel.

    ``backoff()`` is the chain of levels whose data the segment borrows from, most specific
    first: the segment itself, its persona (any device, any channel), the whole shop.
    """

    persona: str
    device: str
    channel: str

    def __post_init__(self) -> None:
        for name in ("persona", "device", "channel"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or "|" in value or value == ANY:
                raise ValueError(
                    f"{name} must be a non-empty string without '|' or '*', got {value!r}"
                )

    @property
    def key(self) -> str:
        return f"{self.persona}|{self.device}|{self.channel}"

    def backoff(self) -> tuple[str, str, str]:
        return (self.key, f"{self.persona}|{ANY}|{ANY}", SHOP)

    @classmethod
    def from_key(cls, key: str) -> Segment:
        parts = key.split("|")
        if len(parts) != 3:
            raise ValueError(f"segment key must be 'persona|device|channel', got {key!r}")
        return cls(*parts)


# --- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FunnelWeights:
    """Value of reaching each funnel stage, in units of a click's value.

    Defaults: a click 1, an add-to-cart 5 more, a purchase 25 more: a purchase is worth about
    30 clicks, roughly an order's margin over the value of a visit in a creative-tools shop.
    These are business inputs; set ``add_to_cart = purchase = 0`` to optimise clicks alone.
    """

    click: float = 1.0
    add_to_cart: float = 5.0
    purchase: float = 25.0

    def __post_init__(self) -> None:
        for name in ("click", "add_to_cart", "purchase"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"weights.{name} must be a finite number >= 0, got {value!r}")
        if self.click + self.add_to_cart + self.purchase <= 0.0:
            raise ValueError("weights must not all be 0")


@dataclass(frozen=True)
class BanditConfig:
    """Settings of the bandit; every one has a default that the benchmarks measured.

    - ``weights``: the funnel's value weights (``FunnelWeights``).
    - ``burn_in``: impressions every arm needs at some back-off level before sampling starts.
    - ``min_share``: minimum probability of every arm (``eps``) while its segment is young;
      ``K * eps`` must be < 1.
    - ``floor_decay_after``: impressions per arm (``n0 = K * floor_decay_after`` in the
      segment's slot) after which the minimum share decays as ``eps * sqrt(n0 / n)``, so every
      arm keeps gathering evidence (about ``2 eps sqrt(n0 n)`` impressions after ``n``) at a
      cost that grows as ``sqrt(n)`` instead of ``n``; ``None``: a fixed floor. The default
      equals the burn-in: the full floor lasts as long as the burn-in would on the segment's
      own traffic.
    - ``min_share_limit``: the decayed floor never goes below this, so importance weights of
      off-policy evaluation stay at most ``1 / min_share_limit``.
    - ``prior_strength``: at most how many impressions' worth of evidence a segment borrows
      from its persona, and a persona from the shop. ``None`` (default) estimates it per level
      by empirical Bayes within ``strength_bounds``; 0 switches sharing off (uniform priors).
    - ``draws``: Monte Carlo draws for the probability that each arm is best.
    - ``refresh_min`` / ``refresh_ratio`` / ``refresh_max``: a new policy version starts once
      the counted outcomes since the last one reach ``refresh_ratio`` times all counted so far,
      bounded to ``[refresh_min, refresh_max]``: frequent refreshes while little is known,
      rare ones when another batch barely moves the posterior.
    - ``max_open``: how many recent decisions (and event ids) are remembered for attributing
      and de-duplicating outcomes; it must cover the stream's attribution window.
    - ``seed``: seeds the Monte Carlo draws (per segment, slot and version: reproducible).
    """

    weights: FunnelWeights = field(default_factory=FunnelWeights)
    burn_in: int = 50
    min_share: float = 0.01
    floor_decay_after: int | None = 50
    min_share_limit: float = 0.001
    prior_strength: float | None = None
    strength_bounds: tuple[float, float] = (10.0, 5000.0)
    draws: int = 2000
    refresh_min: int = 50
    refresh_ratio: float = 0.02
    refresh_max: int = 5000
    max_open: int = 500_000
    seed: int = 0

    def __post_init__(self) -> None:
        _whole("burn_in", self.burn_in, 0)
        _whole("draws", self.draws, 100)
        _whole("refresh_min", self.refresh_min, 1)
        _whole("refresh_max", self.refresh_max, self.refresh_min)
        _whole("max_open", self.max_open, 1)
        _whole("seed", self.seed, 0)
        if not (math.isfinite(self.min_share) and 0.0 <= self.min_share < 0.5):
            raise ValueError(f"min_share must be in [0, 0.5), got {self.min_share!r}")
        if self.floor_decay_after is not None:
            _whole("floor_decay_after", self.floor_decay_after, 1)
        if not (math.isfinite(self.min_share_limit) and self.min_share_limit >= 0.0):
            raise ValueError(
                f"min_share_limit must be a finite number >= 0, got {self.min_share_limit!r}"
            )
        if self.prior_strength is not None and not (
            math.isfinite(self.prior_strength) and self.prior_strength >= 0.0
        ):
            raise ValueError(
                f"prior_strength must be None or a finite number >= 0, got {self.prior_strength!r}"
            )
        low, high = self.strength_bounds
        if not (math.isfinite(high) and 0.0 < low <= high):
            raise ValueError(
                f"strength_bounds must be (low, high) with 0 < low <= high, got {self.strength_bounds!r}"
            )
        if not (math.isfinite(self.refresh_ratio) and self.refresh_ratio >= 0.0):
            raise ValueError(
                f"refresh_ratio must be a finite number >= 0, got {self.refresh_ratio!r}"
            )

    def floor(self, impressions: int, arms: int) -> float:
        """The minimum share of each of ``arms`` arms in a segment with ``impressions`` in
        the slot."""
        start = None if self.floor_decay_after is None else arms * self.floor_decay_after
        if start is None or impressions <= start:
            return self.min_share
        decayed = self.min_share * math.sqrt(start / impressions)
        return max(min(self.min_share_limit, self.min_share), decayed)

    @property
    def shares(self) -> bool:
        """True unless ``prior_strength == 0`` switched sharing off."""
        return self.prior_strength is None or self.prior_strength > 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BanditConfig:
        values = dict(data)
        values["weights"] = FunnelWeights(**values.get("weights", {}))
        if "strength_bounds" in values:
            values["strength_bounds"] = tuple(values["strength_bounds"])
        return cls(**values)


def _whole(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")


# --- decisions and views ----------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """One served arm and what the logs need: its propensity and the policy version."""

    decision_id: str
    slot: str
    arm: str
    propensity: float
    segment: Segment
    policy_version: int
    burn_in: bool


@dataclass(frozen=True)
class ArmValue:
    """One row of the analytics view: an arm's value in a segment and slot.

    ``mean`` / ``lower`` / ``upper``: posterior mean and central 95% interval of the value per
    impression ``V`` (in click units; the click rate when only clicks are weighted).
    ``prob_best``: posterior probability that the arm has the highest ``V`` (Thompson's
    ``pi_TS``); ``served``: the probability the current policy version serves it.
    """

    segment: str
    slot: str
    arm: str
    impressions: int
    clicks: int
    add_to_carts: int
    purchases: int
    mean: float
    lower: float
    upper: float
    prob_best: float
    served: float
    burn_in: bool
    policy_version: int


@dataclass
class _Open:
    """A decision still within the attribution window, and the deepest stage it reached."""

    segment: Segment
    slot: str
    arm: int
    depth: int = 0


@dataclass(frozen=True)
class _Policy:
    version: int
    probs: FloatArray  # the served distribution over arms
    cumulative: list[float]
    burn_in: bool


# --- the posterior ----------------------------------------------------------------------------


def _stage_params(counts: IntArray) -> tuple[IntArray, IntArray]:
    """Trials and successes of the three funnel stages, ``(K, 3)`` each.

    ``counts`` columns: impressions, clicks, add-to-carts, purchases (nested counts).
    """
    return counts[:, :3], counts[:, 1:]


def _update(a: FloatArray, b: FloatArray, counts: IntArray) -> tuple[FloatArray, FloatArray]:
    trials, successes = _stage_params(counts)
    return a + successes, b + (trials - successes)


def _cap(a: FloatArray, b: FloatArray, strength: float) -> tuple[FloatArray, FloatArray]:
    """Shrink Beta parameters to at most ``strength`` impressions' worth of evidence.

    A stage's evidence is counted in its own trials, so the cap of stage ``s`` is
    ``strength`` times the expected trials per impression at that stage (1, ``q1``,
    ``q1 q2`` at the posterior means), but never below a uniform prior's 2 pseudo-counts.
    """
    mean = a / (a + b)
    reach = np.ones_like(mean)
    reach[:, 1] = mean[:, 0]
    reach[:, 2] = mean[:, 0] * mean[:, 1]
    cap = np.maximum(strength * reach, _MIN_PRIOR)
    scale = np.minimum(1.0, cap / (a + b))
    return a * scale, b * scale


def _posterior(
    chain: Sequence[IntArray], strengths: tuple[float, float] | None
) -> tuple[FloatArray, FloatArray]:
    """Beta parameters ``(K, 3)`` of a segment's funnel stages, borrowing along the chain.

    ``chain`` holds the counts of the segment, its persona and the shop. The shop's data
    outside the persona form the persona's prior; the persona's data outside the segment
    form the segment's prior (leave-one-out: nothing is counted twice). Each prior is capped
    (``_cap``) to ``strengths = (persona's, segment's)`` impressions; ``None`` = no sharing.
    """
    own, persona, shop = chain
    a = np.ones(own.shape[0:1] + (3,))
    b = np.ones_like(a)
    if strengths is None:
        return _update(a, b, own)
    a, b = _update(a, b, shop - persona)
    a, b = _cap(a, b, strengths[0])
    a, b = _update(a, b, persona - own)
    a, b = _cap(a, b, strengths[1])
    return _update(a, b, own)


def _pooling_strength(children: IntArray, parents: IntArray, bounds: tuple[float, float]) -> float:
    """Empirical Bayes: how many impressions a parent's click rate is worth to its children.

    Model: within a parent, each child's click rate on an arm is drawn from a Beta with the
    parent's mean ``mu`` and variance ``mu (1 - mu) / (m + 1)``; ``m`` is the prior strength
    sought. The moment estimator (as in DerSimonian & Laird's between-group variance) uses,
    per (parent, arm) group of ``C`` children with ``n_c`` impressions and rates ``p_c``,

        Q = sum_c n_c (p_c - mu)^2,   E[Q] = (C - 1) v + tau^2 (N - sum_c n_c^2 / N),

    with ``v = mu (1 - mu)``, ``N = sum_c n_c`` and ``tau^2 = v / (m + 1)``. Pooling the groups,
    ``1 / (m + 1) = sum (Q - (C - 1) v) / sum (N - sum n_c^2 / N) v``. No detectable
    spread gives the upper bound; the estimate is clipped to ``bounds``.
    ``children`` is ``(C, K, 4)`` counts, ``parents`` the parent index of each child.
    """
    low, high = bounds
    n = children[:, :, 0].astype(np.float64)
    y = children[:, :, 1].astype(np.float64)
    groups = int(parents.max()) + 1 if parents.size else 0
    if groups == 0:
        return high
    total_n = np.zeros((groups, n.shape[1]))
    total_y = np.zeros_like(total_n)
    squares = np.zeros_like(total_n)
    seen = np.zeros_like(total_n)
    np.add.at(total_n, parents, n)
    np.add.at(total_y, parents, y)
    np.add.at(squares, parents, n * n)
    np.add.at(seen, parents, (n > 0).astype(np.float64))
    mu = np.divide(total_y, total_n, out=np.zeros_like(total_n), where=total_n > 0)
    rate = np.divide(y, n, out=np.zeros_like(n), where=n > 0)
    q = np.zeros_like(total_n)
    np.add.at(q, parents, n * (rate - mu[parents]) ** 2)
    v = mu * (1.0 - mu)
    valid = (seen >= 2) & (v > 0)
    if not valid.any():
        return high
    spread = np.where(
        valid,
        total_n - np.divide(squares, total_n, out=np.zeros_like(total_n), where=total_n > 0),
        0.0,
    )
    numerator = float(np.sum(np.where(valid, q - (seen - 1.0) * v, 0.0)))
    denominator = float(np.sum(spread * v))
    if denominator <= 0.0 or numerator * (high + 1.0) <= denominator:
        return high
    return float(np.clip(denominator / numerator - 1.0, low, high))


def _values(draws: FloatArray, weights: FunnelWeights) -> FloatArray:
    """Value per impression of posterior draws ``(..., 3)`` of the stage rates."""
    q1, q2, q3 = draws[..., 0], draws[..., 1], draws[..., 2]
    values: FloatArray = q1 * (weights.click + q2 * (weights.add_to_cart + weights.purchase * q3))
    return values


def _sample_values(
    a: FloatArray, b: FloatArray, weights: FunnelWeights, draws: int, rng: np.random.Generator
) -> FloatArray:
    """``(draws, K)`` posterior draws of every arm's value per impression."""
    if weights.add_to_cart == 0.0 and weights.purchase == 0.0:
        clicks: FloatArray = weights.click * rng.beta(a[:, 0], b[:, 0], size=(draws, a.shape[0]))
        return clicks
    return _values(rng.beta(a, b, size=(draws, *a.shape)), weights)


def _prob_best(values: FloatArray) -> FloatArray:
    best = values.argmax(axis=1)
    share: FloatArray = np.bincount(best, minlength=values.shape[1]) / values.shape[0]
    return share


# --- the bandit -------------------------------------------------------------------------------


class Bandit:
    """Thompson sampling per micro-segment and slot, with burn-in, a traffic floor and logs.

    ``arms`` maps each slot (``"hero"``, ``"cta"``) to its arm ids. See the module docstring
    for the design; ``decide`` serves, ``record`` learns, ``policy_value`` reports.
    """

    def __init__(
        self, arms: Mapping[str, Sequence[str]], config: BanditConfig | None = None
    ) -> None:
        self.config = config or BanditConfig()
        self._arms = _check_arms(arms)
        for slot, names in self._arms.items():
            if len(names) * self.config.min_share >= 1.0:
                raise ValueError(
                    f"min_share: {len(names)} arms in slot {slot!r} x {self.config.min_share} "
                    "must be < 1"
                )
        self._index = {
            slot: {arm: i for i, arm in enumerate(names)} for slot, names in self._arms.items()
        }
        self._counts: dict[tuple[str, str], IntArray] = {}
        self._open: OrderedDict[str, _Open] = OrderedDict()
        self._events: OrderedDict[str, None] = OrderedDict()
        self._cache: dict[tuple[str, str], _Policy] = {}
        self._strength_cache: dict[str, tuple[int, tuple[float, float]]] = {}
        self._version = 0
        self._pending = 0
        self._counted = 0
        self._next_id = 0
        self._prefix = uuid.uuid4().hex[:12]
        self._rng = np.random.default_rng(self.config.seed)
        self._lock = threading.Lock()

    # -- public API ----------------------------------------------------------------------------

    @property
    def arms(self) -> dict[str, tuple[str, ...]]:
        return dict(self._arms)

    @property
    def policy_version(self) -> int:
        return self._version

    def decide(
        self, segment: Segment, slot: str, rng: np.random.Generator | None = None
    ) -> Decision:
        """Choose the arm to serve in ``slot`` for a visitor of ``segment``, and log it."""
        generator = rng if rng is not None else self._rng
        with self._lock:
            policy = self._policy(segment, slot)
            u = float(generator.random())
            arm = min(bisect.bisect_right(policy.cumulative, u), len(policy.cumulative) - 1)
            decision_id = f"{self._prefix}-{self._next_id:x}"
            self._next_id += 1
            self._remember_decision(decision_id, _Open(segment, slot, arm))
            return Decision(
                decision_id=decision_id,
                slot=slot,
                arm=self._arms[slot][arm],
                propensity=float(policy.probs[arm]),
                segment=segment,
                policy_version=policy.version,
                burn_in=policy.burn_in,
            )

    def probabilities(self, segment: Segment, slot: str) -> dict[str, float]:
        """The distribution the current policy version serves in ``slot`` for ``segment``."""
        with self._lock:
            policy = self._policy(segment, slot)
            return dict(zip(self._arms[slot], policy.probs.tolist(), strict=True))

    def record(
        self, decision: Decision | str, outcome: Outcome, event_id: str | None = None
    ) -> RecordStatus:
        """Count one outcome of a decision; idempotent.

        Returns ``"counted"``, ``"duplicate"`` (the event id was seen, or the decision already
        reached this funnel stage) or ``"unknown"`` (a decision id outside the attribution
        window; passing the ``Decision`` itself registers it instead).
        """
        depth = _DEPTH.get(outcome)
        if depth is None:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        with self._lock:
            if event_id is not None and event_id in self._events:
                return "duplicate"
            entry = self._entry(decision)
            if entry is None:
                return "unknown"
            if event_id is not None:
                self._remember_event(event_id)
            if depth <= entry.depth:
                return "duplicate"
            self._count(entry, depth)
            return "counted"

    def refresh(self) -> int:
        """Start a new policy version now (the next decisions use all counts so far)."""
        with self._lock:
            self._bump()
            return self._version

    def counts(self, level: str, slot: str) -> dict[str, dict[str, int]]:
        """Counts per arm at a level key (a segment key, ``"persona|*|*"`` or ``"*|*|*"``)."""
        self._check_slot(slot)
        with self._lock:
            table = self._counts.get((level, slot), np.zeros((len(self._arms[slot]), 4), np.int64))
            return {
                arm: dict(
                    zip(
                        ("impressions", "clicks", "add_to_carts", "purchases"),
                        map(int, row),
                        strict=True,
                    )
                )
                for arm, row in zip(self._arms[slot], table, strict=True)
            }

    def policy_value(
        self, segments: Iterable[Segment] | None = None, slots: Iterable[str] | None = None
    ) -> list[ArmValue]:
        """The analytics view: one ``ArmValue`` per segment, slot and arm.

        ``segments`` defaults to every segment that has counts; ``slots`` to every slot.
        """
        with self._lock:
            chosen_slots = list(self._arms) if slots is None else list(slots)
            for slot in chosen_slots:
                self._check_slot(slot)
            if segments is None:
                keys = sorted({key for key, _ in self._counts if ANY not in key})
                segments = [Segment.from_key(key) for key in keys]
            rows: list[ArmValue] = []
            for segment in segments:
                for slot in chosen_slots:
                    rows.extend(self._arm_values(segment, slot))
            return rows

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain, JSON-ready values (``Bandit.restore`` reads it back).

        It holds the counts, the decisions still open (with the funnel stage each reached),
        the event ids seen, and the distributions already served in the current policy
        version, so that a restored bandit serves exactly what the original would have.
        """
        with self._lock:
            return {
                "schema": SCHEMA,
                "arms": {slot: list(names) for slot, names in self._arms.items()},
                "config": self.config.to_dict(),
                "policy_version": self._version,
                "pending": self._pending,
                "counted": self._counted,
                "counts": [
                    {"level": level, "slot": slot, "counts": table.tolist()}
                    for (level, slot), table in self._counts.items()
                ],
                "open": [
                    [decision_id, e.segment.key, e.slot, e.arm, e.depth]
                    for decision_id, e in self._open.items()
                ],
                "events": list(self._events),
                "policies": [
                    [key, slot, policy.probs.tolist(), policy.burn_in]
                    for (key, slot), policy in self._cache.items()
                    if policy.version == self._version
                ],
            }

    @classmethod
    def restore(cls, state: Mapping[str, Any]) -> Bandit:
        """A bandit in the state ``snapshot`` captured (new decision ids stay unique)."""
        if state.get("schema") != SCHEMA:
            raise ValueError(f"state.schema must be {SCHEMA}, got {state.get('schema')!r}")
        bandit = cls(state["arms"], BanditConfig.from_dict(state["config"]))
        bandit._version = int(state["policy_version"])
        bandit._pending = int(state["pending"])
        bandit._counted = int(state["counted"])
        for item in state["counts"]:
            slot = item["slot"]
            bandit._check_slot(slot)
            table = np.asarray(item["counts"], dtype=np.int64)
            if table.shape != (len(bandit._arms[slot]), 4):
                raise ValueError(
                    f"state.counts for {item['level']!r}/{slot!r} has shape {table.shape}"
                )
            bandit._counts[(item["level"], slot)] = table
        for decision_id, key, slot, arm, depth in state["open"]:
            bandit._check_slot(slot)
            bandit._open[decision_id] = _Open(Segment.from_key(key), slot, int(arm), int(depth))
        bandit._events.update(dict.fromkeys(state["events"]))
        for key, slot, probs, burn_in in state["policies"]:
            bandit._check_slot(slot)
            served = np.asarray(probs, dtype=np.float64)
            if served.shape != (len(bandit._arms[slot]),):
                raise ValueError(f"state.policies for {key!r}/{slot!r} has {served.shape[0]} arms")
            bandit._cache[(key, slot)] = _Policy(
                bandit._version, served, np.cumsum(served).tolist(), bool(burn_in)
            )
        return bandit

    # -- internals -----------------------------------------------------------------------------

    def _check_slot(self, slot: str) -> None:
        if slot not in self._arms:
            raise ValueError(f"slot must be one of {sorted(self._arms)}, got {slot!r}")

    def _policy(self, segment: Segment, slot: str) -> _Policy:
        """The cached served distribution, recomputed once per policy version."""
        cache_key = (segment.key, slot)
        policy = self._cache.get(cache_key)
        if policy is None or policy.version != self._version:
            self._check_slot(slot)
            policy = self._compute(segment, slot)
            self._cache[cache_key] = policy
        return policy

    def _chain(self, segment: Segment, slot: str) -> list[IntArray]:
        empty = np.zeros((len(self._arms[slot]), 4), np.int64)
        return [self._counts.get((level, slot), empty) for level in segment.backoff()]

    def _in_burn_in(self, chain: Sequence[IntArray]) -> bool:
        """True until every arm has ``burn_in`` impressions at a level the segment uses."""
        needed = self.config.burn_in
        levels = chain if self.config.shares else chain[:1]
        return not any(int(table[:, 0].min()) >= needed for table in levels)

    def _strengths(self, slot: str) -> tuple[float, float] | None:
        """Prior strengths (persona from shop, segment from persona), once per version."""
        cfg = self.config
        if cfg.prior_strength is not None:
            return (cfg.prior_strength, cfg.prior_strength) if cfg.shares else None
        cached = self._strength_cache.get(slot)
        if cached is not None and cached[0] == self._version:
            return cached[1]
        personas: dict[str, int] = {}
        seg_tables, seg_parents, per_tables = [], [], []
        for (level, table_slot), table in self._counts.items():
            if table_slot != slot or level == SHOP:
                continue
            persona = level.split("|", 1)[0]
            if level.endswith(f"|{ANY}|{ANY}"):
                per_tables.append(table)
            else:
                seg_tables.append(table)
                seg_parents.append(personas.setdefault(persona, len(personas)))
        strengths = (
            _pooling_strength(
                _stack(per_tables), np.zeros(len(per_tables), np.int64), cfg.strength_bounds
            ),
            _pooling_strength(
                _stack(seg_tables), np.asarray(seg_parents, np.int64), cfg.strength_bounds
            ),
        )
        self._strength_cache[slot] = (self._version, strengths)
        return strengths

    def prior_strengths(self, slot: str) -> dict[str, float]:
        """The prior strengths in use (impressions): persona from shop, segment from persona."""
        self._check_slot(slot)
        with self._lock:
            strengths = self._strengths(slot)
        persona, segment = strengths if strengths is not None else (0.0, 0.0)
        return {"persona": persona, "segment": segment}

    def _mc_rng(self, segment: Segment, slot: str) -> np.random.Generator:
        """Monte Carlo generator fixed by (seed, version, segment, slot): reproducible."""
        tag = zlib.crc32(f"{segment.key}/{slot}".encode())
        return np.random.default_rng([self.config.seed, self._version, tag])

    def _compute(self, segment: Segment, slot: str) -> _Policy:
        chain = self._chain(segment, slot)
        k = len(self._arms[slot])
        burn_in = self._in_burn_in(chain)
        if burn_in:
            probs = np.full(k, 1.0 / k)
        else:
            cfg = self.config
            a, b = _posterior(chain, self._strengths(slot))
            values = _sample_values(a, b, cfg.weights, cfg.draws, self._mc_rng(segment, slot))
            eps = cfg.floor(int(chain[0][:, 0].sum()), k)
            probs = (1.0 - k * eps) * _prob_best(values) + eps
        cumulative = np.cumsum(probs).tolist()
        return _Policy(self._version, probs, cumulative, burn_in)

    def _arm_values(self, segment: Segment, slot: str) -> list[ArmValue]:
        cfg = self.config
        chain = self._chain(segment, slot)
        a, b = _posterior(chain, self._strengths(slot))
        values = _sample_values(a, b, cfg.weights, cfg.draws, self._mc_rng(segment, slot))
        mean_rates = a / (a + b)
        means = _values(mean_rates, cfg.weights)  # exact: the stage rates are independent
        lower, upper = np.quantile(values, [0.025, 0.975], axis=0)
        best = _prob_best(values)
        policy = self._policy(segment, slot)
        own = chain[0]
        return [
            ArmValue(
                segment=segment.key,
                slot=slot,
                arm=arm,
                impressions=int(own[i, 0]),
                clicks=int(own[i, 1]),
                add_to_carts=int(own[i, 2]),
                purchases=int(own[i, 3]),
                mean=float(means[i]),
                lower=float(lower[i]),
                upper=float(upper[i]),
                prob_best=float(best[i]),
                served=float(policy.probs[i]),
                burn_in=policy.burn_in,
                policy_version=policy.version,
            )
            for i, arm in enumerate(self._arms[slot])
        ]

    def _entry(self, decision: Decision | str) -> _Open | None:
        if isinstance(decision, str):
            return self._open.get(decision)
        entry = self._open.get(decision.decision_id)
        if entry is None:
            self._check_slot(decision.slot)
            arm = self._index[decision.slot].get(decision.arm)
            if arm is None:
                raise ValueError(
                    f"decision.arm {decision.arm!r} is not an arm of slot {decision.slot!r}"
                )
            entry = _Open(decision.segment, decision.slot, arm)
            self._remember_decision(decision.decision_id, entry)
        return entry

    def _remember_decision(self, decision_id: str, entry: _Open) -> None:
        self._open[decision_id] = entry
        if len(self._open) > self.config.max_open:
            self._open.popitem(last=False)

    def _remember_event(self, event_id: str) -> None:
        self._events[event_id] = None
        if len(self._events) > self.config.max_open:
            self._events.popitem(last=False)

    def _count(self, entry: _Open, depth: int) -> None:
        """Add the funnel stages ``entry.depth + 1 .. depth`` at every back-off level."""
        k = len(self._arms[entry.slot])
        for level in entry.segment.backoff():
            table = self._counts.get((level, entry.slot))
            if table is None:
                table = self._counts[(level, entry.slot)] = np.zeros((k, 4), np.int64)
            table[entry.arm, entry.depth : depth] += 1
        entry.depth = depth
        self._pending += 1
        self._counted += 1
        cfg = self.config
        due = min(max(cfg.refresh_min, cfg.refresh_ratio * self._counted), cfg.refresh_max)
        if self._pending >= due:
            self._bump()

    def _bump(self) -> None:
        self._version += 1
        self._pending = 0


def _stack(tables: list[IntArray]) -> IntArray:
    if not tables:
        return np.zeros((0, 1, 4), np.int64)
    return np.stack(tables)


def _check_arms(arms: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    if not arms:
        raise ValueError("arms must map at least one slot to its arm ids")
    checked: dict[str, tuple[str, ...]] = {}
    for slot, names in arms.items():
        if isinstance(names, str):
            raise ValueError(f"arms[{slot!r}] must be a list of arm ids, not a string")
        ids = tuple(names)
        if len(ids) < 2:
            raise ValueError(f"arms[{slot!r}] must hold at least 2 arms, got {len(ids)}")
        if len(set(ids)) != len(ids):
            raise ValueError(f"arms[{slot!r}] holds duplicate arm ids: {ids}")
        checked[str(slot)] = ids
    return checked
