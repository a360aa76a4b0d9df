"""Greedy search for the slices that explain a change, with explaining away.

Candidates are every slice that fixes 1..``max_layer`` attributes and holds at least one
leaf (a "cuboid" is the set of attributes fixed, as in Squeeze and RiskLoc). Each round
aggregates the still unexplained leaves per candidate and computes

- the test statistic ``T`` (``significance.deviance_statistic`` with the fitted leaf
  variances, over the genomic-control factor); a candidate is eligible when it moves in the
  requested direction and passes Bonferroni over all candidates;
- the ranking score: the same deviance on the dispersion-free (Poisson or two-proportion)
  scale, minus ``2 log k`` for a cuboid with ``k`` slices (the description length of naming
  one of them, which prefers coarser slices on ties).

Ranking on the dispersion-free scale favours the slice that explains the most change
(much like Adtributor's explanatory power; Bhagwan et al., NSDI 2014), while the test uses
the fitted noise. Under the ripple effect (Li et al., "Generic and Robust Localization of
Multi-Dimensional Root Causes", ISSRE 2019) the deviance is maximal at the true slice:
adding normal leaves (a parent) or dropping abnormal ones (a child) lowers it, because the
Poisson deviance is jointly convex and homogeneous of degree one in (V, E).

The best eligible slice is accepted and its leaves are removed from the candidates'
aggregates before the next round (explaining away, as RiskLoc does; Kalander, "RiskLoc:
Localization of Multi-dimensional Root Causes by Weighted Risk", arXiv 2205.10004, 2022).
When a later slice is an ancestor of earlier ones, the rest of the ancestor was abnormal
too, so the ancestor replaces them (at the rank of the first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import numpy.typing as npt

from cxagent.localize.leaves import LeafTable
from cxagent.localize.significance import (
    critical_statistic,
    deviance_statistic,
    genomic_control,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Cuboid:
    """The slices of one attribute combination: leaf -> slice id, and each id's values."""

    dims: tuple[int, ...]
    slice_of_leaf: IntArray
    values: tuple[tuple[int, ...], ...]

    @property
    def size(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Selection:
    slice: dict[str, str]
    mask: BoolArray
    statistic: float


def build_cuboids(table: LeafTable, max_layer: int) -> list[Cuboid]:
    """Every attribute combination up to ``max_layer``, with only the slices that occur."""
    cuboids = []
    n_dims = len(table.dims)
    for layer in range(1, min(max_layer, n_dims) + 1):
        for dims in combinations(range(n_dims), layer):
            code = np.zeros(table.n, dtype=np.int64)
            for d in dims:  # compress after each step so the code never overflows
                combined = code * len(table.labels[d]) + table.codes[d]
                _, code = np.unique(combined, return_inverse=True)
                code = code.astype(np.int64)
            first = np.unique(code, return_index=True)[1]
            values = tuple(tuple(int(table.codes[d][i]) for d in dims) for i in first)
            cuboids.append(Cuboid(dims=dims, slice_of_leaf=code, values=values))
    return cuboids


def describe(table: LeafTable, cuboid: Cuboid, slice_id: int) -> dict[str, str]:
    return {
        table.dims[d]: table.labels[d][v]
        for d, v in zip(cuboid.dims, cuboid.values[slice_id], strict=True)
    }


def _sums(cuboid: Cuboid, weights: FloatArray) -> FloatArray:
    sums = np.bincount(cuboid.slice_of_leaf, weights=weights, minlength=cuboid.size)
    return sums.astype(np.float64, copy=False)


def greedy_search(
    table: LeafTable,
    cuboids: list[Cuboid],
    variance: FloatArray,
    *,
    sign: float,
    alpha: float,
    max_slices: int,
) -> tuple[list[Selection], float]:
    """Accept slices one by one; return them (merged) and the last genomic-control factor.

    ``sign`` is -1 for drops, +1 for rises and 0 for both directions.
    """
    n_candidates = sum(c.size for c in cuboids)
    critical = critical_statistic(alpha, n_candidates, two_sided=sign == 0.0)
    active = np.ones(table.n, dtype=bool)
    selections: list[Selection] = []
    inflation = 1.0
    for _ in range(max_slices):
        rounds = []
        for cuboid in cuboids:
            obs = _sums(cuboid, table.observed * active)
            exp = _sums(cuboid, table.expected * active)
            stat = deviance_statistic(obs, exp, _sums(cuboid, variance * active))
            rank = deviance_statistic(obs, exp, _sums(cuboid, table.base * active))
            rounds.append((cuboid, obs - exp, stat, rank))
        inflation = genomic_control(np.concatenate([s[s > 0] for _, _, s, _ in rounds]))
        best: tuple[float, Cuboid, int, float] | None = None
        for cuboid, diff, stat, rank in rounds:
            ok = stat / inflation > critical
            if sign != 0.0:
                ok &= diff * sign > 0.0
            if not ok.any():
                continue
            score = np.where(ok, rank - 2.0 * math.log(cuboid.size), -np.inf)
            j = int(np.argmax(score))
            if best is None or score[j] > best[0]:
                best = (float(score[j]), cuboid, j, float(stat[j]) / inflation)
        if best is None:
            break
        _, cuboid, j, stat_j = best
        mask = cuboid.slice_of_leaf == j
        selections.append(Selection(describe(table, cuboid, j), mask, stat_j))
        active &= ~mask
    return merge_ancestors(selections), inflation


def merge_ancestors(selections: list[Selection]) -> list[Selection]:
    """A slice found after some of its descendants replaces them at the first one's rank."""
    out: list[Selection] = []
    for sel in selections:
        children = [
            i for i, o in enumerate(out) if all(o.slice.get(k) == v for k, v in sel.slice.items())
        ]
        if not children:
            out.append(sel)
            continue
        strongest = max(sel.statistic, *(out[i].statistic for i in children))
        merged = Selection(sel.slice, sel.mask, strongest)
        out = [o for i, o in enumerate(out) if i not in children]
        out.insert(children[0], merged)
    return out
