"""Exact-match scoring of root-cause localisation, as in the papers' evaluation code.

An element is a set of attribute=value pairs, written canonically with the pairs sorted and
joined by ``&`` (``a=a4&b=b26``); a case's true set is written with elements separated by
``;``. Both the predicted and the true elements are de-duplicated. A predicted element is a
true positive only if it equals a true element exactly (a parent or a child slice gets no
credit); per case FP = |predicted| - TP and FN = |true| - TP. F1 is micro-averaged:
F1 = 2 sum TP / (2 sum TP + sum FP + sum FN) (Li et al., ISSRE 2019; Kalander, RiskLoc,
arXiv 2205.10004, 2022). Top-1 hit: the first-ranked prediction is a true element.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


def canonical(element: Mapping[str, object] | str) -> str:
    """``{"b": "b26", "a": "a4"}`` or ``"b=b26&a=a4"`` -> ``"a=a4&b=b26"``; values as text."""
    if isinstance(element, str):
        pairs = [p.strip() for p in element.split("&") if p.strip()]
    else:
        pairs = [f"{k}={v}" for k, v in element.items()]
    return "&".join(sorted(pairs))


def parse_elements(text: str) -> set[str]:
    """``"a=a4&b=b26;c=c3"`` -> ``{"a=a4&b=b26", "c=c3"}``."""
    return {canonical(part) for part in text.split(";") if part.strip()}


@dataclass(frozen=True)
class CaseScore:
    tp: int
    fp: int
    fn: int
    top1: bool


def score_case(predicted: Sequence[str], truth: Iterable[str]) -> CaseScore:
    """Score ranked canonical predictions against the true elements of one case."""
    true_set = {canonical(t) for t in truth}
    ranked = list(dict.fromkeys(canonical(p) for p in predicted))
    tp = sum(1 for p in ranked if p in true_set)
    return CaseScore(
        tp=tp,
        fp=len(ranked) - tp,
        fn=len(true_set) - tp,
        top1=bool(ranked) and ranked[0] in true_set,
    )


def summarize(scores: Sequence[CaseScore]) -> dict[str, float | int]:
    """Micro precision, recall and F1, top-1 hit rate and the counts behind them."""
    tp = sum(s.tp for s in scores)
    fp = sum(s.fp for s in scores)
    fn = sum(s.fn for s in scores)
    return {
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "top1": sum(s.top1 for s in scores) / len(scores) if scores else 0.0,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "cases": len(scores),
    }
