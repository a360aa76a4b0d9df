"""Which slice contains which: parents, children and the market a slice trades in.

Slices are dicts over store_id, region, category and basket_size (daypart lives on the
window axis). A store implies its region and category, so a slice is compared through its
"expanded" form, e.g. ``{"store_id": 1002}`` is ``{store_id: 1002, region: SF, category:
grocery}`` and so a child of SF + grocery.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Slice = dict[str, Any]


def _items(s: Mapping[str, Any]) -> frozenset[tuple[str, Any]]:
    return frozenset((k, str(v)) for k, v in s.items())


@dataclass
class Hierarchy:
    """Containment among ``slices`` (rows of a series), with stores mapped to their region
    and category by ``store_info`` (store_id -> {"region": .., "category": ..})."""

    slices: list[Slice]
    store_info: Mapping[Any, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.expanded = [_items(self.expand(s)) for s in self.slices]
        self.row = {e: i for i, e in enumerate(self.expanded)}
        self._children: dict[int, list[int]] = {i: [] for i in range(len(self.slices))}
        # a child has one dimension more: its parents are it with one dimension dropped, so
        # each slice looks up its few parents instead of scanning every slice one size up
        # (that scan was quadratic: minutes for the 106,093 slices of 100 M orders)
        rows_of: dict[frozenset[tuple[str, Any]], list[int]] = {}
        for i, e in enumerate(self.expanded):
            rows_of.setdefault(e, []).append(i)
        for j, e in enumerate(self.expanded):
            for item in e:
                for i in rows_of.get(e - {item}, []):
                    self._children[i].append(j)

    def expand(self, s: Mapping[str, Any]) -> Slice:
        out = dict(s)
        if "store_id" in s:
            info = self.store_info.get(s["store_id"], {})
            out.update({k: v for k, v in info.items() if k in ("region", "category")})
        return out

    def find(self, s: Mapping[str, Any]) -> int | None:
        """Row of a slice (given in any form), or None."""
        return self.row.get(_items(self.expand(s)))

    def children(self, i: int) -> list[int]:
        """Slices with exactly one more (expanded) dimension inside slice ``i``."""
        return self._children[i]

    def contains(self, i: int, j: int) -> bool:
        """Slice ``j`` lies inside slice ``i`` (or is it)."""
        return self.expanded[i] <= self.expanded[j]

    def meet(self, i: int, j: int) -> int | None:
        """Row of the intersection of slices ``i`` and ``j`` (None if empty or not a row)."""
        return self.meet_all([i, j])[1]

    def meet_all(self, rows: list[int]) -> tuple[bool, int | None]:
        """(empty, row) of the intersection of ``rows``: ``empty`` when two of them differ in
        one dimension; ``row`` None when it is empty or not a series (too many dimensions)."""
        items = frozenset().union(*(self.expanded[r] for r in rows))
        if len({k for k, _ in items}) < len(items):
            return True, None
        return False, self.row.get(items)

    def dims(self, i: int) -> int:
        """Number of (expanded) dimensions slice ``i`` fixes."""
        return len(self.expanded[i])

    def descendants(self, i: int) -> list[int]:
        return [j for j in range(len(self.slices)) if j != i and self.contains(i, j)]

    def market(self, i: int) -> int | None:
        """Row of the region slice that ``i`` lies strictly inside, or None."""
        region = dict(self.expanded[i]).get("region")
        if region is None or len(self.expanded[i]) == 1:
            return None
        return self.row.get(frozenset({("region", region)}))

    def market_rows(self) -> list[int]:
        """For every row, its market's row or -1 (the shock group of ``calibrate``)."""
        return [m if (m := self.market(i)) is not None else -1 for i in range(len(self.slices))]

    def label(self, i: int) -> str:
        s = self.slices[i]
        order = ("region", "category", "store_id", "basket_size", "daypart")
        return " + ".join(f"{k}={s[k]}" for k in order if k in s) or "all orders"
