"""Benchmark: off-policy estimators against known truth (simulated) and on the Open Bandit Dataset.

    python benchmarks/ope.py [--reps 500] [--rounds 5000] [--obd ../shared/data/obd]

1. Simulated storefronts (``cxagent.storefront.simulate``: 36 segments, 4 arms, known funnel
   rates). Logs of ``--rounds`` rounds come from a uniform or an epsilon-greedy logging
   policy; the target is a different policy (a sharp softmax on the true values, or a greedy
   policy with 10% exploration) whose true value is known exactly. Over ``--reps`` independent
   logs: bias, RMSE, the mean standard error against the actual spread, and the coverage of the
   95% intervals of IPW, SNIPW and DR (per-arm means, and a per-arm ridge on the segment's
   one-hot features), for a click reward and for the value-weighted funnel reward.
2. The Open Bandit Dataset sample (Saito, Aihara, Matsutani & Narita 2021, "Open Bandit
   Dataset and Pipeline", NeurIPS Datasets and Benchmarks): for each campaign, the value (click
   rate per impression) of the Bernoulli Thompson sampling ("bts") policy estimated from the
   uniformly random policy's logs, against the bts logs' own on-policy click rate.

   The target's action probabilities. The bts policy ranked items by Beta posterior draws and
   changed during the week (its logged propensity of one item at one position ranges over two
   orders of magnitude), and its full distribution is not logged, only the probability of the
   item it showed. The obp package rebuilds a static distribution from the production Beta
   parameters by Monte Carlo; those parameters are not in this sample. Here the target is the
   distribution the bts policy actually served: ``pi(item | position)`` = the share of the bts
   rounds at that position that showed the item (the week's average policy; its expectation is
   the time average of the bts policy's probabilities, so its value is what the bts logs'
   on-policy click rate measures if click rates are stable over the week). Its sampling noise
   is independent of the random logs; the IPW variance it adds (multinomial, per position) is
   reported as ``se_with_target_noise``. A sensitivity variant rebuilds the distribution per
   day and evaluates each random round with its own day's distribution.

Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from cxagent.stats.ope import OPEEstimate, evaluate_policy, ipw
from cxagent.storefront.bandit import FunnelWeights
from cxagent.storefront.simulate import (
    CLICKS,
    Environment,
    epsilon_greedy_policy,
    log_policy,
    make_environment,
    softmax_policy,
    uniform_policy,
)

OBD = Path(__file__).resolve().parents[2] / "shared" / "data" / "obd"
VALUE = FunnelWeights()
POSITIONS = 3


# --- 1. simulated storefronts -----------------------------------------------------------------


def cases(env: Environment) -> dict[str, tuple[np.ndarray, np.ndarray, FunnelWeights]]:
    """Named (logging, target, weights) triples."""
    rng = np.random.default_rng(7)
    out = {}
    for reward, weights in (("clicks", CLICKS), ("funnel", VALUE)):
        eps_greedy = epsilon_greedy_policy(env, weights, 0.3, noise=0.5, rng=rng)
        out[f"{reward}/uniform->softmax"] = (
            uniform_policy(env),
            softmax_policy(env, weights, 0.1),
            weights,
        )
        out[f"{reward}/eps_greedy->greedy"] = (
            eps_greedy,
            epsilon_greedy_policy(env, weights, 0.1),
            weights,
        )
    return out


def simulate_case(
    env: Environment,
    logging: np.ndarray,
    target: np.ndarray,
    weights: FunnelWeights,
    reps: int,
    rounds: int,
) -> dict[str, Any]:
    truth = env.policy_value(target, weights)
    found: dict[str, list[OPEEstimate]] = {
        "ipw": [],
        "snipw": [],
        "dr_arm_means": [],
        "dr_ridge": [],
    }
    for rep in range(reps):
        logs = log_policy(env, logging, rounds, np.random.default_rng(rep), weights)
        probs = target[logs.segments]
        args = (logs.actions, logs.rewards, logs.propensities, probs, logs.contexts)
        means = evaluate_policy(*args, reward_model="arm_means", seed=rep)
        ridge = evaluate_policy(*args, reward_model="ridge", seed=rep)
        found["ipw"].append(means["ipw"])
        found["snipw"].append(means["snipw"])
        found["dr_arm_means"].append(means["dr"])
        found["dr_ridge"].append(ridge["dr"])
    return {
        "truth": round(truth, 5),
        "logging_value": round(env.policy_value(logging, weights), 5),
        "estimators": {name: summary(estimates, truth) for name, estimates in found.items()},
    }


def summary(estimates: list[OPEEstimate], truth: float) -> dict[str, float]:
    values = np.array([e.value for e in estimates])
    reps = len(values)
    coverage = float(np.mean([e.covers(truth) for e in estimates]))
    return {
        "mean": round(float(values.mean()), 5),
        "bias": round(float(values.mean() - truth), 5),
        "bias_se": round(float(values.std(ddof=1) / math.sqrt(reps)), 5),
        "relative_bias": round(float(values.mean() / truth - 1.0), 4),
        "rmse": round(float(np.sqrt(np.mean((values - truth) ** 2))), 5),
        "sd": round(float(values.std(ddof=1)), 5),
        "mean_se": round(float(np.mean([e.se for e in estimates])), 5),
        "coverage": round(coverage, 3),
        "coverage_mc_se": round(math.sqrt(coverage * (1.0 - coverage) / reps), 3),
        "mean_ess": round(float(np.mean([e.ess for e in estimates])), 1),
    }


def simulated(reps: int, rounds: int) -> dict[str, Any]:
    env = make_environment(3, personas=4, devices=3, channels=3, n_arms=4)
    out: dict[str, Any] = {
        "segments": env.n_segments,
        "arms": env.n_arms,
        "rounds": rounds,
        "reps": reps,
    }
    for name, (logging, target, weights) in cases(env).items():
        out[name] = simulate_case(env, logging, target, weights, reps, rounds)
    return out


# --- 2. Open Bandit Dataset -------------------------------------------------------------------


def read_obd(root: Path, policy: str, campaign: str) -> pd.DataFrame:
    path = root / policy / campaign / f"{campaign}.csv.gz"
    frame = pd.read_csv(
        path, usecols=["timestamp", "item_id", "position", "click", "propensity_score"]
    )
    frame["day"] = pd.to_datetime(frame["timestamp"]).dt.day_of_year
    frame["slot"] = frame["position"] - 1
    return frame


def served_distribution(bts: pd.DataFrame, n_items: int) -> np.ndarray:
    """``(positions, items)``: the share of bts rounds at each position showing each item."""
    shown = np.zeros((POSITIONS, n_items))
    np.add.at(shown, (bts["slot"].to_numpy(), bts["item_id"].to_numpy()), 1.0)
    return shown / shown.sum(axis=1, keepdims=True)


def target_noise_variance(random: pd.DataFrame, bts: pd.DataFrame, pi: np.ndarray) -> float:
    """IPW variance added by estimating ``pi`` from the bts rounds (multinomial per position).

    ``IPW = sum_p sum_i pi(i|p) S(i, p)`` with ``S(i, p) = sum_j r_j 1{a_j = i, p_j = p} /
    (n mu_j)``; given ``S``, the frequencies of position ``p`` (``m_p`` rounds) contribute
    ``(sum_i pi S^2 - (sum_i pi S)^2) / m_p``.
    """
    n = len(random)
    s = np.zeros_like(pi)
    weight = random["click"].to_numpy() / (n * random["propensity_score"].to_numpy())
    np.add.at(s, (random["slot"].to_numpy(), random["item_id"].to_numpy()), weight)
    m = np.bincount(bts["slot"].to_numpy(), minlength=POSITIONS)
    first = (pi * s**2).sum(axis=1)
    second = (pi * s).sum(axis=1) ** 2
    return float(((first - second) / m).sum())


def wilson(clicks: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    z = float(special.ndtri(1.0 - alpha / 2.0))
    p = clicks / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def row(est: OPEEstimate, random_rate: float) -> dict[str, float]:
    return {
        "value": round(est.value, 5),
        "lower": round(est.lower, 5),
        "upper": round(est.upper, 5),
        "se": round(est.se, 5),
        "relative_to_random": round(est.value / random_rate, 2),
        "ess": round(est.ess, 1),
        "max_weight": round(est.max_weight, 1),
    }


def obd_campaign(root: Path, campaign: str) -> dict[str, Any]:
    random = read_obd(root, "random", campaign)
    bts = read_obd(root, "bts", campaign)
    n_items = int(max(random["item_id"].max(), bts["item_id"].max())) + 1
    pi = served_distribution(bts, n_items)
    slots = random["slot"].to_numpy()
    args = (random["item_id"], random["click"], random["propensity_score"], pi[slots])
    positions = np.eye(POSITIONS)[slots]
    means = evaluate_policy(*args, reward_model="arm_means")
    ridge = evaluate_policy(*args, positions, reward_model="ridge")
    random_rate = float(random["click"].mean())
    out: dict[str, Any] = {
        "rounds": len(random),
        "items": n_items,
        "random_on_policy": round(random_rate, 5),
        "bts_on_policy": round(float(bts["click"].mean()), 5),
        "bts_on_policy_wilson95": [round(x, 5) for x in wilson(int(bts["click"].sum()), len(bts))],
        "bts_clicks": int(bts["click"].sum()),
        "random_clicks": int(random["click"].sum()),
        "ipw": row(means["ipw"], random_rate),
        "snipw": row(means["snipw"], random_rate),
        "dr_arm_means": row(means["dr"], random_rate),
        "dr_ridge_position": row(ridge["dr"], random_rate),
    }
    extra = target_noise_variance(random, bts, pi)
    se_total = math.sqrt(means["ipw"].se ** 2 + extra)
    out["ipw"]["se_with_target_noise"] = round(se_total, 5)
    out["ipw"]["interval_with_target_noise"] = [
        round(means["ipw"].value - 1.96 * se_total, 5),
        round(means["ipw"].value + 1.96 * se_total, 5),
    ]
    out["ipw_day_matched"] = row(ipw(*day_matched(random, bts, n_items)), random_rate)
    return out


def day_matched(
    random: pd.DataFrame, bts: pd.DataFrame, n_items: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each random round evaluated with the bts distribution of its own day."""
    probs = np.zeros((len(random), n_items))
    for day, rounds in random.groupby("day").indices.items():
        pi = served_distribution(bts[bts["day"] == day], n_items)
        probs[rounds] = pi[random["slot"].to_numpy()[rounds]]
    return (
        random["item_id"].to_numpy(),
        random["click"].to_numpy(),
        random["propensity_score"].to_numpy(),
        probs,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=5000)
    ap.add_argument("--obd", type=Path, default=OBD)
    args = ap.parse_args()
    result: dict[str, Any] = {
        "command": f"python benchmarks/ope.py --reps {args.reps} --rounds {args.rounds}",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    start = time.perf_counter()
    result["simulated"] = simulated(args.reps, args.rounds)
    result["simulated"]["seconds"] = round(time.perf_counter() - start, 1)
    if (args.obd / "random").is_dir():
        result["obd"] = {c: obd_campaign(args.obd, c) for c in ("all", "men", "women")}
        result["obd"]["published_ipw_bts_all"] = 0.0046  # obp's static bts distribution
    else:
        result["obd"] = f"not found at {args.obd}"
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
