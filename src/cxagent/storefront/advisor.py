"""The product advisor: a visitor's persona and session so far -> the next best products.

The catalog is a JSON file (``catalog.json`` ships with the package: a demo brand of creative
tools and supplies). ``Catalog.load`` validates it and every error names the file, the item's
index and the field at fault.

Matching is semantic and precomputed. At load, each item's text (name, description, tags,
category words) becomes a TF-IDF vector (scikit-learn, sublinear term frequencies, unigrams
and bigrams, L2-normalised), and the advisor keeps the item x item cosine matrix, each
persona's and each interest's query against every item, and each category's centroid. The
session's query is a weighted sum of TF-IDF vectors: the products it viewed (the most recent
weigh most), the categories it browsed, its persona's interests and its catalog interest
(``photo``, ``vector``, ``supplies``). The cosine of such a sum with an item is the same
weighted sum of precomputed cosines divided by the query's norm, which is the same for every
item, so ranking by the precomputed sum ranks exactly as by cosine: a recommendation is a few
vector operations over the catalog (well under 2 ms; tested), not a TF-IDF transform.

Rules on top of the match, in this order: items in the cart (the caller's, else the
session's cart from its features) and the product on screen are never recommended, nor are products already viewed (the visitor knows them) unless too few
items would be left; bargain
personas (``glancer``, ``browser``) get a price fit (items far above what they looked at are
damped, cheaper ones lifted); the carousel is diverse (one item per category until the
categories run out). Tutorials are not carousel items: each product carries the best tutorial
of its category as a link, and the result has a best tutorial for the session ("Learn more").
Each product gets a callout written for the persona (a researcher reads about a tutorial, a
shopper about what completes the kit, a glancer about price).
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from cxagent.errors import CXAgentError
from cxagent.storefront.events import SessionFeatures
from cxagent.storefront.persona import INTERESTS, PersonaResult, interest_of, interest_word

FloatArray = npt.NDArray[np.float64]

FORMAT: Final = "cxagent.storefront.catalog/1"
SHIPPED: Final = "catalog.json"
ITEM_TYPES: Final = ("product", "plan", "preset", "tutorial")
LEVELS: Final = ("beginner", "intermediate", "pro")
ITEM_FIELDS: Final = (
    "id",
    "name",
    "type",
    "category",
    "price",
    "tags",
    "description",
    "level",
    "pairs_with",
)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")

# Weights of the session query's parts (see the module docstring).
W_VIEWED: Final = 1.0  # products viewed, most recent first
W_CATEGORY: Final = 0.6  # categories browsed, by share of views
W_PERSONA: Final = 0.25  # the persona's interests
W_INTEREST: Final = 0.5  # the catalog interest (photo / vector / supplies)
RECENCY: Final = 0.7  # weight of the k-th most recent viewed product: RECENCY ** k
VIEWED_DAMPING: Final = 0.5  # a viewed product keeps half its score (tiny catalogs only)
PRICE_CEILING: Final = 1.5  # bargain personas: items above 1.5x the reference price ...
PRICE_PENALTY: Final = 0.4  # ... keep 40% of their score
PRICE_BONUS: Final = 1.15  # ... and items at or below it gain 15%
ADDON_CHEAP: Final = 0.5  # add-ons at most half the cart's dearest item are preferred


class CatalogError(CXAgentError):
    """The catalog file is invalid; the message names the file, the item index and the field."""

    def __init__(
        self, message: str, *, file: str, index: int | None = None, field: str | None = None
    ) -> None:
        self.file = file
        self.index = index
        self.field = field
        where = "items" if index is None else f"items[{index}]"
        if field:
            where = f"{where}.{field}" if index is not None else field
        super().__init__(f"{file}: {where}: {message}")


@dataclass(frozen=True)
class Item:
    """One catalog entry: a product, a software plan, a preset pack or a tutorial."""

    id: str
    name: str
    type: str
    category: str
    price: float
    tags: tuple[str, ...]
    description: str
    level: str = "beginner"
    pairs_with: tuple[str, ...] = ()

    @property
    def interest(self) -> str | None:
        return interest_word(self.category)

    @property
    def url(self) -> str:
        kind = "learn" if self.type == "tutorial" else "p"
        return f"/storefront/{kind}/{self.id}"

    @property
    def text(self) -> str:
        words = self.category.replace("-", " ")
        return " ".join([self.name, self.description, " ".join(self.tags), words, self.type])

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "category": self.category,
            "price": self.price,
            "tags": list(self.tags),
            "description": self.description,
            "level": self.level,
            "url": self.url,
        }


def _field_error(file: str, index: int, name: str, message: str) -> CatalogError:
    return CatalogError(message, file=file, index=index, field=name)


def _text_field(raw: Mapping[str, Any], file: str, i: int, name: str, *, max_len: int = 300) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value.strip():
        raise _field_error(file, i, name, f"expected a non-empty string, got {value!r}")
    if len(value) > max_len:
        raise _field_error(file, i, name, f"at most {max_len} characters, got {len(value)}")
    return value.strip()


def _strings(raw: Mapping[str, Any], file: str, i: int, name: str) -> tuple[str, ...]:
    value = raw.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _field_error(file, i, name, f"expected a list of non-empty strings, got {value!r}")
    return tuple(v.strip() for v in value)


def _item(raw: Any, file: str, i: int) -> Item:
    if not isinstance(raw, dict):
        raise CatalogError(f"expected an object, got {type(raw).__name__}", file=file, index=i)
    unknown = sorted(set(raw) - set(ITEM_FIELDS))
    if unknown:
        raise _field_error(
            file, i, unknown[0], f"unknown field (allowed: {', '.join(ITEM_FIELDS)})"
        )
    for name in ("id", "name", "type", "category", "price", "description"):
        if name not in raw:
            raise _field_error(file, i, name, "missing")
    item_id = raw["id"]
    if not isinstance(item_id, str) or not _ID.match(item_id):
        raise _field_error(
            file, i, "id", f"expected 1-64 letters, digits, '.', '_' or '-', got {item_id!r}"
        )
    kind = raw["type"]
    if kind not in ITEM_TYPES:
        raise _field_error(file, i, "type", f"expected one of {ITEM_TYPES}, got {kind!r}")
    category = raw["category"]
    if not isinstance(category, str) or not _SLUG.match(category):
        raise _field_error(file, i, "category", f"expected a lower-case slug, got {category!r}")
    price = raw["price"]
    if (
        isinstance(price, bool)
        or not isinstance(price, int | float)
        or not math.isfinite(price)
        or price < 0
    ):
        raise _field_error(file, i, "price", f"expected a number >= 0, got {price!r}")
    level = raw.get("level", "beginner")
    if level not in LEVELS:
        raise _field_error(file, i, "level", f"expected one of {LEVELS}, got {level!r}")
    return Item(
        id=item_id,
        name=_text_field(raw, file, i, "name", max_len=120),
        type=kind,
        category=category,
        price=float(price),
        tags=_strings(raw, file, i, "tags"),
        description=_text_field(raw, file, i, "description"),
        level=level,
        pairs_with=_strings(raw, file, i, "pairs_with"),
    )


class Catalog:
    """The validated items of a catalog file, in file order."""

    def __init__(
        self, items: Sequence[Item], *, brand: str = "", currency: str = "USD", source: str = ""
    ) -> None:
        self.items: tuple[Item, ...] = tuple(items)
        self.brand = brand
        self.currency = currency
        self.source = source or "<catalog>"
        self.by_id: dict[str, Item] = {item.id: item for item in self.items}
        self.categories: tuple[str, ...] = tuple(dict.fromkeys(i.category for i in self.items))

    def __len__(self) -> int:
        return len(self.items)

    def get(self, item_id: str) -> Item | None:
        return self.by_id.get(item_id)

    @classmethod
    def from_document(cls, doc: Any, source: str) -> Catalog:
        """Validate a parsed catalog document; ``source`` names it in errors."""
        if not isinstance(doc, dict):
            raise CatalogError("expected a JSON object with 'items'", file=source, field="(root)")
        if doc.get("format", FORMAT) != FORMAT:
            raise CatalogError(
                f"expected {FORMAT!r}, got {doc.get('format')!r}", file=source, field="format"
            )
        raw_items = doc.get("items")
        if not isinstance(raw_items, list) or not raw_items:
            raise CatalogError("expected a non-empty list", file=source, field="items")
        items = [_item(raw, source, i) for i, raw in enumerate(raw_items)]
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            if item.id in seen:
                raise _field_error(source, i, "id", f"{item.id!r} repeats items[{seen[item.id]}]")
            seen[item.id] = i
        categories = {item.category for item in items}
        for i, item in enumerate(items):
            for other in item.pairs_with:
                if other not in categories:
                    raise _field_error(
                        source, i, "pairs_with", f"{other!r} is not a category of the catalog"
                    )
        if not any(item.type != "tutorial" for item in items):
            raise CatalogError("no product: every item is a tutorial", file=source, field="items")
        brand = doc.get("brand", "")
        currency = doc.get("currency", "USD")
        if not isinstance(brand, str) or not isinstance(currency, str):
            raise CatalogError("brand and currency must be strings", file=source, field="brand")
        return cls(items, brand=brand, currency=currency, source=source)

    @classmethod
    def load(cls, path: Path | str) -> Catalog:
        """Read and validate a catalog file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CatalogError(
                f"cannot read: {exc.strerror}", file=str(path), field="(file)"
            ) from exc
        return cls.loads(text, str(path))

    @classmethod
    def loads(cls, text: str, source: str) -> Catalog:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CatalogError(
                f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
                file=source,
                field="(file)",
            ) from exc
        return cls.from_document(doc, source)


@functools.cache
def shipped_catalog() -> Catalog:
    """The demo catalog shipped in the package."""
    text = resources.files("cxagent.storefront").joinpath(SHIPPED).read_text(encoding="utf-8")
    return Catalog.loads(text, f"cxagent/storefront/{SHIPPED}")


# --------------------------------------------------------------------------- personas


@dataclass(frozen=True)
class PersonaStyle:
    """How the advisor serves one persona: its interests (a query) and its rules."""

    query: str
    bargain: bool = False  # price fit: prefer items priced like what the session viewed
    tutorial_first: bool = False  # the carousel's callouts lead with tutorials


STYLES: Final[dict[str, PersonaStyle]] = {
    # a page or two and gone: cheap, easy, beginner-friendly starts
    "glancer": PersonaStyle(
        "beginner easy starter set quick pocket travel compact value", bargain=True
    ),
    # product pages only: inspiration, variety, good value across the range
    "browser": PersonaStyle(
        "texture look presets brushes fonts inspiration colour film style", bargain=True
    ),
    # account, cart and checkout pages: completes the kit, plans, bundles
    "shopper": PersonaStyle("plan annual bundle kit set value subscription complete studio"),
    # tutorials and guides: learning, technique, pro tools
    "researcher": PersonaStyle(
        "tutorial technique learn setup pressure raw pro studio walkthrough", tutorial_first=True
    ),
}
DEFAULT_STYLE: Final = PersonaStyle("creative studio tools supplies")
INTEREST_QUERIES: Final[dict[str, str]] = {
    "photo": "photo camera lens photo editing raw presets lighting portrait",
    "vector": "vector illustration drawing tablet pen display brushes fonts logo lettering",
    "supplies": "paper paint watercolour gouache pens brushes sketchbook ink",
}


def base_persona(name: str) -> str:
    """``browser_2`` -> ``browser``: the style of a persona the model split in two."""
    return re.sub(r"_\d+$", "", name)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Suggestion:
    """One carousel entry: the item, its callout for the persona and why it was chosen."""

    item: Item
    score: float
    callout: str
    reason: str
    tutorial: Item | None = None

    def to_dict(self) -> dict[str, Any]:
        out = self.item.to_dict()
        out.update(
            score=round(self.score, 4),
            callout=self.callout,
            reason=self.reason,
            tutorial=None
            if self.tutorial is None
            else {"id": self.tutorial.id, "name": self.tutorial.name, "url": self.tutorial.url},
        )
        return out


@dataclass(frozen=True)
class Recommendations:
    """The advisor's answer for one session."""

    session_id: str
    persona: str
    interest: str | None
    items: tuple[Suggestion, ...]
    tutorial: Item | None
    addons: tuple[Suggestion, ...] = ()
    elapsed_ms: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "persona": self.persona,
            "interest": self.interest,
            "items": [s.to_dict() for s in self.items],
            "tutorial": None if self.tutorial is None else self.tutorial.to_dict(),
            "addons": [s.to_dict() for s in self.addons],
            "elapsed_ms": round(self.elapsed_ms, 3),
            "notes": list(self.notes),
        }


def _money(value: float) -> str:
    return f"${value:,.0f}" if value >= 100 else f"${value:,.2f}".replace(".00", "")


def _category_label(category: str) -> str:
    return category.split("-", 1)[-1].replace("-", " ")


# --------------------------------------------------------------------------- the advisor


class Advisor:
    """Recommends from a catalog; every matrix is computed once, here."""

    def __init__(self, catalog: Catalog | None = None) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.catalog = catalog or shipped_catalog()
        items = self.catalog.items
        self._index = {item.id: i for i, item in enumerate(items)}
        self.vectorizer = TfidfVectorizer(
            sublinear_tf=True, ngram_range=(1, 2), stop_words="english", min_df=1
        )
        x = self.vectorizer.fit_transform([item.text for item in items])
        self._sim: FloatArray = np.asarray((x @ x.T).toarray(), dtype=np.float64)

        def query(text: str) -> FloatArray:
            return np.asarray((self.vectorizer.transform([text]) @ x.T).toarray()[0])

        self._persona_q = {name: query(style.query) for name, style in STYLES.items()}
        self._default_q = query(DEFAULT_STYLE.query)
        self._interest_q = {name: query(q) for name, q in INTEREST_QUERIES.items()}
        self._category_q: dict[str, FloatArray] = {}
        for category in self.catalog.categories:
            rows = [i for i, item in enumerate(items) if item.category == category]
            self._category_q[category] = self._sim[rows].mean(axis=0)
        self._price = np.array([item.price for item in items])
        self._is_tutorial = np.array([item.type == "tutorial" for item in items])
        self._cat_of = [item.category for item in items]
        # a tiny prior in file order breaks ties (and ranks a cold start) reproducibly
        self._prior = np.linspace(1e-6, 0.0, len(items))
        self._tutorial_of: dict[str, Item] = {}
        for item in items:
            if item.type == "tutorial":
                self._tutorial_of.setdefault(item.category, item)
        self._median_price: dict[str, float] = {}
        for category in self.catalog.categories:
            prices = [i.price for i in items if i.category == category and i.type != "tutorial"]
            self._median_price[category] = float(np.median(prices)) if prices else 0.0
        products = [i.price for i in items if i.type != "tutorial"]
        self._catalog_median = float(np.median(products))

    # ---------------------------------------------------------------- scoring

    def _viewed(self, features: SessionFeatures | None) -> list[int]:
        """Catalog indices of the viewed products, most recent first, without repeats."""
        if features is None:
            return []
        seen: dict[int, None] = {}
        for product_id in reversed(features.products):
            i = self._index.get(product_id)
            if i is not None:
                seen.setdefault(i, None)
        return list(seen)

    def _scores(
        self,
        viewed: Sequence[int],
        features: SessionFeatures | None,
        style_name: str,
        interest: str | None,
    ) -> FloatArray:
        score = self._prior.copy()
        if viewed:
            weights = RECENCY ** np.arange(len(viewed))
            score += W_VIEWED * (weights @ self._sim[viewed]) / weights.sum()
        if features is not None and features.categories:
            known = {c: n for c, n in features.categories.items() if c in self._category_q}
            total = sum(known.values())
            for category, views in known.items():
                score += W_CATEGORY * (views / total) * self._category_q[category]
        score += W_PERSONA * self._persona_q.get(style_name, self._default_q)
        if interest is not None:
            score += W_INTEREST * self._interest_q[interest]
        return score

    def _reference_price(self, viewed: Sequence[int], interest: str | None) -> float:
        priced = [self._price[i] for i in viewed if not self._is_tutorial[i]]
        if priced:
            return float(np.median(priced))
        if interest is not None:
            medians = [v for c, v in self._median_price.items() if interest_word(c) == interest]
            if medians:
                return float(np.median(medians))
        return self._catalog_median

    def _pick(self, score: FloatArray, allowed: FloatArray, k: int) -> list[int]:
        """Greedy, diverse: the best item of a category not chosen yet, while any is left."""
        order = [int(i) for i in np.argsort(-score, kind="stable") if allowed[i]]
        chosen: list[int] = []
        used: set[str] = set()
        for i in order:
            if len(chosen) == k:
                break
            if self._cat_of[i] not in used:
                chosen.append(i)
                used.add(self._cat_of[i])
        for i in order:  # categories ran out: fill with the best of the rest
            if len(chosen) == k:
                break
            if i not in chosen:
                chosen.append(i)
        return chosen

    # ---------------------------------------------------------------- callouts

    def _anchor(self, i: int, viewed: Sequence[int]) -> Item | None:
        """The viewed product most like item ``i`` (for "pairs with ..." callouts)."""
        others = [v for v in viewed if v != i and not self._is_tutorial[v]]
        if not others:
            return None
        best = max(others, key=lambda v: self._sim[v, i])
        return self.catalog.items[best] if self._sim[best, i] > 0.05 else None

    def _callout(
        self,
        style_name: str,
        item: Item,
        tutorial: Item | None,
        anchor: Item | None,
        interest: str | None,
        ref_price: float,
    ) -> str:
        label = _category_label(item.category)
        if style_name == "researcher":
            if tutorial is not None:
                return f"Learn it first: free tutorial \u201c{tutorial.name.removeprefix('Tutorial: ')}\u201d"
            return f"In depth: {item.level} level, {', '.join(item.tags[:2])}"
        if style_name == "shopper":
            if anchor is not None:
                return f"Completes your kit: pairs with {anchor.name}"
            if item.type == "plan":
                return "One plan, everything included: cancel any time"
            return f"Rounds out your {label} set"
        if style_name == "browser":
            who = f"{interest} creators" if interest else "creators like you"
            if anchor is not None:
                return f"Liked {anchor.name}? This one is for {who}"
            return f"A fresh {label} pick for {who}"
        if style_name == "glancer":
            easy = ", beginner-friendly" if item.level == "beginner" else ""
            if item.price <= ref_price:
                return f"Quick pick at {_money(item.price)}{easy}"
            return f"Easy start in {label}{easy}"
        return f"Matches what you looked at in {label}"

    def _reason(self, i: int, viewed: Sequence[int], interest: str | None, style_name: str) -> str:
        if viewed:
            top = max(viewed, key=lambda v: self._sim[v, i])
            if self._sim[top, i] > 0.05 and top != i:
                return f"similar to {self.catalog.items[top].name}"
        if interest is not None and self.catalog.items[i].interest == interest:
            return f"matches your {interest} interest"
        return f"fits the {style_name} persona" if style_name in STYLES else "popular start"

    # ---------------------------------------------------------------- public

    def recommend(
        self,
        features: SessionFeatures | None,
        persona: PersonaResult | str | None = None,
        *,
        cart: Iterable[str] | None = None,
        current: str | None = None,
        k: int = 6,
        max_price: float | None = None,
        category: str | None = None,
        session_id: str | None = None,
    ) -> Recommendations:
        """The carousel (at least three items when the catalog allows), a best tutorial and,
        when the cart holds anything, add-ons for the checkout assistant.

        ``cart``: product ids in the cart (never recommended; add-ons pair with them), None
        for the session's own cart (``features.cart``); ``current``: the product on
        screen (not recommended either); ``max_price`` and ``category`` are the widget's
        advanced options (hard filters; relaxed with a note when nothing would be left).
        """
        started = time.perf_counter()
        k = max(3, min(int(k), 12))
        if isinstance(persona, PersonaResult):
            persona_name, interest_tag = persona.persona, persona.interest
        else:
            persona_name, interest_tag = persona or "unknown", None
        if interest_tag is None and features is not None:
            interest_tag = interest_of(features.categories)
        interest = interest_tag.removesuffix("_first") if interest_tag else None
        if interest not in INTERESTS:
            interest = None
        style_name = base_persona(persona_name)
        style = STYLES.get(style_name, DEFAULT_STYLE)
        viewed = self._viewed(features)
        score = self._scores(viewed, features, style_name, interest)
        notes: list[str] = []

        if cart is None:
            cart = features.cart if features is not None else ()
        cart = tuple(cart)
        excluded = {self._index[c] for c in cart if c in self._index}
        if current is not None and current in self._index:
            excluded.add(self._index[current])
        allowed = ~self._is_tutorial.copy()
        for i in excluded:
            allowed[i] = False
        fresh = allowed.copy()
        for i in viewed:
            fresh[i] = False
        if fresh.sum() >= 3:  # next best: what the visitor has not seen yet
            allowed = fresh
        else:
            for i in viewed:
                score[i] *= VIEWED_DAMPING
        ref_price = self._reference_price(viewed, interest)
        if style.bargain:
            cheap = self._price <= ref_price
            dear = self._price > PRICE_CEILING * ref_price
            score = np.where(
                cheap, score * PRICE_BONUS, np.where(dear, score * PRICE_PENALTY, score)
            )
        filtered = allowed.copy()
        if max_price is not None:
            filtered &= self._price <= max_price
        if category is not None:
            filtered &= np.array([c == category for c in self._cat_of])
        if filtered.sum() < 3 and (max_price is not None or category is not None):
            notes.append("filters relaxed: fewer than three items matched them")
            if max_price is not None and (allowed & (self._price <= max_price)).sum() >= 3:
                filtered = allowed & (self._price <= max_price)
            else:
                filtered = allowed
        chosen = self._pick(score, filtered, k)

        items = self.catalog.items
        suggestions = []
        for i in chosen:
            item = items[i]
            tutorial = self._tutorial_of.get(item.category)
            callout = self._callout(
                style_name, item, tutorial, self._anchor(i, viewed), interest, ref_price
            )
            suggestions.append(
                Suggestion(
                    item,
                    float(score[i]),
                    callout,
                    self._reason(i, viewed, interest, style_name),
                    tutorial,
                )
            )
        best_tutorial = self._best_tutorial(score, chosen)
        addons = self._addons(excluded, cart, style_name, k=3) if excluded or cart else ()
        return Recommendations(
            session_id=session_id or (features.session_id if features is not None else ""),
            persona=persona_name,
            interest=interest_tag,
            items=tuple(suggestions),
            tutorial=best_tutorial,
            addons=addons,
            elapsed_ms=(time.perf_counter() - started) * 1000.0,
            notes=tuple(notes),
        )

    def _best_tutorial(self, score: FloatArray, chosen: Sequence[int]) -> Item | None:
        """The tutorial of the top item's category, else the best-scoring tutorial."""
        if chosen:
            tutorial = self._tutorial_of.get(self._cat_of[chosen[0]])
            if tutorial is not None:
                return tutorial
        tutorials = np.flatnonzero(self._is_tutorial)
        if tutorials.size == 0:
            return None
        return self.catalog.items[int(tutorials[np.argmax(score[tutorials])])]

    def _addons(
        self, excluded: set[int], cart: Iterable[str], style_name: str, k: int
    ) -> tuple[Suggestion, ...]:
        """For the checkout assistant: items of the categories the cart's items pair with,
        not in the cart, the cheaper accessories first."""
        in_cart = [self._index[c] for c in cart if c in self._index]
        if not in_cart:
            return ()
        items = self.catalog.items
        pairs = {p for i in in_cart for p in items[i].pairs_with}
        dearest = max(self._price[i] for i in in_cart)
        score = self._sim[in_cart].max(axis=0) + self._prior
        candidates = np.array(
            [
                items[j].category in pairs and not self._is_tutorial[j] and j not in excluded
                for j in range(len(items))
            ]
        )
        if not candidates.any():
            return ()
        cheap = self._price <= ADDON_CHEAP * max(dearest, 1.0)
        score = np.where(cheap, score + 0.5, score)
        out = []
        for j in self._pick(score, candidates, k):
            item = items[j]
            anchor = max(in_cart, key=lambda i: self._sim[i, j])
            who = items[anchor].name
            callout = (
                f"Goes with your {who}: {_money(item.price)}"
                if style_name in ("glancer", "browser")
                else f"Goes with your {who}"
            )
            out.append(Suggestion(item, float(score[j]), callout, f"pairs with {who}", None))
        return tuple(out)
