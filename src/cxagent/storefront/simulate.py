"""Simulated storefront bandit environments whose truth is known.

A storefront's real click, add-to-cart and purchase rates per variant are never known, so the
bandit's regret and the off-policy estimators' bias and coverage are checked here, on
environments drawn from a model shaped like the shop's traffic:

- micro-segments persona x device x channel, with skewed traffic (a few large segments, many
  sparse ones), and ``K`` arms (hero images or calls to action);
- per segment and arm, three conditional funnel rates ``P(click | impression)``,
  ``P(add-to-cart | click)`` and ``P(purchase | add-to-cart)``, each a logistic function of
  an arm effect shared by the whole shop, a persona x arm effect (personas prefer different
  variants: what hierarchical sharing should exploit), a small segment x arm effect and device
  and channel main effects (which move every arm alike).

``log_policy`` draws logged bandit feedback from any stochastic policy (an ``(S, K)`` matrix of
action probabilities per segment) with its exact propensities; ``Environment.policy_value`` is
the true value of any such policy, the quantity off-policy estimators try to recover.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import special

from cxagent.storefront.bandit import FunnelWeights, Segment

__all__ = [
    "CLICKS",
    "Environment",
    "Logs",
    "epsilon_greedy_policy",
    "log_policy",
    "make_environment",
    "rewards_of",
    "softmax_policy",
    "uniform_policy",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

CLICKS = FunnelWeights(click=1.0, add_to_cart=0.0, purchase=0.0)
"""Weights that make the reward a plain click (a Bernoulli bandit)."""


def rewards_of(depths: IntArray, weights: FunnelWeights) -> FloatArray:
    """Value of each decision from its deepest funnel stage (1 = impression ... 4 = purchase)."""
    value: FloatArray = (
        weights.click * (depths >= 2)
        + weights.add_to_cart * (depths >= 3)
        + weights.purchase * (depths >= 4)
    )
    return value


@dataclass(frozen=True)
class Environment:
    """Segments, arms, traffic shares and the true conditional funnel rates ``(S, K, 3)``."""

    segments: tuple[Segment, ...]
    arms: tuple[str, ...]
    traffic: FloatArray
    rates: FloatArray

    @property
    def n_segments(self) -> int:
        return len(self.segments)

    @property
    def n_arms(self) -> int:
        return len(self.arms)

    def values(self, weights: FunnelWeights) -> FloatArray:
        """True expected value per impression ``(S, K)``."""
        q1, q2, q3 = self.rates[..., 0], self.rates[..., 1], self.rates[..., 2]
        value: FloatArray = q1 * (
            weights.click + q2 * (weights.add_to_cart + weights.purchase * q3)
        )
        return value

    def policy_value(self, probs: FloatArray, weights: FunnelWeights) -> float:
        """True value of a policy serving ``probs[s, a]`` in segment ``s``, over the traffic."""
        return float(self.traffic @ (probs * self.values(weights)).sum(axis=1))

    def sample_segments(self, rng: np.random.Generator, n: int) -> IntArray:
        segments: IntArray = rng.choice(self.n_segments, size=n, p=self.traffic)
        return segments

    def depths(self, uniforms: FloatArray, segments: IntArray, arms: IntArray) -> IntArray:
        """Deepest funnel stage reached (1..4) from ``(n, 3)`` uniforms: common random numbers.

        Feeding two algorithms the same uniforms makes their regret differ only by their
        choices, not by the luck of the outcomes.
        """
        rates = self.rates[segments, arms]  # (n, 3)
        passed = np.cumprod(uniforms < rates, axis=1)
        depth: IntArray = 1 + passed.sum(axis=1)
        return depth

    def pull(self, rng: np.random.Generator, segments: IntArray, arms: IntArray) -> IntArray:
        return self.depths(rng.random((len(segments), 3)), segments, arms)

    def contexts(self, segments: IntArray) -> FloatArray:
        """One-hot persona, device and channel features of each round's segment."""
        fields = [
            sorted({getattr(s, name) for s in self.segments})
            for name in ("persona", "device", "channel")
        ]
        table = np.zeros((self.n_segments, sum(len(f) for f in fields)))
        for i, segment in enumerate(self.segments):
            offset = 0
            for name, values in zip(("persona", "device", "channel"), fields, strict=True):
                table[i, offset + values.index(getattr(segment, name))] = 1.0
                offset += len(values)
        features: FloatArray = table[segments]
        return features


def make_environment(
    seed: int = 0,
    *,
    personas: int = 4,
    devices: int = 3,
    channels: int = 3,
    n_arms: int = 4,
    base_rates: tuple[float, float, float] = (0.04, 0.25, 0.4),
    arm_spread: float = 0.2,
    persona_spread: float = 0.3,
    segment_spread: float = 0.1,
    main_spread: float = 0.2,
    traffic_skew: float = 1.0,
) -> Environment:
    """Draw an environment (see the module docstring); spreads are on the logit scale.

    ``traffic_skew`` is the standard deviation of the log traffic shares: 0 gives every
    segment the same traffic, 1 makes the largest segment several times the median.
    """
    rng = np.random.default_rng(seed)
    cells = list(itertools.product(range(personas), range(devices), range(channels)))
    segments = tuple(Segment(f"persona{p}", f"device{d}", f"channel{c}") for p, d, c in cells)
    p_idx, d_idx, c_idx = (np.array(col) for col in zip(*cells, strict=True))
    base = special.logit(np.asarray(base_rates))  # (3,)
    arm = rng.normal(0.0, arm_spread, (n_arms, 3))
    persona = rng.normal(0.0, persona_spread, (personas, n_arms, 3))
    device = rng.normal(0.0, main_spread, (devices, 1, 3))
    channel = rng.normal(0.0, main_spread, (channels, 1, 3))
    own = rng.normal(0.0, segment_spread, (len(cells), n_arms, 3))
    logits = base + arm + persona[p_idx] + device[d_idx] + channel[c_idx] + own
    shares = np.exp(rng.normal(0.0, traffic_skew, len(cells)))
    return Environment(
        segments=segments,
        arms=tuple(f"arm{k}" for k in range(n_arms)),
        traffic=shares / shares.sum(),
        rates=special.expit(logits),
    )


# --- policies ---------------------------------------------------------------------------------


def uniform_policy(env: Environment) -> FloatArray:
    return np.full((env.n_segments, env.n_arms), 1.0 / env.n_arms)


def epsilon_greedy_policy(
    env: Environment,
    weights: FunnelWeights,
    epsilon: float,
    *,
    noise: float = 0.0,
    rng: np.random.Generator | None = None,
) -> FloatArray:
    """Greedy on the true values (blurred by relative ``noise``), uniform with prob ``epsilon``.

    ``noise`` mimics a logging policy that was greedy on imperfect estimates.
    """
    values = env.values(weights)
    if noise > 0.0:
        generator = rng if rng is not None else np.random.default_rng(0)
        values = values * np.exp(generator.normal(0.0, noise, values.shape))
    probs = np.full(values.shape, epsilon / env.n_arms)
    probs[np.arange(env.n_segments), values.argmax(axis=1)] += 1.0 - epsilon
    return probs


def softmax_policy(env: Environment, weights: FunnelWeights, temperature: float) -> FloatArray:
    """Serve arms in proportion to ``exp(value / (temperature * mean value))`` per segment."""
    values = env.values(weights)
    scaled = values / (temperature * values.mean(axis=1, keepdims=True))
    probs: FloatArray = special.softmax(scaled, axis=1)
    return probs


# --- logs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Logs:
    """Logged bandit feedback: one row per round, with the logging policy's propensities."""

    segments: IntArray
    actions: IntArray
    depths: IntArray
    rewards: FloatArray
    propensities: FloatArray
    contexts: FloatArray

    @property
    def n(self) -> int:
        return int(self.actions.shape[0])


def log_policy(
    env: Environment,
    probs: FloatArray,
    n: int,
    rng: np.random.Generator,
    weights: FunnelWeights,
) -> Logs:
    """``n`` rounds of a logging policy serving ``probs[s, a]``: segments, arms, outcomes."""
    segments = env.sample_segments(rng, n)
    cumulative = np.cumsum(probs[segments], axis=1)
    u = rng.random(n)[:, None]
    actions = np.minimum((u >= cumulative).sum(axis=1), env.n_arms - 1).astype(np.int64)
    depths = env.pull(rng, segments, actions)
    return Logs(
        segments=segments,
        actions=actions,
        depths=depths,
        rewards=rewards_of(depths, weights),
        propensities=probs[segments, actions],
        contexts=env.contexts(segments),
    )
