"""Off-policy evaluation: the value a new policy would have had, read from another policy's logs.

A logging policy (a bandit, a uniform randomiser) chose one action per round and logged the
probability it had of choosing it (its *propensity*). A target policy proposes its own action
probabilities for the same rounds. Importance weighting reweights each logged reward by how
much more (or less) likely the target was to take the logged action, so the logs answer "what
would the average reward have been under the target?" without deploying it.

Inputs, one entry per logged round ``i`` (``n`` rounds, ``K`` actions):

- ``actions[i]`` in ``0..K-1``: the action the logging policy took;
- ``rewards[i]``: the reward it got (a click, or a value-weighted funnel reward);
- ``propensities[i]`` in ``(0, 1]``: the logging policy's probability of ``actions[i]``;
- ``target_probs[i, a]``: the target policy's probability of action ``a`` in round ``i``
  (an ``n x K`` matrix whose rows sum to 1; a context-dependent target fills each row from
  that round's context);
- ``contexts[i]`` (optional): features of the round for the doubly robust reward model.

With the importance weights ``w_i = target_probs[i, actions[i]] / propensities[i]``:

- ``ipw``: inverse propensity weighting (Horvitz & Thompson 1952), the mean of
  ``t_i = w_i r_i``. Unbiased when the logged propensities are right and the logging policy
  gives every action the target uses a positive probability.
- ``snipw``: self-normalised IPW, ``sum w_i r_i / sum w_i`` (Swaminathan & Joachims 2015,
  "The self-normalized estimator for counterfactual learning", NeurIPS). Slightly biased
  (order ``1/n``) but invariant to adding a constant to the rewards, and bounded by the
  rewards' range, so far less variable when weights are large.
- ``doubly_robust``: a reward model ``q(x, a)`` fitted on the logs plus an importance-weighted
  correction of its error (Dudik, Langford & Li 2011, "Doubly robust policy evaluation and
  learning", ICML): ``t_i = sum_a target_probs[i, a] q(x_i, a) + w_i (r_i - q(x_i, a_i))``.
  Unbiased if either the propensities or the reward model are right, and less variable than
  IPW when the model explains part of the reward. The model is cross-fitted: the logs are cut
  into folds and each fold's ``q`` comes from a model fitted on the other folds, so a round's
  own reward never enters its own prediction and the per-round terms stay (nearly) independent
  (Chernozhukov et al. 2018, "Double/debiased machine learning", Econometrics Journal).

Standard errors and intervals. IPW and DR are means of per-round terms ``t_i``; their standard
error is the sample standard deviation of the terms over ``sqrt(n)``:
``se = sqrt( sum (t_i - mean t)^2 / (n (n - 1)) )``. SNIPW is a ratio of two means; the delta
method linearises it into the influence terms ``psi_i = w_i (r_i - V) / mean(w)``, which have
mean zero, so ``se = sqrt( sum psi_i^2 / (n (n - 1)) )``. Each interval is the normal (Wald)
interval ``V +- z_{1 - alpha/2} se``. These are large-sample intervals: with rare rewards (a
click rate of 0.4% over a few thousand rounds gives a few dozen clicks) they are only roughly
right, and with *no* nonzero reward the standard error is zero and the interval degenerate,
which ``nonzero`` on the result makes visible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

__all__ = [
    "ArmMeans",
    "BanditLog",
    "OPEEstimate",
    "PerArmRidge",
    "RewardModel",
    "check_log",
    "doubly_robust",
    "evaluate_policy",
    "ipw",
    "snipw",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
Estimator = Literal["ipw", "snipw", "dr"]

# Rows of target_probs may miss 1 by float rounding (a softmax, a normalised count) only.
_ROW_SUM_ATOL = 1e-6


@dataclass(frozen=True)
class OPEEstimate:
    """One estimate of the target policy's value with its standard error and interval.

    ``ess`` is Kish's effective sample size of the importance weights,
    ``(sum w)^2 / sum w^2``: how many logged rounds the estimate is really worth (``n`` when the
    target equals the logging policy; much less when the target concentrates on actions the
    logger rarely took). ``max_weight`` is the largest weight and ``nonzero`` the number of
    rounds with a nonzero reward; both warn when the normal interval cannot be trusted.
    """

    estimator: Estimator
    value: float
    se: float
    lower: float
    upper: float
    alpha: float
    n: int
    ess: float
    max_weight: float
    nonzero: int

    def covers(self, value: float) -> bool:
        """True when ``value`` lies inside ``[lower, upper]``."""
        return self.lower <= value <= self.upper


@dataclass(frozen=True)
class BanditLog:
    """Validated logged bandit feedback; build it with ``check_log``."""

    actions: IntArray
    rewards: FloatArray
    propensities: FloatArray
    target_probs: FloatArray
    contexts: FloatArray  # (n, d); d = 0 when no contexts were given

    @property
    def n(self) -> int:
        return int(self.actions.shape[0])

    @property
    def n_actions(self) -> int:
        return int(self.target_probs.shape[1])

    @property
    def weights(self) -> FloatArray:
        """Importance weights ``target_probs[i, actions[i]] / propensities[i]``."""
        chosen = self.target_probs[np.arange(self.n), self.actions]
        weights: FloatArray = chosen / self.propensities
        return weights


# --- validation -------------------------------------------------------------------------------


def _vector(name: str, values: ArrayLike) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(
            f"{name} must be one-dimensional (one entry per round), got shape {array.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(f"{name} must be finite: {name}[{bad[0]}] = {array[bad[0]]!r}")
    return array


def _check_actions(actions: ArrayLike, n_actions: int) -> IntArray:
    raw = _vector("actions", actions)
    whole = np.flatnonzero(raw != np.floor(raw))
    if whole.size:
        raise ValueError(f"actions must be whole numbers: actions[{whole[0]}] = {raw[whole[0]]!r}")
    outside = np.flatnonzero((raw < 0) | (raw >= n_actions))
    if outside.size:
        i = outside[0]
        raise ValueError(
            f"actions must index the columns of target_probs (0..{n_actions - 1}): "
            f"actions[{i}] = {int(raw[i])}"
        )
    return raw.astype(np.int64)


def _check_propensities(propensities: ArrayLike) -> FloatArray:
    p = _vector("propensities", propensities)
    bad = np.flatnonzero((p <= 0.0) | (p > 1.0))
    if bad.size:
        i = bad[0]
        raise ValueError(f"propensities must lie in (0, 1]: propensities[{i}] = {p[i]!r}")
    return p


def _check_target(target_probs: ArrayLike, n: int) -> FloatArray:
    probs = np.asarray(target_probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != n or probs.shape[1] < 1:
        raise ValueError(
            f"target_probs must be an n x K matrix with n = {n} rounds, got shape {probs.shape}"
        )
    if not np.all(np.isfinite(probs)):
        row = int(np.flatnonzero(~np.isfinite(probs).all(axis=1))[0])
        raise ValueError(f"target_probs must be finite: row {row} holds NaN or inf")
    if np.any(probs < 0.0):
        row = int(np.flatnonzero((probs < 0.0).any(axis=1))[0])
        raise ValueError(f"target_probs must be >= 0: row {row} holds a negative probability")
    sums = probs.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1.0) > _ROW_SUM_ATOL)
    if off.size:
        row = int(off[0])
        raise ValueError(f"target_probs rows must sum to 1: row {row} sums to {sums[row]!r}")
    return probs


def _check_contexts(contexts: ArrayLike | None, n: int) -> FloatArray:
    if contexts is None:
        return np.zeros((n, 0))
    x = np.asarray(contexts, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] != n:
        raise ValueError(f"contexts must have n = {n} rows (one per round), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise ValueError(f"contexts must be finite: row {row} holds NaN or inf")
    return x


def check_log(
    actions: ArrayLike,
    rewards: ArrayLike,
    propensities: ArrayLike,
    target_probs: ArrayLike,
    contexts: ArrayLike | None = None,
) -> BanditLog:
    """Validate logged feedback; every error names the argument (and the first bad round)."""
    r = _vector("rewards", rewards)
    n = r.shape[0]
    if n < 2:
        raise ValueError(f"rewards must hold at least 2 rounds, got {n}")
    probs = _check_target(target_probs, n)
    a = _check_actions(actions, probs.shape[1])
    if a.shape[0] != n:
        raise ValueError(f"actions must have one entry per round: {a.shape[0]} != {n} rewards")
    p = _check_propensities(propensities)
    if p.shape[0] != n:
        raise ValueError(f"propensities must have one entry per round: {p.shape[0]} != {n} rewards")
    return BanditLog(a, r, p, probs, _check_contexts(contexts, n))


def _check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not 0.0 < a < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return a


# --- estimators -------------------------------------------------------------------------------


def _estimate(
    name: Estimator, value: float, se: float, log: BanditLog, weights: FloatArray, alpha: float
) -> OPEEstimate:
    z = float(special.ndtri(1.0 - alpha / 2.0))
    total = float(weights.sum())
    squares = float(np.square(weights).sum())
    return OPEEstimate(
        estimator=name,
        value=value,
        se=se,
        lower=value - z * se,
        upper=value + z * se,
        alpha=alpha,
        n=log.n,
        ess=total * total / squares if squares > 0.0 else 0.0,
        max_weight=float(weights.max()),
        nonzero=int(np.count_nonzero(log.rewards)),
    )


def _mean_and_se(terms: FloatArray) -> tuple[float, float]:
    """Mean of i.i.d. per-round terms and its standard error ``sd(terms) / sqrt(n)``."""
    n = terms.shape[0]
    return float(terms.mean()), float(terms.std(ddof=1) / math.sqrt(n))


def _ipw(log: BanditLog, alpha: float) -> OPEEstimate:
    w = log.weights
    value, se = _mean_and_se(w * log.rewards)
    return _estimate("ipw", value, se, log, w, alpha)


def _snipw(log: BanditLog, alpha: float) -> OPEEstimate:
    w = log.weights
    mean_w = float(w.mean())
    if mean_w <= 0.0:
        raise ValueError(
            "target_probs gives probability 0 to every logged action: self-normalised IPW is "
            "undefined (the logs carry no information about this target)"
        )
    value = float((w * log.rewards).sum() / w.sum())
    influence = w * (log.rewards - value) / mean_w
    n = log.n
    se = math.sqrt(float(np.square(influence).sum()) / (n * (n - 1)))
    return _estimate("snipw", value, se, log, w, alpha)


def ipw(
    actions: ArrayLike,
    rewards: ArrayLike,
    propensities: ArrayLike,
    target_probs: ArrayLike,
    *,
    alpha: float = 0.05,
) -> OPEEstimate:
    """Inverse propensity weighted value of the target policy (see the module docstring)."""
    return _ipw(check_log(actions, rewards, propensities, target_probs), _check_alpha(alpha))


def snipw(
    actions: ArrayLike,
    rewards: ArrayLike,
    propensities: ArrayLike,
    target_probs: ArrayLike,
    *,
    alpha: float = 0.05,
) -> OPEEstimate:
    """Self-normalised IPW value with its delta-method interval (Swaminathan & Joachims 2015)."""
    return _snipw(check_log(actions, rewards, propensities, target_probs), _check_alpha(alpha))


# --- reward models ----------------------------------------------------------------------------


class RewardModel(Protocol):
    """A model of the expected reward of each action given the round's context.

    ``fit`` learns from logged rounds (contexts ``(m, d)``, possibly ``d = 0``); ``predict``
    returns an ``(m, K)`` matrix of expected rewards for every action in every given round.
    The doubly robust estimator fits a fresh copy per cross-fitting fold via ``fit``, which
    must therefore return a fitted model without relying on earlier fits.
    """

    def fit(
        self, contexts: FloatArray, actions: IntArray, rewards: FloatArray, n_actions: int
    ) -> RewardModel: ...

    def predict(self, contexts: FloatArray) -> FloatArray: ...


def _shrunk_arm_means(
    actions: IntArray, rewards: FloatArray, n_actions: int, prior_weight: float
) -> FloatArray:
    """Per-action mean reward, shrunk towards the overall mean by ``prior_weight`` rounds.

    Shrinkage keeps an action seen a handful of times (or never) from getting a wild mean;
    it costs the doubly robust estimator no bias, only a little of its variance reduction.
    """
    counts = np.bincount(actions, minlength=n_actions).astype(np.float64)
    sums = np.bincount(actions, weights=rewards, minlength=n_actions)
    overall = float(rewards.mean())
    means: FloatArray = (sums + prior_weight * overall) / (counts + prior_weight)
    return means


@dataclass
class ArmMeans:
    """Reward model ``q(x, a) = mean reward of action a`` (context ignored), shrunk a little."""

    prior_weight: float = 1.0
    means: FloatArray | None = None

    def fit(
        self, contexts: FloatArray, actions: IntArray, rewards: FloatArray, n_actions: int
    ) -> ArmMeans:
        means = _shrunk_arm_means(actions, rewards, n_actions, self.prior_weight)
        return ArmMeans(prior_weight=self.prior_weight, means=means)

    def predict(self, contexts: FloatArray) -> FloatArray:
        if self.means is None:
            raise RuntimeError("ArmMeans.predict called before fit")
        return np.tile(self.means, (contexts.shape[0], 1))


@dataclass
class PerArmRidge:
    """Reward model: one ridge regression of the reward on the context per action.

    ``q(x, a) = m_a + (x - xbar_a) . beta_a`` with ``m_a`` the action's shrunk mean reward,
    ``xbar_a`` its mean context and ``beta_a = (Xc'Xc + ridge I)^-1 Xc'(y - m_a)`` on its
    centred contexts. For 0/1 rewards it is a linear probability model: good enough for a
    doubly robust correction, whose validity does not rest on the model being right.
    """

    ridge: float = 1.0
    prior_weight: float = 1.0
    intercepts: FloatArray | None = None
    centres: FloatArray | None = None  # (K, d)
    coefs: FloatArray | None = None  # (K, d)

    def fit(
        self, contexts: FloatArray, actions: IntArray, rewards: FloatArray, n_actions: int
    ) -> PerArmRidge:
        d = contexts.shape[1]
        intercepts = _shrunk_arm_means(actions, rewards, n_actions, self.prior_weight)
        centres = np.zeros((n_actions, d))
        coefs = np.zeros((n_actions, d))
        for a in range(n_actions):
            rows = actions == a
            if d == 0 or not rows.any():
                continue
            x = contexts[rows]
            centres[a] = x.mean(axis=0)
            xc = x - centres[a]
            gram = xc.T @ xc + self.ridge * np.eye(d)
            coefs[a] = np.linalg.solve(gram, xc.T @ (rewards[rows] - intercepts[a]))
        return PerArmRidge(self.ridge, self.prior_weight, intercepts, centres, coefs)

    def predict(self, contexts: FloatArray) -> FloatArray:
        if self.intercepts is None or self.centres is None or self.coefs is None:
            raise RuntimeError("PerArmRidge.predict called before fit")
        # q[i, a] = m_a + x_i . beta_a - xbar_a . beta_a
        offsets = self.intercepts - np.einsum("kd,kd->k", self.centres, self.coefs)
        predictions: FloatArray = contexts @ self.coefs.T + offsets
        return predictions


def _resolve_model(reward_model: RewardModel | Literal["arm_means", "ridge"]) -> RewardModel:
    if reward_model == "arm_means":
        return ArmMeans()
    if reward_model == "ridge":
        return PerArmRidge()
    if isinstance(reward_model, str):
        raise ValueError(
            f"reward_model must be 'arm_means', 'ridge' or a RewardModel, got {reward_model!r}"
        )
    return reward_model


def _cross_fitted_predictions(
    log: BanditLog, model: RewardModel, n_folds: int, seed: int
) -> FloatArray:
    """Out-of-fold ``(n, K)`` reward predictions; in-sample when ``n_folds == 1``."""
    if n_folds == 1:
        fitted = model.fit(log.contexts, log.actions, log.rewards, log.n_actions)
        return fitted.predict(log.contexts)
    folds = np.random.default_rng(seed).permutation(log.n) % n_folds
    predictions = np.empty((log.n, log.n_actions))
    for k in range(n_folds):
        held = folds == k
        train = ~held
        fitted = model.fit(
            log.contexts[train], log.actions[train], log.rewards[train], log.n_actions
        )
        predictions[held] = fitted.predict(log.contexts[held])
    return predictions


def _doubly_robust(
    log: BanditLog, model: RewardModel, n_folds: int, seed: int, alpha: float
) -> OPEEstimate:
    q = _cross_fitted_predictions(log, model, n_folds, seed)
    w = log.weights
    direct = np.einsum("ik,ik->i", log.target_probs, q)
    logged_q = q[np.arange(log.n), log.actions]
    value, se = _mean_and_se(direct + w * (log.rewards - logged_q))
    return _estimate("dr", value, se, log, w, alpha)


def _check_folds(n_folds: int, n: int) -> int:
    k = int(n_folds)
    if k != n_folds or not 1 <= k <= n // 2:
        raise ValueError(
            f"n_folds must be a whole number in 1..{n // 2} (n = {n}), got {n_folds!r}"
        )
    return k


def doubly_robust(
    actions: ArrayLike,
    rewards: ArrayLike,
    propensities: ArrayLike,
    target_probs: ArrayLike,
    contexts: ArrayLike | None = None,
    *,
    reward_model: RewardModel | Literal["arm_means", "ridge"] = "arm_means",
    n_folds: int = 5,
    seed: int = 0,
    alpha: float = 0.05,
) -> OPEEstimate:
    """Cross-fitted doubly robust value of the target policy (Dudik, Langford & Li 2011).

    ``reward_model``: ``"arm_means"`` (per-action mean, context ignored), ``"ridge"`` (a ridge
    regression on ``contexts`` per action) or any ``RewardModel``. ``n_folds`` folds are cut at
    random with ``seed``; ``n_folds=1`` fits and predicts in-sample (no cross-fitting).
    """
    log = check_log(actions, rewards, propensities, target_probs, contexts)
    a = _check_alpha(alpha)
    folds = _check_folds(n_folds, log.n)
    return _doubly_robust(log, _resolve_model(reward_model), folds, seed, a)


def evaluate_policy(
    actions: ArrayLike,
    rewards: ArrayLike,
    propensities: ArrayLike,
    target_probs: ArrayLike,
    contexts: ArrayLike | None = None,
    *,
    reward_model: RewardModel | Literal["arm_means", "ridge"] = "arm_means",
    n_folds: int = 5,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[Estimator, OPEEstimate]:
    """IPW, SNIPW and DR estimates of one target policy from one validated log."""
    log = check_log(actions, rewards, propensities, target_probs, contexts)
    a = _check_alpha(alpha)
    folds = _check_folds(n_folds, log.n)
    return {
        "ipw": _ipw(log, a),
        "snipw": _snipw(log, a),
        "dr": _doubly_robust(log, _resolve_model(reward_model), folds, seed, a),
    }
