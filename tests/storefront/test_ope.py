"""Off-policy evaluation: unbiasedness and coverage with known truth, validation, real logs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxagent.stats.ope import (
    OPEEstimate,
    check_log,
    doubly_robust,
    evaluate_policy,
    ipw,
    snipw,
)
from cxagent.storefront.bandit import FunnelWeights
from cxagent.storefront.simulate import (
    CLICKS,
    epsilon_greedy_policy,
    log_policy,
    make_environment,
    softmax_policy,
    uniform_policy,
)

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
VALUE = FunnelWeights(1.0, 5.0, 25.0)


def repeated(
    logging: np.ndarray,
    target: np.ndarray,
    weights: FunnelWeights,
    *,
    seeds: int,
    n: int,
    reward_model: str = "ridge",
) -> dict[str, list[OPEEstimate]]:
    env = make_environment(3, personas=2, devices=2, channels=2, n_arms=3)
    out: dict[str, list[OPEEstimate]] = {"ipw": [], "snipw": [], "dr": []}
    for seed in range(seeds):
        logs = log_policy(env, logging, n, np.random.default_rng(seed), weights)
        found = evaluate_policy(
            logs.actions,
            logs.rewards,
            logs.propensities,
            target[logs.segments],
            logs.contexts,
            reward_model=reward_model,  # type: ignore[arg-type]
            n_folds=2,
            seed=seed,
        )
        for name, estimate in found.items():
            out[name].append(estimate)
    return out


@pytest.mark.parametrize("weights", [CLICKS, VALUE], ids=["clicks", "funnel"])
def test_estimators_are_unbiased_and_cover_on_a_simulated_storefront(
    weights: FunnelWeights,
) -> None:
    env = make_environment(3, personas=2, devices=2, channels=2, n_arms=3)
    logging = epsilon_greedy_policy(env, weights, 0.5, noise=0.5, rng=np.random.default_rng(1))
    target = softmax_policy(env, weights, temperature=0.1)
    truth = env.policy_value(target, weights)
    assert abs(truth - env.policy_value(logging, weights)) > 0.02 * truth  # a different policy
    seeds = 150
    results = repeated(logging, target, weights, seeds=seeds, n=4000)
    for name, estimates in results.items():
        values = np.array([e.value for e in estimates])
        se_of_mean = values.std(ddof=1) / np.sqrt(seeds)
        assert abs(values.mean() - truth) < 3.5 * se_of_mean, name
        assert abs(values.mean() - truth) < 0.03 * truth, name
        coverage = np.mean([e.covers(truth) for e in estimates])
        assert 0.88 <= coverage <= 0.995, (name, coverage)
        # the standard error describes the spread over repetitions
        assert 0.8 < np.mean([e.se for e in estimates]) / values.std(ddof=1) < 1.25, name


def test_doubly_robust_stays_unbiased_with_a_wrong_reward_model() -> None:
    class Constant:
        def fit(self, contexts, actions, rewards, n_actions):  # type: ignore[no-untyped-def]
            self.k = n_actions
            return self

        def predict(self, contexts):  # type: ignore[no-untyped-def]
            return np.full((contexts.shape[0], self.k), 0.2)  # click rates are 4-9%

    env = make_environment(4, personas=2, devices=1, channels=1, n_arms=4)
    logging = uniform_policy(env)
    target = epsilon_greedy_policy(env, CLICKS, 0.2)
    truth = env.policy_value(target, CLICKS)
    values, covered = [], []
    for seed in range(300):
        logs = log_policy(env, logging, 3000, np.random.default_rng(seed), CLICKS)
        est = doubly_robust(
            logs.actions,
            logs.rewards,
            logs.propensities,
            target[logs.segments],
            reward_model=Constant(),
            n_folds=1,
        )
        values.append(est.value)
        covered.append(est.covers(truth))
    assert abs(np.mean(values) - truth) < 3.5 * np.std(values, ddof=1) / np.sqrt(300)
    assert np.mean(covered) > 0.9


def test_on_policy_weights_reduce_ipw_to_the_sample_mean() -> None:
    rng = np.random.default_rng(0)
    n, k = 500, 4
    actions = rng.integers(0, k, n)
    rewards = rng.random(n)
    probs = np.full((n, k), 1 / k)
    for est in (
        ipw(actions, rewards, probs[:, 0], probs),
        snipw(actions, rewards, 0.25 + 0 * rewards, probs),
    ):
        assert est.value == pytest.approx(rewards.mean())
        assert est.se == pytest.approx(rewards.std(ddof=1) / np.sqrt(n))
        assert est.ess == pytest.approx(n)
        assert est.lower < est.value < est.upper


def test_snipw_is_invariant_to_shifting_the_rewards() -> None:
    rng = np.random.default_rng(1)
    n, k = 2000, 3
    actions = rng.integers(0, k, n)
    rewards = (rng.random(n) < 0.1).astype(float)
    target = np.tile([0.7, 0.2, 0.1], (n, 1))
    base = snipw(actions, rewards, np.full(n, 1 / k), target)
    shifted = snipw(actions, rewards + 10.0, np.full(n, 1 / k), target)
    assert shifted.value == pytest.approx(base.value + 10.0)
    assert shifted.se == pytest.approx(base.se)


@pytest.mark.parametrize(
    ("field", "bad", "message"),
    [
        ("propensities", [0.5, 0.0, 0.5], "propensities"),
        ("propensities", [0.5, 1.5, 0.5], r"propensities\[1\]"),
        ("propensities", [0.5, np.nan, 0.5], "propensities must be finite"),
        ("rewards", [1.0, np.nan, 0.0], "rewards must be finite"),
        ("actions", [0, 2, 1], "actions"),
        ("actions", [0, 0.5, 1], "actions must be whole"),
        ("actions", [0, 1], "actions must have one entry per round"),
        ("target_probs", [[0.5, 0.5], [0.5, 0.5]], "target_probs must be an n x K"),
        ("target_probs", [[0.5, 0.5], [0.9, 0.3], [1.0, 0.0]], "rows must sum to 1: row 1"),
        ("target_probs", [[0.5, 0.5], [1.5, -0.5], [1.0, 0.0]], "target_probs must be >= 0"),
        ("target_probs", [[0.5, 0.5], [np.nan, 0.5], [1.0, 0.0]], "target_probs must be finite"),
        ("contexts", [[1.0], [2.0]], "contexts must have n = 3 rows"),
        ("contexts", [[1.0], [np.inf], [0.0]], "contexts must be finite"),
    ],
)
def test_input_errors_name_the_argument(field: str, bad: object, message: str) -> None:
    args: dict[str, object] = {
        "actions": [0, 1, 1],
        "rewards": [1.0, 0.0, 0.0],
        "propensities": [0.5, 0.5, 0.5],
        "target_probs": [[0.5, 0.5], [0.5, 0.5], [1.0, 0.0]],
        "contexts": [[0.0], [1.0], [0.0]],
    }
    args[field] = bad
    with pytest.raises(ValueError, match=message):
        check_log(**args)  # type: ignore[arg-type]


def test_option_errors_name_the_option() -> None:
    a, r, p, t = [0, 1, 0, 1], [1.0, 0.0, 0.0, 1.0], [0.5] * 4, [[0.5, 0.5]] * 4
    with pytest.raises(ValueError, match="alpha"):
        ipw(a, r, p, t, alpha=1.5)
    with pytest.raises(ValueError, match="n_folds"):
        doubly_robust(a, r, p, t, n_folds=3)
    with pytest.raises(ValueError, match="reward_model"):
        doubly_robust(a, r, p, t, reward_model="forest", n_folds=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target_probs gives probability 0"):
        snipw(a, r, p, [[0.0, 1.0], [1.0, 0.0]] * 2)


# --- the Open Bandit Dataset sample (Saito et al. 2021) ----------------------------------------


def obd(policy: str, campaign: str) -> pd.DataFrame:
    path = SHARED_DATA / "obd" / policy / campaign / f"{campaign}.csv.gz"
    columns = ["item_id", "position", "click", "propensity_score"]
    return pd.read_csv(path, usecols=columns)


@pytest.mark.shared_data
def test_bts_policy_value_from_the_random_logs_of_the_open_bandit_dataset() -> None:
    root = SHARED_DATA / "obd"
    if not (root / "random" / "all").is_dir() or not (root / "bts" / "all").is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared data missing at {root} (required when CI=true)")
        pytest.skip(f"shared data not present at {root}")
    random, bts = obd("random", "all"), obd("bts", "all")
    assert len(random) == len(bts) == 10_000
    n_items = int(max(random.item_id.max(), bts.item_id.max())) + 1
    assert np.allclose(random.propensity_score, 1 / n_items)  # uniform over 80 items
    # the target: the bts policy's action distribution per position, as it ran that week
    # (the share of its rounds that showed each item at each position)
    shown = np.zeros((3, n_items))
    np.add.at(shown, (bts.position - 1, bts.item_id), 1.0)
    target = (shown / shown.sum(axis=1, keepdims=True))[random.position - 1]
    found = evaluate_policy(
        random.item_id,
        random.click,
        random.propensity_score,
        target,
        np.eye(3)[random.position - 1],
    )
    on_policy = bts.click.mean()  # 0.0042 on this sample
    for estimate in found.values():
        assert 0.003 < estimate.value < 0.007  # published IPW on this sample: about 0.0046
        assert estimate.covers(on_policy)
        assert estimate.value > random.click.mean()  # bts beats random, about 1.2-1.3x
