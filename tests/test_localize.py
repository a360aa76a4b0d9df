"""Root-cause localisation: planted slices in seeded synthetic leaves, and the benchmark score.

The generators return ``(leaves, planted)`` like ruptures' seeded signal generators. Leaves
are one row per combination of region x category x daypart x basket_size (300 leaves),
with lognormal sizes; noise is Poisson/binomial with a 2% relative wobble.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

import cxagent.localize as localize_pkg
from cxagent.errors import DataValidationError
from cxagent.localize import LocalizeConfig, localize
from cxagent.localize.scoring import canonical, parse_elements, score_case, summarize

DIMS = {
    "region": ["SF", "NYC", "LA", "CHI", "SEA"],
    "category": ["grocery", "restaurant", "convenience", "alcohol"],
    "daypart": ["breakfast", "lunch", "afternoon", "dinner", "late_night"],
    "basket_size": ["small", "medium", "large"],
}
Plant = tuple[dict[str, str], float]


def _grid(rng: np.random.Generator, total: float) -> pd.DataFrame:
    grid = pd.DataFrame(list(itertools.product(*DIMS.values())), columns=list(DIMS))
    weight = np.ones(len(grid))
    for dim, values in DIMS.items():  # a multiplicative structure, like real cohorts
        effect = dict(zip(values, rng.lognormal(0.0, 0.6, len(values)), strict=True))
        weight *= grid[dim].map(effect).to_numpy()
    weight *= rng.lognormal(0.0, 0.3, len(grid))
    grid["size"] = total * weight / weight.sum()
    return grid


def _mask(grid: pd.DataFrame, where: dict[str, str]) -> np.ndarray:
    return np.logical_and.reduce([grid[k].to_numpy() == v for k, v in where.items()])


def additive_leaves(
    seed: int, plants: list[Plant], total: float = 1e6, share: float | None = None
) -> pd.DataFrame:
    """Orders per leaf; each plant multiplies its slice by a factor. ``share`` rescales the
    first plant's slice to that share of the total forecast."""
    rng = np.random.default_rng(seed)
    grid = _grid(rng, total)
    if share is not None and plants:
        m = _mask(grid, plants[0][0])
        grid.loc[m, "size"] *= share * total / grid.loc[m, "size"].sum()
    factor = np.ones(len(grid))
    for where, f in plants:
        factor[_mask(grid, where)] *= f
    mean = grid["size"].to_numpy() * factor * rng.lognormal(0.0, 0.02, len(grid))
    grid["predict"] = grid["size"]
    grid["real"] = rng.poisson(mean).astype(float)
    return grid.drop(columns="size")


def ratio_leaves(seed: int, plants: list[Plant], rate: float = 0.1) -> pd.DataFrame:
    """Late orders over delivered orders, before and after; plants multiply the late rate."""
    rng = np.random.default_rng(seed)
    grid = _grid(rng, 200_000.0)
    leaf_rate = np.clip(rate * rng.lognormal(0.0, 0.3, len(grid)), 0.0, 0.9)
    after_rate = leaf_rate.copy()
    for where, f in plants:
        after_rate[_mask(grid, where)] *= f
    n0 = rng.poisson(grid["size"].to_numpy())
    n1 = rng.poisson(grid["size"].to_numpy())
    wobble = rng.lognormal(0.0, 0.02, (2, len(grid)))
    grid["predict_den"] = n0.astype(float)
    grid["predict"] = rng.binomial(n0, np.clip(leaf_rate * wobble[0], 0, 1)).astype(float)
    grid["real_den"] = n1.astype(float)
    grid["real"] = rng.binomial(n1, np.clip(after_rate * wobble[1], 0, 1)).astype(float)
    return grid.drop(columns="size")


def test_given_grocery_drops_30pct_when_localized_then_grocery_ranks_first() -> None:
    leaves = additive_leaves(21, [({"category": "grocery"}, 0.7)])
    result = localize(leaves, list(DIMS), kind="additive", direction="drop")
    assert result.status == "ok"
    assert [s.slice for s in result.slices] == [{"category": "grocery"}]
    top = result.slices[0]
    assert top.direction == "drop" and top.stars == "***" and top.delta < 0
    assert top.share == pytest.approx(1.0, abs=0.1)


def test_given_3_attribute_cause_of_0_1pct_when_localized_then_found_exactly() -> None:
    where = {"region": "SF", "category": "grocery", "daypart": "dinner"}
    leaves = additive_leaves(2, [(where, 0.4)], share=0.001)
    top_line = leaves["real"].sum() / leaves["predict"].sum() - 1.0
    assert abs(top_line) < 0.005  # invisible at the top line
    result = localize(leaves, list(DIMS), kind="additive", direction="drop")
    assert [s.slice for s in result.slices] == [where]  # not its parent, nothing else
    assert result.slices[0].n_leaves == len(DIMS["basket_size"])


def test_given_two_planted_elements_when_localized_then_both_found() -> None:
    plants = [({"region": "LA", "daypart": "lunch"}, 0.5), ({"category": "alcohol"}, 0.6)]
    leaves = additive_leaves(3, plants)
    result = localize(leaves, list(DIMS), kind="additive", direction="both")
    assert {s.label for s in result.slices} == {canonical(w) for w, _ in plants}
    assert all(s.q_value < 0.001 for s in result.slices)


def test_given_rate_drop_in_small_slice_when_localized_as_ratio_then_found() -> None:
    where = {"region": "SEA", "category": "convenience"}
    leaves = ratio_leaves(4, [(where, 0.5)])
    den_share = leaves.loc[_mask(leaves, where), "real_den"].sum() / leaves["real_den"].sum()
    assert den_share < 0.05
    result = localize(
        leaves,
        list(DIMS),
        kind="ratio",
        real_den="real_den",
        predict_den="predict_den",
        direction="drop",
    )
    assert [s.slice for s in result.slices] == [where]
    top = result.slices[0]
    assert top.observed_rate is not None and top.expected_rate is not None
    assert top.delta == pytest.approx(top.observed_rate - top.expected_rate)
    assert top.delta == pytest.approx(-0.5 * top.expected_rate, rel=0.2)
    assert top.contribution == pytest.approx(top.delta * den_share, rel=0.05)


@pytest.mark.parametrize("kind", ["additive", "ratio"])
def test_given_no_planted_change_when_localized_then_no_significant_slice(kind: str) -> None:
    for seed in (10, 11, 12):
        if kind == "additive":
            result = localize(additive_leaves(seed, []), list(DIMS), kind="additive")
        else:
            leaves = ratio_leaves(seed, [])
            result = localize(
                leaves, list(DIMS), kind="ratio", real_den="real_den", predict_den="predict_den"
            )
        assert result.status == "ok"
        assert all(s.q_value >= 0.05 for s in result.slices), [s.label for s in result.slices]


def test_given_disjoint_found_slices_when_shares_summed_then_they_add_up_to_the_change() -> None:
    plants = [({"region": "NYC"}, 0.6), ({"region": "CHI", "category": "grocery"}, 0.5)]
    result = localize(additive_leaves(25, plants), list(DIMS), kind="additive", direction="drop")
    assert {s.label for s in result.slices} == {canonical(w) for w, _ in plants}
    assert sum(s.share for s in result.slices) == pytest.approx(1.0, abs=0.05)
    total = sum(s.contribution for s in result.slices)
    assert total == pytest.approx(result.total_change, rel=0.05)


def test_given_hand_computed_case_when_scored_then_exact_match_micro_f1() -> None:
    # case 1: truth {a=a1&b=b2, c=c3}; predicted b=b2&a=a1 (same element), a=a1 (parent)
    one = score_case(["b=b2&a=a1", "a=a1"], parse_elements("a=a1&b=b2;c=c3"))
    assert (one.tp, one.fp, one.fn, one.top1) == (1, 1, 1, True)
    # case 2: truth {d=d4} (listed twice); predicted a child, then the truth, twice
    two = score_case(["d=d4&a=a1", "d=d4", "d=d4"], parse_elements("d=d4;d=d4"))
    assert (two.tp, two.fp, two.fn, two.top1) == (1, 1, 0, False)
    # case 3: nothing predicted
    three = score_case([], parse_elements("b=b1"))
    assert (three.tp, three.fp, three.fn, three.top1) == (0, 0, 1, False)
    out = summarize([one, two, three])
    # sum TP = 2, FP = 2, FN = 2: F1 = 4 / (4 + 2 + 2) = 0.5; P = 2/4, R = 2/4; top-1 1/3
    assert out["f1"] == pytest.approx(0.5)
    assert out["precision"] == pytest.approx(0.5) and out["recall"] == pytest.approx(0.5)
    assert out["top1"] == pytest.approx(1 / 3)
    assert canonical({"p2p": 1, "bitrate": 1200}) == "bitrate=1200&p2p=1"


def test_given_degenerate_or_bad_input_when_localized_then_status_or_clear_error() -> None:
    empty = pd.DataFrame({"region": [], "real": [], "predict": []})
    assert localize(empty, ["region"], kind="additive").status == "empty"
    zero = pd.DataFrame({"region": ["SF"], "real": [3.0], "predict": [0.0]})
    assert localize(zero, ["region"], kind="additive").status == "no_expected"
    negative = pd.DataFrame({"region": ["SF"], "real": [-1.0], "predict": [2.0]})
    with pytest.raises(DataValidationError, match="column 'real'"):
        localize(negative, ["region"], kind="additive")
    with pytest.raises(DataValidationError, match="column 'store'"):
        localize(negative, ["store"], kind="additive")
    with pytest.raises(ValueError, match="real_den"):
        localize(zero, ["region"], kind="ratio")
    with pytest.raises(ValueError, match="direction"):
        localize(zero, ["region"], kind="additive", direction="down")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpha"):
        LocalizeConfig(alpha=1.5)


def test_public_api_is_complete() -> None:
    public = {n for n in dir(localize_pkg) if not n.startswith("_")}
    modules = {"leaves", "localizer", "result", "scoring", "search", "significance", "variance"}
    assert set(localize_pkg.__all__) == public - modules
    assert math.isclose(LocalizeConfig().alpha, 0.05)
