"""Benchmark: regret of the storefront bandit against MABWiser's Thompson sampling, and latency.

    python benchmarks/bandit.py [--seeds 10] [--horizon 20000] [--arms 4] [--workers 2]

Every seed draws a simulated environment (``cxagent.storefront.simulate.make_environment``)
and one stream of visitors and outcome uniforms that every algorithm shares (common random
numbers: algorithms differ only by their choices). Regret is the pseudo-regret
``sum_t (best value in the visitor's segment - value of the arm served)`` with the true values,
in click units. Scenarios:

1. ``pooled``: one segment, clicks only: ours (default configuration, which pays for its burn-in
   and its 1% traffic floor per arm), ours without the floor, ours without burn-in and floor
   (``core``: the same algorithm as MABWiser's, batched), and MABWiser
   ``LearningPolicy.ThompsonSampling`` updated after every round.
2. ``segmented``: 4 personas x 3 devices x 3 channels = 36 segments with skewed traffic, clicks
   only: ours with hierarchical sharing (default), ours without sharing
   (``prior_strength = 0``), MABWiser with one model per segment, and one MABWiser model for
   all segments (no segmentation).
3. ``funnel``: the same segments, value-weighted funnel reward (click 1, add-to-cart 5,
   purchase 25): ours on the funnel, and MABWiser per segment on a binary reward (its
   Thompson sampling takes binary rewards only): the click, or the add-to-cart.

Reports the mean final regret with a 95% t interval over seeds, the paired difference ours minus
MABWiser with its interval, and ``decide()`` latency (p50/p99 and mean, microseconds) under a
production-like stream: 2 slots, 36 segments, outcomes recorded as they arrive. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from mabwiser.mab import MAB, LearningPolicy
from scipy import stats

from cxagent.storefront.bandit import OUTCOMES, Bandit, BanditConfig, FunnelWeights
from cxagent.storefront.simulate import CLICKS, Environment, make_environment

VALUE = FunnelWeights()


@dataclass(frozen=True)
class Stream:
    """One seed's shared randomness: the visitors' segments and their outcome uniforms."""

    env: Environment
    segments: np.ndarray
    uniforms: np.ndarray


def make_stream(seed: int, horizon: int, arms: int, pooled: bool) -> Stream:
    shape = {"personas": 1, "devices": 1, "channels": 1} if pooled else {}
    env = make_environment(seed, n_arms=arms, **shape)
    rng = np.random.default_rng([seed, 1])
    return Stream(env, env.sample_segments(rng, horizon), rng.random((horizon, 3)))


def depth_of(rates: np.ndarray, u: np.ndarray) -> int:
    """Deepest funnel stage reached (1..4) given the arm's stage rates and three uniforms."""
    depth = 1
    for stage in range(3):
        if u[stage] >= rates[stage]:
            break
        depth += 1
    return depth


def regret_of(stream: Stream, weights: FunnelWeights, choices: np.ndarray) -> float:
    values = stream.env.values(weights)
    best = values.max(axis=1)[stream.segments]
    return float((best - values[stream.segments, choices]).sum())


def run_ours(stream: Stream, weights: FunnelWeights, config: BanditConfig, seed: int) -> float:
    env = stream.env
    bandit = Bandit({"hero": list(env.arms)}, replace(config, weights=weights, seed=seed))
    index = {arm: i for i, arm in enumerate(env.arms)}
    rng = np.random.default_rng([seed, 2])
    choices = np.empty(len(stream.segments), dtype=np.int64)
    for t, s in enumerate(stream.segments):
        decision = bandit.decide(env.segments[s], "hero", rng)
        arm = index[decision.arm]
        choices[t] = arm
        depth = depth_of(env.rates[s, arm], stream.uniforms[t])
        bandit.record(decision, OUTCOMES[depth - 1])  # nested: the deepest implies the rest
    return regret_of(stream, weights, choices)


def run_mabwiser(
    stream: Stream, weights: FunnelWeights, per_segment: bool, seed: int, success: int = 2
) -> float:
    """MABWiser Thompson sampling, one model per segment or one for all.

    Its reward is binary: reaching funnel depth ``success`` (2 = a click, 3 = an add-to-cart).
    """
    env = stream.env
    models: dict[int, MAB] = {}

    def model(s: int) -> MAB:
        key = s if per_segment else 0
        if key not in models:
            mab = MAB(list(range(env.n_arms)), LearningPolicy.ThompsonSampling(), seed=seed + key)
            mab.fit([], [])
            models[key] = mab
        return models[key]

    choices = np.empty(len(stream.segments), dtype=np.int64)
    for t, s in enumerate(stream.segments):
        mab = model(int(s))
        arm = int(mab.predict())
        choices[t] = arm
        reached = depth_of(env.rates[s, arm], stream.uniforms[t]) >= success
        mab.partial_fit([arm], [int(reached)])
    return regret_of(stream, weights, choices)


Runner = Callable[[Stream, int], float]


def scenario_runners(name: str) -> tuple[bool, FunnelWeights, dict[str, Runner]]:
    """Whether the scenario has one segment, its reward weights, and its algorithms."""
    default = BanditConfig()
    core = replace(default, burn_in=0, min_share=0.0)
    no_floor = replace(default, min_share=0.0)
    fixed_floor = replace(default, floor_decay_after=None)
    flat = replace(default, prior_strength=0.0)
    if name == "pooled":
        return (
            True,
            CLICKS,
            {
                "ours": lambda st, s: run_ours(st, CLICKS, default, s),
                "ours_fixed_floor": lambda st, s: run_ours(st, CLICKS, fixed_floor, s),
                "ours_no_floor": lambda st, s: run_ours(st, CLICKS, no_floor, s),
                "ours_core": lambda st, s: run_ours(st, CLICKS, core, s),
                "mabwiser": lambda st, s: run_mabwiser(st, CLICKS, True, s),
            },
        )
    if name == "segmented":
        return (
            False,
            CLICKS,
            {
                "ours": lambda st, s: run_ours(st, CLICKS, default, s),
                "ours_no_sharing": lambda st, s: run_ours(st, CLICKS, flat, s),
                "mabwiser_per_segment": lambda st, s: run_mabwiser(st, CLICKS, True, s),
                "mabwiser_pooled": lambda st, s: run_mabwiser(st, CLICKS, False, s),
            },
        )
    if name == "funnel":
        return (
            False,
            VALUE,
            {
                "ours": lambda st, s: run_ours(st, VALUE, default, s),
                "mabwiser_per_segment_clicks": lambda st, s: run_mabwiser(st, VALUE, True, s),
                "mabwiser_per_segment_carts": lambda st, s: run_mabwiser(st, VALUE, True, s, 3),
            },
        )
    raise ValueError(f"unknown scenario {name!r}")


def one_seed(job: tuple[str, int, int, int]) -> dict[str, float]:
    name, seed, horizon, arms = job
    pooled, weights, runners = scenario_runners(name)
    stream = make_stream(seed, horizon, arms, pooled)
    out: dict[str, float] = {"floor_cost": floor_cost(stream, weights, BanditConfig())}
    for label, runner in runners.items():
        start = time.perf_counter()
        out[label] = runner(stream, seed)
        out[f"{label}_seconds"] = time.perf_counter() - start
    return out


def floor_cost(stream: Stream, weights: FunnelWeights, config: BanditConfig) -> float:
    """Regret the traffic floor alone adds: ``sum_t eps_t * sum_a gap(s_t, a)``, about.

    The floor serves every arm at least ``eps_t`` (``config.floor`` of the segment's
    impressions so far); where Thompson sampling has settled on the best arm, each suboptimal
    arm costs ``eps_t`` times its gap on every round.
    """
    values = stream.env.values(weights)
    gaps = (values.max(axis=1, keepdims=True) - values).sum(axis=1)
    seen: dict[int, int] = {}
    total = 0.0
    for s in stream.segments:
        n = seen.get(int(s), 0)
        total += config.floor(n, values.shape[1]) * gaps[s]
        seen[int(s)] = n + 1
    return total


def interval(values: list[float]) -> dict[str, float]:
    x = np.asarray(values)
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    mean = float(x.mean())
    return {"mean": round(mean, 2), "lower": round(mean - half, 2), "upper": round(mean + half, 2)}


def summarise(rows: list[dict[str, float]]) -> dict[str, Any]:
    labels = [k for k in rows[0] if not k.endswith("_seconds") and k != "floor_cost"]
    summary: dict[str, Any] = {
        label: {
            "final_regret": interval([r[label] for r in rows]),
            "seconds_per_run": round(float(np.mean([r[f"{label}_seconds"] for r in rows])), 2),
        }
        for label in labels
    }
    summary["floor_cost_estimate"] = interval([r["floor_cost"] for r in rows])
    ours = [label for label in labels if label.startswith("ours")]
    for theirs in (label for label in labels if label.startswith("mabwiser")):
        for mine in ours:
            diff = [r[mine] - r[theirs] for r in rows]
            summary[f"{mine}_minus_{theirs}"] = interval(diff)
    return summary


def latency(decisions: int, warmup: int, seed: int) -> dict[str, Any]:
    """decide() time under a stream: 2 slots, 36 segments, outcomes recorded as they arrive.

    ``warmup`` decisions run first, untimed, so that the timed ones see a bandit in steady
    state; the timed ones include every Monte Carlo recomputation they trigger.
    """
    env = make_environment(seed, personas=4, devices=3, channels=3)
    bandit = Bandit({"hero": list(env.arms), "cta": list(env.arms)}, BanditConfig(seed=seed))
    rng = np.random.default_rng(seed)
    total = warmup + decisions
    visitors = env.sample_segments(rng, total)
    uniforms = rng.random((total, 3))
    index = {arm: i for i, arm in enumerate(env.arms)}
    times = np.empty(total)
    versions = 0
    for t, s in enumerate(visitors):
        if t == warmup:
            versions = bandit.policy_version
        slot = "hero" if t % 2 == 0 else "cta"
        start = time.perf_counter_ns()
        decision = bandit.decide(env.segments[s], slot, rng)
        times[t] = (time.perf_counter_ns() - start) / 1000.0
        depth = depth_of(env.rates[s, index[decision.arm]], uniforms[t])
        bandit.record(decision, OUTCOMES[depth - 1])
    return {
        "segments": env.n_segments,
        "slots": 2,
        "warmup_decisions": warmup,
        "timed_decisions": decisions,
        "policy_versions_while_timed": bandit.policy_version - versions,
        "first_decisions_us": _percentiles(times[: min(warmup, decisions) or decisions]),
        "steady_state_us": _percentiles(times[warmup:]),
        "prior_strengths_hero": bandit.prior_strengths("hero"),
    }


def _percentiles(times: np.ndarray) -> dict[str, float]:
    p50, p99 = np.percentile(times, [50, 99])
    return {
        "p50": round(float(p50), 1),
        "p99": round(float(p99), 1),
        "mean": round(float(times.mean()), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--horizon", type=int, default=20_000)
    ap.add_argument("--arms", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scenarios", default="pooled,segmented,funnel")
    ap.add_argument("--latency-decisions", type=int, default=200_000)
    ap.add_argument("--latency-warmup", type=int, default=200_000)
    args = ap.parse_args()
    result: dict[str, Any] = {
        "command": "python benchmarks/bandit.py "
        f"--seeds {args.seeds} --horizon {args.horizon} --arms {args.arms}",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "config": BanditConfig().to_dict(),
    }
    for name in args.scenarios.split(","):
        jobs = [(name, seed, args.horizon, args.arms) for seed in range(args.seeds)]
        start = time.perf_counter()
        with ProcessPoolExecutor(args.workers) as pool:
            rows = list(pool.map(one_seed, jobs))
        result[name] = summarise(rows) | {"wall_seconds": round(time.perf_counter() - start, 1)}
        print(json.dumps({name: result[name]}), flush=True)
    if args.latency_decisions > 0:
        result["latency"] = latency(args.latency_decisions, args.latency_warmup, seed=0)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
