"""The storefront bandit: propensities, burn-in, floor, learning, sharing, idempotency, state."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from scipy import stats

from cxagent.storefront.bandit import (
    OUTCOMES,
    Bandit,
    BanditConfig,
    Decision,
    FunnelWeights,
    Segment,
    _pooling_strength,
)
from cxagent.storefront.simulate import CLICKS, make_environment

SEG = Segment("maker", "mobile", "social")
ARMS = {"hero": ["h0", "h1", "h2"], "cta": ["c0", "c1"]}


def feed(
    bandit: Bandit,
    segment: Segment,
    slot: str,
    n: int,
    rates: dict[str, tuple[float, float, float]],
    rng: np.random.Generator,
) -> list[Decision]:
    """Serve ``n`` visitors and record each one's deepest funnel outcome."""
    decisions = []
    for _ in range(n):
        decision = bandit.decide(segment, slot, rng)
        depth = 1
        for rate in rates[decision.arm]:
            if rng.random() >= rate:
                break
            depth += 1
        bandit.record(decision, OUTCOMES[depth - 1])
        decisions.append(decision)
    return decisions


def clicks(*rates: float) -> dict[str, tuple[float, float, float]]:
    return {f"h{i}": (r, 0.0, 0.0) for i, r in enumerate(rates)}


def test_burn_in_is_uniform_until_every_arm_has_its_impressions() -> None:
    bandit = Bandit(ARMS, BanditConfig(burn_in=40, weights=CLICKS))
    rng = np.random.default_rng(1)
    served = [bandit.decide(SEG, "hero", rng) for _ in range(3000)]  # nothing recorded yet
    assert all(d.burn_in and d.propensity == pytest.approx(1 / 3) for d in served)
    counts = Counter(d.arm for d in served)
    assert stats.chisquare([counts[a] for a in ARMS["hero"]]).pvalue > 0.001
    feed(bandit, SEG, "hero", 150, clicks(0.05, 0.05, 0.3), rng)
    bandit.refresh()
    assert min(v["impressions"] for v in bandit.counts(SEG.key, "hero").values()) >= 40
    assert not bandit.decide(SEG, "hero", rng).burn_in


def test_propensities_sum_to_one_respect_the_floor_and_match_the_draws() -> None:
    config = BanditConfig(
        burn_in=10, min_share=0.05, floor_decay_after=None, weights=CLICKS, refresh_max=200
    )
    bandit = Bandit(ARMS, config)
    rng = np.random.default_rng(2)
    feed(bandit, SEG, "hero", 2000, clicks(0.02, 0.05, 0.25), rng)
    probs = bandit.probabilities(SEG, "hero")
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-12)
    assert min(probs.values()) >= 0.05 - 1e-12
    assert probs["h2"] > 0.85  # the floor caps it at 1 - 2 * 0.05
    # no records: the policy version stays, and the served frequencies follow the propensities
    served = [bandit.decide(SEG, "hero", rng) for _ in range(20_000)]
    assert {d.policy_version for d in served} == {bandit.policy_version}
    assert all(d.propensity == pytest.approx(probs[d.arm]) for d in served)
    counts = Counter(d.arm for d in served)
    expected = [20_000 * probs[a] for a in ARMS["hero"]]
    assert stats.chisquare([counts[a] for a in ARMS["hero"]], expected).pvalue > 0.001


def test_the_floor_decays_with_the_segments_traffic_down_to_its_limit() -> None:
    config = BanditConfig(
        burn_in=10, min_share=0.05, floor_decay_after=20, min_share_limit=0.01, weights=CLICKS
    )
    assert config.floor(60, 3) == 0.05  # 3 arms x 20: the full floor until 60 impressions
    assert config.floor(240, 3) == pytest.approx(0.025)  # 0.05 * sqrt(60 / 240)
    assert config.floor(10**6, 3) == 0.01
    assert BanditConfig(min_share=0.05, floor_decay_after=None).floor(10**6, 3) == 0.05
    bandit = Bandit(ARMS, config)
    rng = np.random.default_rng(5)
    floors = []
    for _ in range(4):
        feed(bandit, SEG, "hero", 1000, clicks(0.02, 0.03, 0.25), rng)
        bandit.refresh()
        n = sum(v["impressions"] for v in bandit.counts(SEG.key, "hero").values())
        probs = bandit.probabilities(SEG, "hero")
        floors.append(min(probs.values()))
        assert floors[-1] >= config.floor(n, 3) - 1e-12
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-12)
    assert floors[0] > floors[-1] >= 0.01 - 1e-12  # it fell, and not below the limit


def test_posterior_concentrates_on_the_best_arm_of_a_simulated_segment() -> None:
    env = make_environment(8, personas=1, devices=1, channels=1, n_arms=3, arm_spread=0.6)
    segment = env.segments[0]
    truth = env.values(CLICKS)[0]
    assert np.sort(truth)[-1] > 1.5 * np.sort(truth)[-2]  # click rates 3.8% vs 2.3% and 1.9%
    rates = {arm: tuple(env.rates[0, k]) for k, arm in enumerate(env.arms)}
    bandit = Bandit({"hero": list(env.arms)}, BanditConfig(weights=CLICKS))
    feed(bandit, segment, "hero", 8000, rates, np.random.default_rng(3))
    rows = {r.arm: r for r in bandit.policy_value()}
    best = env.arms[int(truth.argmax())]
    assert rows[best].prob_best > 0.9
    assert rows[best].served > 0.85
    assert rows[best].impressions > 0.7 * 8000
    assert rows[best].lower <= truth.max() <= rows[best].upper


def test_funnel_value_prefers_the_arm_that_sells() -> None:
    # h0 gets the most clicks, h1 turns its clicks into carts and purchases
    rates = {"h0": (0.12, 0.05, 0.1), "h1": (0.1, 0.4, 0.5), "h2": (0.08, 0.05, 0.1)}
    value = Bandit(ARMS, BanditConfig(weights=FunnelWeights(1.0, 5.0, 25.0)))
    only_clicks = Bandit(ARMS, BanditConfig(weights=CLICKS))
    rng = np.random.default_rng(4)
    feed(value, SEG, "hero", 4000, rates, rng)
    feed(only_clicks, SEG, "hero", 4000, rates, rng)
    assert value.probabilities(SEG, "hero")["h1"] > 0.8
    assert only_clicks.probabilities(SEG, "hero")["h0"] > 0.5


def test_a_new_segment_borrows_from_its_persona() -> None:
    rng = np.random.default_rng(5)
    shared = Bandit(ARMS, BanditConfig(weights=CLICKS))
    alone = Bandit(ARMS, BanditConfig(weights=CLICKS, prior_strength=0.0))
    for bandit in (shared, alone):
        for device in ("desktop", "tablet"):
            feed(
                bandit,
                Segment("maker", device, "search"),
                "hero",
                1500,
                clicks(0.02, 0.03, 0.12),
                rng,
            )
    newcomer = Segment("maker", "mobile", "email")
    first = shared.decide(newcomer, "hero", rng)
    assert not first.burn_in
    assert shared.probabilities(newcomer, "hero")["h2"] > 0.6
    # without sharing the new segment starts from scratch: a uniform burn-in
    assert alone.decide(newcomer, "hero", rng).burn_in
    assert alone.probabilities(newcomer, "hero")["h2"] == pytest.approx(1 / 3)


def test_duplicated_and_out_of_order_outcomes_do_not_double_count() -> None:
    bandit = Bandit(ARMS)
    rng = np.random.default_rng(6)
    d = bandit.decide(SEG, "cta", rng)
    assert bandit.record(d, "click", "ev-click-1") == "counted"  # before its impression
    assert bandit.record(d, "click", "ev-click-1") == "duplicate"  # redelivered
    assert bandit.record(d, "click", "ev-click-2") == "duplicate"  # a second click event
    assert bandit.record(d.decision_id, "impression", "ev-imp-1") == "duplicate"  # implied
    assert bandit.record(d.decision_id, "purchase", "ev-buy-1") == "counted"
    assert bandit.record(d.decision_id, "add_to_cart", "ev-cart-1") == "duplicate"
    assert bandit.record("no-such-decision", "click", "ev-x") == "unknown"
    one = {"impressions": 1, "clicks": 1, "add_to_carts": 1, "purchases": 1}
    for level in SEG.backoff():
        assert bandit.counts(level, "cta")[d.arm] == one
    other = next(a for a in ARMS["cta"] if a != d.arm)
    assert bandit.counts(SEG.key, "cta")[other]["impressions"] == 0


def test_the_attribution_window_forgets_the_oldest_decisions() -> None:
    bandit = Bandit(ARMS, BanditConfig(max_open=2))
    rng = np.random.default_rng(7)
    first, second, third = (bandit.decide(SEG, "hero", rng) for _ in range(3))
    assert bandit.record(first.decision_id, "impression") == "unknown"
    assert bandit.record(second.decision_id, "impression") == "counted"
    assert bandit.record(third, "impression") == "counted"
    # a Decision from elsewhere (another worker) is registered when it is not known
    assert bandit.record(first, "impression", "ev-late") == "counted"


def test_snapshot_restore_round_trip_through_json() -> None:
    bandit = Bandit(ARMS, BanditConfig(burn_in=5, seed=11))
    rng = np.random.default_rng(8)
    rates = {"h0": (0.05, 0.2, 0.3), "h1": (0.1, 0.2, 0.3), "h2": (0.03, 0.5, 0.5)}
    for segment in (SEG, Segment("learner", "desktop", "email")):
        feed(bandit, segment, "hero", 400, rates, rng)
    pending = bandit.decide(SEG, "hero", rng)
    assert bandit.record(pending, "click", "ev-1") == "counted"
    state = bandit.snapshot()
    restored = Bandit.restore(json.loads(json.dumps(state)))
    assert restored.snapshot() == state
    assert restored.policy_version == bandit.policy_version
    assert restored.probabilities(SEG, "hero") == bandit.probabilities(SEG, "hero")
    assert restored.record(pending, "click", "ev-1") == "duplicate"
    assert restored.record(pending.decision_id, "click", "ev-2") == "duplicate"
    assert restored.record(pending.decision_id, "add_to_cart", "ev-3") == "counted"
    assert restored.decide(SEG, "hero", rng).decision_id not in {d[0] for d in state["open"]}
    with pytest.raises(ValueError, match="schema"):
        Bandit.restore({**state, "schema": 99})


def test_policy_value_view_is_consistent() -> None:
    bandit = Bandit(ARMS, BanditConfig(burn_in=5))
    rng = np.random.default_rng(9)
    rates = {"h0": (0.05, 0.2, 0.3), "h1": (0.1, 0.2, 0.3), "h2": (0.03, 0.5, 0.5)}
    rates |= {"c0": (0.05, 0.2, 0.3), "c1": (0.07, 0.2, 0.3)}
    segments = [SEG, Segment("pro", "desktop", "direct")]
    for segment in segments:
        for slot in ARMS:
            feed(bandit, segment, slot, 300, rates, rng)
    rows = bandit.policy_value()
    assert len(rows) == len(segments) * sum(len(a) for a in ARMS.values())
    assert {r.segment for r in rows} == {s.key for s in segments}
    for row in rows:
        assert 0.0 <= row.lower <= row.mean <= row.upper
    for key in {(r.segment, r.slot) for r in rows}:
        group = [r for r in rows if (r.segment, r.slot) == key]
        assert sum(r.prob_best for r in group) == pytest.approx(1.0)
        assert sum(r.served for r in group) == pytest.approx(1.0)
    assert sum(r.impressions for r in rows if r.slot == "hero") == 600


def test_invalid_settings_and_inputs_name_the_culprit() -> None:
    with pytest.raises(ValueError, match="min_share"):
        Bandit({"hero": [f"h{i}" for i in range(10)]}, BanditConfig(min_share=0.1))
    with pytest.raises(ValueError, match="at least 2 arms"):
        Bandit({"hero": ["only"]})
    with pytest.raises(ValueError, match="duplicate"):
        Bandit({"hero": ["a", "a"]})
    with pytest.raises(ValueError, match="burn_in"):
        BanditConfig(burn_in=-1)
    with pytest.raises(ValueError, match="floor_decay_after"):
        BanditConfig(floor_decay_after=0)
    with pytest.raises(ValueError, match="min_share_limit"):
        BanditConfig(min_share_limit=float("nan"))
    with pytest.raises(ValueError, match="prior_strength"):
        BanditConfig(prior_strength=-1.0)
    with pytest.raises(ValueError, match="strength_bounds"):
        BanditConfig(strength_bounds=(10.0, 5.0))
    with pytest.raises(ValueError, match="refresh_ratio"):
        BanditConfig(refresh_ratio=float("inf"))
    with pytest.raises(ValueError, match="weights.purchase"):
        FunnelWeights(purchase=-1.0)
    with pytest.raises(ValueError, match="persona"):
        Segment("a|b", "mobile", "direct")
    bandit = Bandit(ARMS)
    with pytest.raises(ValueError, match="slot"):
        bandit.decide(SEG, "footer")
    d = bandit.decide(SEG, "hero")
    with pytest.raises(ValueError, match="outcome"):
        bandit.record(d, "share")  # type: ignore[arg-type]
    assert BanditConfig.from_dict(BanditConfig().to_dict()) == BanditConfig()


@pytest.mark.parametrize("strength", [50.0, 300.0, 2000.0])
def test_empirical_bayes_recovers_the_spread_between_segments(strength: float) -> None:
    rng = np.random.default_rng(int(strength))
    parents, arms, children, impressions = 30, 4, 12, 5000
    mu = rng.uniform(0.02, 0.08, (parents, 1, arms))
    theta = rng.beta(mu * strength, (1 - mu) * strength, (parents, children, arms))
    clicks = rng.binomial(impressions, theta)
    tables = np.zeros((parents * children, arms, 4), np.int64)
    tables[:, :, 0] = impressions
    tables[:, :, 1] = clicks.reshape(parents * children, arms)
    owners = np.repeat(np.arange(parents), children)
    found = _pooling_strength(tables, owners, (1.0, 1e6))
    assert strength / 1.5 < found < strength * 1.5
    # identical children: no spread beyond sampling noise, so pool as much as allowed
    same = rng.binomial(impressions, np.broadcast_to(mu, theta.shape))
    tables[:, :, 1] = same.reshape(parents * children, arms)
    assert _pooling_strength(tables, owners, (10.0, 5000.0)) > 1000.0
