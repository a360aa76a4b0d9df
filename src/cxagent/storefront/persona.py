"""Visitor personas: a taxonomy learned from real sessions and a real-time classifier.

Learning (offline, ``train``). The taxonomy is learned from the 12,330 real sessions of the UCI
Online Shoppers Purchasing Intention data (Sakar, Polat, Katircioglu and Kastro, "Real-time
prediction of online shoppers' purchasing intention using multilayer perceptron and LSTM
recurrent neural networks", Neural Computing and Applications 31, 2019). Only the six columns a
live session can also compute enter the model: pages and seconds per page family
(administrative, informational, product-related), the families ``events.PAGE_FAMILY`` uses.
UCI's bounce rates, exit rates and page values are site-wide Google Analytics aggregates of the
pages visited (page value even encodes later purchases), and its traffic type, OS, browser and
region are unnamed codes: none of them has a live equivalent, so they stay out of the model
and are reported only as profiles. Features are ``log1p`` (counts and seconds are heavy-tailed)
and standardised. k-means clusters them for each k in a small range; k is the one with the
highest silhouette (Rousseeuw 1987) among those whose clusters survive bootstrap resampling
(mean adjusted Rand index, Hubert and Arabie 1985, >= 0.9). BIC of Gaussian mixtures is no use
here: the data are counts with point masses at zero, and BIC keeps falling up to any k tried.
Each cluster gets a name from its centroid by fixed rules (``name_personas``), and its
conversion (UCI's ``Revenue``) with a Wilson interval; a chi-square test says whether
conversion differs between personas.

Classifying (online, ``PersonaModel.classify``). The probabilistic reading of k-means is a
mixture of spherical Gaussians with one shared variance; the posterior of that mixture, with
the persona shares as weights, is evaluated in plain Python from the shipped JSON (a few dozen
multiplications, no numpy, pandas or scikit-learn per request). A session with fewer than
``MIN_PAGES`` page views gets the persona shares of training sessions at least that long,
flagged ``confident=False``: its behaviour does not yet say anything. The catalog interest of a
live session (photo, vector, supplies) is a rule-based qualifier from the categories it viewed;
UCI has no categories, so it is not learned. The session's acquisition channel (UTM source or
referrer kind) can replace the population prior (``classify(..., channel_prior=...)``): UCI's
traffic types are unnamed codes, so ``ChannelPriors`` learns each channel's persona mix online
from the shop's own confidently classified sessions. See docs/storefront-persona.md.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import json
import math
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from cxagent.errors import CXAgentError, SourceDataError
from cxagent.stats.proportions import wilson_interval
from cxagent.storefront.events import Event, EventKind, PageType, SessionFeatures, fold

FloatArray = npt.NDArray[np.float64]

FORMAT: Final = "cxagent.storefront.persona/1"
FAMILIES: Final = ("administrative", "informational", "product_related")
FEATURES: Final = (
    "administrative_pages",
    "informational_pages",
    "product_related_pages",
    "administrative_seconds",
    "informational_seconds",
    "product_related_seconds",
)
UCI_FEATURE_COLUMNS: Final = (
    "Administrative",
    "Informational",
    "ProductRelated",
    "Administrative_Duration",
    "Informational_Duration",
    "ProductRelated_Duration",
)
UCI_REQUIRED: Final = (*UCI_FEATURE_COLUMNS, "Revenue", "VisitorType", "Weekend")

SEED: Final = 2019
K_RANGE: Final = (2, 7)  # inclusive: two personas up to seven
MIN_STABILITY: Final = 0.9  # mean bootstrap adjusted Rand index a k must reach
BOOTSTRAPS: Final = 3
SILHOUETTE_SAMPLE: Final = 5000  # silhouette is quadratic in n: a seeded sample
MIN_PAGES: Final = 3  # fewer page views than this: prior-weighted answer, not confident
CONFIDENT_P: Final = 0.6  # below this top probability the answer is "ambiguous"
ATYPICAL_QUANTILE: Final = 0.999  # farther from every centroid than this share of training
PROFILE_WEIGHT: Final = 0.8  # weight of a logged-in visitor's own persona history in the prior
# Channel priors (``ChannelPriors``), learned online from the shop's own confident sessions:
CHANNEL_PSEUDO_SESSIONS: Final = 50.0  # shrinkage: a channel's data weighs n / (n + 50)
CHANNEL_MEMORY: Final = 100_000  # the most recent sessions counted (LRU of session ids)
CHANNEL_FORMAT: Final = "cxagent.storefront.channel_priors/1"
MAX_CACHED: Final = 1024  # channel priors kept computed between changes of the counts

# Naming rules, applied to each centroid read back in pages (see ``name_personas``).
GLANCE_PAGES: Final = 4.0
READS_INFO_PAGES: Final = 1.0
USES_ADMIN_PAGES: Final = 1.0

INTERESTS: Final = ("photo", "vector", "supplies")
INTEREST_MIN_VIEWS: Final = 2
INTEREST_SHARE: Final = 0.6

SHIPPED: Final = "persona_model.json"


# --------------------------------------------------------------------------- live features


def live_features(features: SessionFeatures) -> tuple[float, ...]:
    """The model's six inputs from a live session, in ``FEATURES`` order.

    Seconds per family exclude the page being viewed now (its time is the gap to a next page
    view that has not happened), exactly as Google Analytics left the exit page untimed in UCI.
    """
    pages, seconds = features.pages, features.seconds
    return (
        float(pages.get("administrative", 0)),
        float(pages.get("informational", 0)),
        float(pages.get("product_related", 0)),
        float(seconds.get("administrative", 0.0)),
        float(seconds.get("informational", 0.0)),
        float(seconds.get("product_related", 0.0)),
    )


def uci_session(values: Sequence[float], session_id: str = "uci") -> SessionFeatures:
    """A UCI row's six feature values as the ``SessionFeatures`` a live session would have.

    This is the UCI -> live mapping in code: it lets benchmarks and tests run UCI sessions
    through the same ``classify`` the service calls.
    """
    counts = {f: int(values[i]) for i, f in enumerate(FAMILIES) if values[i] > 0}
    secs = {f: float(values[3 + i]) for i, f in enumerate(FAMILIES) if values[3 + i] > 0}
    return SessionFeatures(
        session_id=session_id,
        page_views=sum(counts.values()),
        pages=counts,
        seconds=secs,
    )


def interest_word(category: str) -> str | None:
    """The interest of a catalog category slug: its first word if it names one."""
    word = category.replace("/", "-").replace("_", "-").split("-", 1)[0].lower()
    return word if word in INTERESTS else None


def interest_of(categories: Mapping[str, int]) -> str | None:
    """``"<interest>_first"`` when one interest has most of the session's category views.

    At least ``INTEREST_MIN_VIEWS`` views and ``INTEREST_SHARE`` of all category views: one
    click on a photo preset does not make a photographer.
    """
    total = 0
    by_interest: dict[str, int] = {}
    for category, views in categories.items():
        total += views
        word = interest_word(category)
        if word is not None:
            by_interest[word] = by_interest.get(word, 0) + views
    if not by_interest:
        return None
    best = max(by_interest, key=lambda w: (by_interest[w], w))
    views = by_interest[best]
    if views >= INTEREST_MIN_VIEWS and views >= INTEREST_SHARE * total:
        return f"{best}_first"
    return None


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class PersonaResult:
    """A persona answer for one session, as the service returns it.

    ``reason`` says why ``confident`` is what it is: ``ok``; ``ambiguous`` (top probability
    below ``CONFIDENT_P``); ``too_few_pages`` (the prior of sessions that long); ``atypical``
    (farther from every persona than 99.9% of training sessions: a bot, a broken tag);
    ``fallback`` (no session features at all, e.g. the feature store is down).
    """

    persona: str
    probabilities: dict[str, float]
    confident: bool
    reason: str
    interest: str | None = None
    features: dict[str, float] = field(default_factory=dict)
    model: str = ""

    @property
    def tag(self) -> str:
        """Persona with its interest qualifier, e.g. ``researcher/photo_first``."""
        return f"{self.persona}/{self.interest}" if self.interest else self.persona

    def to_dict(self) -> dict[str, Any]:
        return {
            "persona": self.persona,
            "tag": self.tag,
            "interest": self.interest,
            "probabilities": self.probabilities,
            "confident": self.confident,
            "reason": self.reason,
            "features": self.features,
            "model": self.model,
        }


# --------------------------------------------------------------------------- the model


def _floats(doc: Mapping[str, Any], key: str, n: int) -> tuple[float, ...]:
    values = tuple(float(v) for v in doc[key])
    if len(values) != n or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{key}: expected {n} finite numbers, got {doc[key]!r}")
    return values


def _normalised(values: tuple[float, ...], key: str) -> tuple[float, ...]:
    """Shares that sum to one exactly (the JSON rounds them to six decimals)."""
    total = sum(values)
    if any(v < 0 for v in values) or not total > 0:
        raise ValueError(f"{key}: expected non-negative shares, got {values}")
    return tuple(v / total for v in values)


class PersonaModel:
    """The persona taxonomy and its classifier, read from (and written as) a JSON document.

    Construction validates the document and precomputes plain-Python parameters, so that
    ``classify`` is a handful of float operations per persona.
    """

    def __init__(self, document: Mapping[str, Any]) -> None:
        if document.get("format") != FORMAT:
            raise ValueError(f"format: expected {FORMAT!r}, got {document.get('format')!r}")
        if tuple(document["features"]) != FEATURES:
            raise ValueError(f"features: expected {FEATURES}, got {document['features']}")
        d = len(FEATURES)
        personas = document["personas"]
        self.document: dict[str, Any] = dict(document)
        self.names: tuple[str, ...] = tuple(p["name"] for p in personas)
        if len(set(self.names)) != len(self.names) or not self.names:
            raise ValueError(f"personas: names must be unique and non-empty, got {self.names}")
        self.center = _floats(document, "center", d)
        self.scale = _floats(document, "scale", d)
        self.means = tuple(_floats(p, "mean_z", d) for p in personas)
        self.priors = _normalised(tuple(float(p["prior"]) for p in personas), "prior")
        self.variance = float(document["variance"])
        self.atypical_d2 = float(document["atypical_d2"])
        self.min_pages = int(document["min_pages"])
        self.confident_p = float(document["confident_p"])
        self.priors_by_pages = tuple(
            _normalised(_floats({"p": row}, "p", len(self.names)), "priors_by_pages")
            for row in document["priors_by_pages"]
        )
        if len(self.priors_by_pages) != self.min_pages or self.variance <= 0:
            raise ValueError("priors_by_pages must have min_pages rows; variance must be > 0")
        self.fingerprint: str = str(document["training"]["sha256"])[:12]
        self._inv_scale = tuple(1.0 / s for s in self.scale)
        self._half_inv_var = 0.5 / self.variance
        self._log_priors = _logs(self.priors)

    # ---------------------------------------------------------------- hot path

    def _blend(self, base: Sequence[float], prior: Mapping[str, float] | None) -> tuple[float, ...]:
        """``base`` mixed with a visitor's own persona history (first-party profile).

        The profile gets ``PROFILE_WEIGHT``; the rest stays with the population so that no
        persona becomes impossible because a profile has not seen it yet.
        """
        if not prior:
            return tuple(base)
        own = [max(float(prior.get(n, 0.0)), 0.0) for n in self.names]
        total = sum(own)
        if not total > 0 or not math.isfinite(total):
            return tuple(base)
        w = PROFILE_WEIGHT
        return tuple(w * o / total + (1.0 - w) * b for o, b in zip(own, base, strict=True))

    def _distances(self, values: Sequence[float]) -> list[float]:
        z = [
            (math.log1p(max(v, 0.0)) - c) * s
            for v, c, s in zip(values, self.center, self._inv_scale, strict=True)
        ]
        return [sum((zi - mi) * (zi - mi) for zi, mi in zip(z, m, strict=True)) for m in self.means]

    def _posterior(self, d2: Sequence[float], log_priors: Sequence[float]) -> dict[str, float]:
        logits = [lp - d * self._half_inv_var for lp, d in zip(log_priors, d2, strict=True)]
        top = max(logits)
        weights = [math.exp(x - top) for x in logits]
        total = sum(weights)
        return {n: w / total for n, w in zip(self.names, weights, strict=True)}

    def _channel_shares(
        self, channel_prior: Mapping[str, float] | None
    ) -> tuple[float, ...] | None:
        """A channel's persona shares in ``names`` order, normalised; None when there is no
        usable channel prior (absent, empty, zero or not finite: the population's then)."""
        if not channel_prior:
            return None
        own = [max(float(channel_prior.get(n, 0.0)), 0.0) for n in self.names]
        total = sum(own)
        if not total > 0 or not math.isfinite(total):
            return None
        return tuple(o / total for o in own)

    def _reweighted(self, row: Sequence[float], channel: Sequence[float]) -> tuple[float, ...]:
        """``row`` (shares of sessions at least that long) times the channel's shares
        relative to the population's, renormalised: the channel's short sessions, assuming
        that how long a persona's sessions last does not depend on where it came from."""
        w = [r * c / p if p > 0 else 0.0 for r, c, p in zip(row, channel, self.priors, strict=True)]
        total = sum(w)
        return tuple(x / total for x in w) if total > 0 else tuple(row)

    def posterior(
        self,
        features: SessionFeatures,
        prior: Mapping[str, float] | None = None,
        *,
        channel_prior: Mapping[str, float] | None = None,
    ) -> dict[str, float]:
        """Persona probabilities of the session as it is, however short (for finished
        sessions, evaluation and tests; the service calls ``classify``)."""
        log_priors = self._log_priors
        channel = self._channel_shares(channel_prior)
        if channel is not None:
            log_priors = _logs(self._blend(channel, prior))
        elif prior:
            log_priors = _logs(self._blend(self.priors, prior))
        return self._posterior(self._distances(live_features(features)), log_priors)

    def classify(
        self,
        features: SessionFeatures,
        prior: Mapping[str, float] | None = None,
        *,
        channel_prior: Mapping[str, float] | None = None,
    ) -> PersonaResult:
        """The persona of a live session so far, with probabilities and how sure it is.

        ``channel_prior`` is the persona mix of the session's acquisition channel (persona ->
        share, e.g. ``ChannelPriors.prior(channel).shares``, learned from the shop's own
        traffic); it replaces the population prior, and below ``min_pages`` it reweights the
        shares of sessions that long by the channel's shares relative to the population's.
        Its shares should all be positive (``ChannelPriors`` shrinks them so): a persona with
        share 0 becomes impossible. ``prior`` is the logged-in visitor's persona history from
        the first-party profile (persona -> share of their past sessions); it is blended over
        the population's (or channel's) prior with ``PROFILE_WEIGHT``. Without either, the
        answer is exactly the population-prior one. A session is classified by what it has
        done so far: the answer may change as it goes on, and the service re-classifies on
        each request.
        """
        values = live_features(features)
        used = dict(zip(FEATURES, values, strict=True))
        interest = interest_of(features.categories)
        channel = self._channel_shares(channel_prior)
        if features.page_views < self.min_pages:
            row = self.priors_by_pages[max(features.page_views, 0)]
            if channel is not None:
                row = self._reweighted(row, channel)
            early = self._blend(row, prior)
            probs = dict(zip(self.names, early, strict=True))
            return self._result(probs, False, "too_few_pages", interest, used)
        if channel is not None:
            base = self._blend(channel, prior)
        else:
            base = self._blend(self.priors, prior) if prior else self.priors
        log_priors = self._log_priors if base is self.priors else _logs(base)
        d2 = self._distances(values)
        probs = self._posterior(d2, log_priors)
        top = max(probs.values())
        if min(d2) > self.atypical_d2:
            return self._result(probs, False, "atypical", interest, used)
        if top < self.confident_p:
            return self._result(probs, False, "ambiguous", interest, used)
        return self._result(probs, True, "ok", interest, used)

    def _result(
        self,
        probs: dict[str, float],
        confident: bool,
        reason: str,
        interest: str | None,
        used: dict[str, float],
    ) -> PersonaResult:
        best = max(self.names, key=probs.__getitem__)
        return PersonaResult(best, probs, confident, reason, interest, used, self.fingerprint)

    def fallback(self) -> PersonaResult:
        """The answer when there are no session features (feature store down): the
        population's persona shares, never confident."""
        probs = dict(zip(self.names, self.priors, strict=True))
        return self._result(probs, False, "fallback", None, {})

    # ---------------------------------------------------------------- io

    def to_json(self) -> str:
        return json.dumps(self.document, indent=1) + "\n"

    def save(self, path: Path | str) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(self.to_json())
        return out

    @classmethod
    def load(cls, path: Path | str) -> PersonaModel:
        return cls(json.loads(Path(path).read_text()))

    def persona(self, name: str) -> dict[str, Any]:
        """The document's entry for one persona (centroid, conversion, profile, rule)."""
        for p in self.document["personas"]:
            if p["name"] == name:
                return dict(p)
        raise KeyError(name)


def _logs(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(math.log(max(v, 1e-12)) for v in values)


@functools.cache
def shipped_model() -> PersonaModel:
    """The model shipped in the package (trained on the UCI data; see the docs)."""
    text = resources.files("cxagent.storefront").joinpath(SHIPPED).read_text()
    return PersonaModel(json.loads(text))


def fallback() -> PersonaResult:
    """The shipped model's fallback answer (population shares, ``confident=False``)."""
    return shipped_model().fallback()


# --------------------------------------------------------------------------- channel priors


@dataclass(frozen=True)
class ChannelPrior:
    """A channel's prior as ``PersonaModel.classify`` takes it (``shares``), with the number
    of sessions of the channel behind it. ``ChannelPriors`` caches and shares these answers
    between callers: treat ``shares`` as read-only."""

    channel: str
    sessions: int
    shares: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"channel": self.channel, "sessions": self.sessions}


class ChannelPriors:
    """Persona priors per acquisition channel (UTM source or referrer kind), learned online
    from the shop's own sessions: no data we have names channels (UCI's ``TrafficType``
    codes are unnamed), so the shop's traffic is the only source.

    ``observe(session_id, channel, persona)`` counts a session that reached a confident
    classification (reason ``ok``). Each session counts once, with its latest persona: a
    session re-classified with the same persona changes nothing, and one whose persona
    changes moves its count. The memory is the ``capacity`` most recently observed sessions
    (an LRU of session ids): the oldest is forgotten, and its count removed, when a new one
    comes, so memory is bounded (channels with no session left are dropped) and the counts
    follow the shop's recent traffic.

    ``prior(channel)`` compares the channel's persona mix with the mix of all counted
    sessions, and applies that ratio to the population prior ``population`` (the training
    shares), with ``pseudo_sessions`` = m of shrinkage:

    * all traffic: ``s_i = (N_i + m * pi_i) / (N + m)``;
    * the channel: ``c_i = (n_i + m * s_i) / (n + m)``;
    * its prior: ``pi_i * c_i / s_i``, renormalised.

    A channel with few sessions gets about the population prior, and so does one whose mix
    is the traffic's, whatever its size. Comparing with all counted
    sessions rather than with ``pi`` directly matters: only sessions with at least
    ``MIN_PAGES`` pages and a confident answer are counted, which under-represents glancers
    in every channel alike; ``(n_i + m * pi_i) / (n + m)`` would move every channel away
    from the glancer. When the counted mix equals ``pi``, this is exactly that formula.

    Thread-safe (one internal lock; ``prior`` holds it for a copy of a few integers). Pure:
    no I/O; ``snapshot()`` and ``restore()`` give and take a JSON-ready dict.
    """

    def __init__(
        self,
        names: Sequence[str],
        population: Sequence[float],
        *,
        pseudo_sessions: float = CHANNEL_PSEUDO_SESSIONS,
        capacity: int = CHANNEL_MEMORY,
    ) -> None:
        self.names: tuple[str, ...] = tuple(names)
        if len(set(self.names)) != len(self.names) or not self.names:
            raise ValueError(f"names: must be unique and non-empty, got {self.names}")
        pop = _floats({"population": list(population)}, "population", len(self.names))
        self.population = _normalised(pop, "population")
        if not all(p > 0 for p in self.population):
            raise ValueError(f"population: every share must be > 0, got {self.population}")
        if not (math.isfinite(pseudo_sessions) and pseudo_sessions > 0):
            raise ValueError(f"pseudo_sessions: a number > 0, got {pseudo_sessions!r}")
        if capacity < 1:
            raise ValueError(f"capacity: at least 1, got {capacity!r}")
        self.pseudo_sessions = float(pseudo_sessions)
        self.capacity = int(capacity)
        self._index = {n: i for i, n in enumerate(self.names)}
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._counts: dict[str, list[int]] = {}
        self._total = [0] * len(self.names)
        # every change of the counts moves every channel's prior (through all traffic's mix):
        # a version number invalidates the cached answers
        self._version = 0
        self._cache: dict[str, tuple[int, ChannelPrior]] = {}

    @classmethod
    def for_model(cls, model: PersonaModel, **options: Any) -> ChannelPriors:
        """Channel priors over a model's personas, shrunk to its population prior."""
        return cls(model.names, model.priors, **options)

    # ---------------------------------------------------------------- updates

    def observe(self, session_id: str, channel: str, persona: str) -> bool:
        """Count a confidently classified session; True when the counts changed (a new
        session, or one whose persona or channel changed). Unknown personas are ignored."""
        i = self._index.get(persona)
        if i is None or not channel:
            return False
        channel = sys.intern(channel)  # one string object per channel, not one per session
        with self._lock:
            old = self._sessions.get(session_id)
            if old is not None:
                self._sessions.move_to_end(session_id)
                if old[1] == i and old[0] == channel:
                    return False
                self._forget(old)
            counts = self._counts.get(channel)
            if counts is None:
                counts = self._counts[channel] = [0] * len(self.names)
            counts[i] += 1
            self._total[i] += 1
            self._version += 1
            self._sessions[session_id] = (channel, i)
            if len(self._sessions) > self.capacity:
                _, oldest = self._sessions.popitem(last=False)
                self._forget(oldest)
            return True

    def _forget(self, entry: tuple[str, int]) -> None:
        channel, i = entry
        counts = self._counts[channel]
        counts[i] -= 1
        self._total[i] -= 1
        if not any(counts):
            del self._counts[channel]

    def clear(self) -> None:
        with self._lock:
            self._sessions.clear()
            self._counts.clear()
            self._total = [0] * len(self.names)
            self._version += 1
            self._cache.clear()

    # ---------------------------------------------------------------- reads

    def prior(self, channel: str) -> ChannelPrior | None:
        """The channel's shrunk persona prior; None for a channel with no counted session."""
        with self._lock:
            counts = self._counts.get(channel)
            if counts is None:
                return None
            cached = self._cache.get(channel)
            if cached is not None and cached[0] == self._version:
                return cached[1]
            version, own, total = self._version, tuple(counts), tuple(self._total)
        m = self.pseudo_sessions
        n, big_n = sum(own), sum(total)
        weights = []
        for c, t, p in zip(own, total, self.population, strict=True):
            s = (t + m * p) / (big_n + m)
            weights.append(p * ((c + m * s) / (n + m)) / s)
        z = sum(weights)
        shares = {name: w / z for name, w in zip(self.names, weights, strict=True)}
        answer = ChannelPrior(channel, n, shares)
        with self._lock:
            if version == self._version:
                if len(self._cache) >= MAX_CACHED:
                    self._cache.clear()
                self._cache[channel] = (version, answer)
        return answer

    def sessions(self, channel: str | None = None) -> int:
        """Sessions counted (for one channel, or in all)."""
        with self._lock:
            if channel is None:
                return len(self._sessions)
            return sum(self._counts.get(channel, ()))

    def counts(self) -> dict[str, dict[str, int]]:
        """Channel -> persona -> sessions counted."""
        with self._lock:
            return {
                ch: dict(zip(self.names, c, strict=True)) for ch, c in sorted(self._counts.items())
            }

    # ---------------------------------------------------------------- persistence

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready dict: the sessions counted, oldest first, as ``[session_id,
        channel, persona]`` (the counts follow from them), with the settings."""
        with self._lock:
            sessions = [[sid, ch, self.names[i]] for sid, (ch, i) in self._sessions.items()]
        return {
            "format": CHANNEL_FORMAT,
            "personas": list(self.names),
            "pseudo_sessions": self.pseudo_sessions,
            "capacity": self.capacity,
            "sessions": sessions,
        }

    def restore(self, document: Mapping[str, Any]) -> int:
        """Replace the state with a ``snapshot()``'s (this instance's settings stay; a
        smaller capacity keeps the most recent sessions). Returns the sessions counted."""
        if document.get("format") != CHANNEL_FORMAT:
            raise ValueError(f"format: expected {CHANNEL_FORMAT!r}, got {document.get('format')!r}")
        rows = document.get("sessions")
        if not isinstance(rows, list):
            raise ValueError("sessions: expected a list of [session_id, channel, persona]")
        self.clear()
        for row in rows:
            if not (isinstance(row, list | tuple) and len(row) == 3):
                raise ValueError(f"sessions: expected [session_id, channel, persona], got {row!r}")
            self.observe(str(row[0]), str(row[1]), str(row[2]))
        return self.sessions()


# --------------------------------------------------------------------------- statistics


def conversion_by_persona(
    labels: Sequence[str] | npt.NDArray[Any], converted: Sequence[bool] | npt.NDArray[Any]
) -> dict[str, Any]:
    """Conversion per persona with Wilson intervals and a chi-square test of independence
    (persona x converted): is the difference between personas more than chance?"""
    from scipy.stats import chi2_contingency

    lab = np.asarray(labels)
    conv = np.asarray(converted, dtype=bool)
    names = sorted(set(lab.tolist()))
    per: dict[str, dict[str, float | int]] = {}
    table = []
    for name in names:
        mask = lab == name
        n, k = int(mask.sum()), int(conv[mask].sum())
        low, high = wilson_interval(k, n) or (0.0, 1.0)
        per[name] = {
            "n": n,
            "conversions": k,
            "rate": _r(k / n),
            "wilson_low": _r(low),
            "wilson_high": _r(high),
        }
        table.append([k, n - k])
    test: dict[str, float | int | None] = {"statistic": None, "dof": None, "p_value": None}
    if len(names) > 1 and conv.any() and not conv.all():
        stat, p, dof, _ = chi2_contingency(np.array(table), correction=False)
        test = {"statistic": _r(float(stat)), "dof": int(dof), "p_value": float(f"{p:.6g}")}
    return {"personas": per, "chi_square": test}


def _r(x: float, digits: int = 6) -> float:
    return float(round(float(x), digits))


# --------------------------------------------------------------------------- naming


def typical_session(
    center: Sequence[float] | FloatArray,
    scale: Sequence[float] | FloatArray,
    mean_z: Sequence[float] | FloatArray,
) -> dict[str, float]:
    """A centroid read back in pages and seconds: ``expm1`` of its log-scale coordinates (the
    geometric-mean-like typical session of the persona)."""
    coords = zip(FEATURES, center, scale, mean_z, strict=True)
    return {f: float(math.expm1(c + s * m)) for f, c, s, m in coords}


def _base_name(typical: Mapping[str, float]) -> tuple[str, str]:
    pages = sum(typical[f"{f}_pages"] for f in FAMILIES)
    if pages < GLANCE_PAGES:
        return "glancer", f"typical session sees {pages:.1f} < {GLANCE_PAGES:g} pages"
    info = typical["informational_pages"]
    if info >= READS_INFO_PAGES:
        return "researcher", f"reads informational pages ({info:.1f} >= {READS_INFO_PAGES:g})"
    admin = typical["administrative_pages"]
    if admin >= USES_ADMIN_PAGES:
        return "shopper", (
            f"uses account/cart/checkout pages ({admin:.1f} >= {USES_ADMIN_PAGES:g}), "
            f"few informational ({info:.1f})"
        )
    return "browser", f"product pages only ({admin:.1f} admin, {info:.1f} informational)"


def name_personas(typicals: Sequence[Mapping[str, float]]) -> list[tuple[str, str]]:
    """Names (and the rule that gave each) for centroids read back as typical sessions.

    Rules, first match wins: fewer than ``GLANCE_PAGES`` pages in all -> ``glancer``; at
    least ``READS_INFO_PAGES`` informational page -> ``researcher``; at least
    ``USES_ADMIN_PAGES`` administrative page (account, cart, checkout, help) -> ``shopper``;
    otherwise ``browser``. When several centroids get the same name, the one with fewer pages
    keeps it and the others get ``_2``, ``_3``... in order of depth, so names are unique and
    reproducible.
    """
    based = [_base_name(t) for t in typicals]
    depth = [sum(t[f"{f}_pages"] for f in FAMILIES) for t in typicals]
    out = [("", "")] * len(typicals)
    for base in dict.fromkeys(name for name, _ in based):
        members = sorted((i for i, (n, _) in enumerate(based) if n == base), key=depth.__getitem__)
        for rank, i in enumerate(members):
            suffix = "" if rank == 0 else f"_{rank + 1}"
            out[i] = (base + suffix, based[i][1])
    return out


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class SessionTable:
    """Finished sessions as model features, with their outcome and what describes them."""

    x: FloatArray  # n x 6 raw features, ``FEATURES`` order
    converted: npt.NDArray[np.bool_]
    new_visitor: npt.NDArray[np.bool_]
    weekend: npt.NDArray[np.bool_]
    source: dict[str, Any]

    def subset(self, idx: npt.NDArray[Any]) -> SessionTable:
        return SessionTable(
            self.x[idx],
            self.converted[idx],
            self.new_visitor[idx],
            self.weekend[idx],
            {**self.source, "subset_rows": len(idx)},
        )


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise SourceDataError(f"{path}: file not found")
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def _truthy(values: Any) -> npt.NDArray[np.bool_]:
    return np.asarray(values.astype(str).str.strip().str.upper().isin(["TRUE", "1"]))


def load_uci(path: Path | str) -> SessionTable:
    """The UCI Online Shoppers file (csv or csv.gz, CRLF or LF) as a ``SessionTable``.

    Rows with a missing feature are dropped (14 in the published file); negative durations
    (-1, 33 rows) are Google Analytics' "unknown" and read as 0 seconds; exact duplicates (119)
    are kept, because they are one-page bounces whose aggregates are bound to coincide.
    The fingerprint is the SHA-256 of the decompressed bytes.
    """
    import io

    import pandas as pd

    path = Path(path)
    data = _read_bytes(path)
    frame = pd.read_csv(io.BytesIO(data))
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in UCI_REQUIRED if c not in frame.columns]
    if missing:
        raise SourceDataError(f"{path}: missing columns {missing}")
    rows = len(frame)
    duplicates = int(frame.duplicated().sum())
    frame = frame.dropna(subset=list(UCI_FEATURE_COLUMNS))
    x = frame[list(UCI_FEATURE_COLUMNS)].to_numpy(dtype=float)
    negative = int((x < 0).any(axis=1).sum())
    x = np.clip(x, 0.0, None)
    converted = _truthy(frame["Revenue"])
    source = {
        "file": path.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "rows": rows,
        "rows_used": len(frame),
        "dropped_missing": rows - len(frame),
        "negative_durations_as_zero": negative,
        "exact_duplicates_kept": duplicates,
        "conversions": int(converted.sum()),
    }
    if len(frame) == 0:
        raise SourceDataError(f"{path}: no usable rows")
    return SessionTable(
        x,
        converted,
        np.asarray(frame["VisitorType"].astype(str) == "New_Visitor"),
        _truthy(frame["Weekend"]),
        source,
    )


# --------------------------------------------------------------------------- learning


def standardise(x: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``log1p`` then z-scores; returns (z, center, scale)."""
    logx = np.log1p(x)
    center = logx.mean(axis=0)
    scale = logx.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return (logx - center) / scale, center, scale


def select_k(z: FloatArray, k_range: tuple[int, int] = K_RANGE, seed: int = SEED) -> dict[str, Any]:
    """Silhouette and bootstrap stability for each k; the chosen k.

    The chosen k has the highest silhouette among the k whose mean bootstrap ARI reaches
    ``MIN_STABILITY`` (a taxonomy that changes when the sample does is no taxonomy); if none
    does, the highest silhouette overall.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, silhouette_score

    rng = np.random.default_rng(seed)
    sample = min(SILHOUETTE_SAMPLE, len(z))
    silhouette: dict[str, float] = {}
    stability: dict[str, float] = {}
    for k in range(k_range[0], k_range[1] + 1):
        if k >= len(z):
            break
        base = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(z)
        silhouette[str(k)] = _r(
            silhouette_score(z, base.labels_, sample_size=sample, random_state=seed), 4
        )
        aris = []
        for b in range(BOOTSTRAPS):
            idx = rng.integers(0, len(z), len(z))
            boot = KMeans(n_clusters=k, n_init=2, random_state=seed + 1 + b).fit(z[idx])
            aris.append(adjusted_rand_score(base.labels_, boot.predict(z)))
        stability[str(k)] = _r(float(np.mean(aris)), 4)
    if not silhouette:
        raise ValueError(f"too few sessions ({len(z)}) for k in {k_range}")
    stable = [k for k in silhouette if stability[k] >= MIN_STABILITY] or list(silhouette)
    chosen = max(stable, key=lambda k: (silhouette[k], -int(k)))
    return {
        "criterion": "silhouette (k-means), among k with bootstrap ARI >= "
        f"{MIN_STABILITY:g} ({BOOTSTRAPS} resamples)",
        "k_range": list(k_range),
        "seed": seed,
        "silhouette": silhouette,
        "stability_ari": stability,
        "k": int(chosen),
    }


def _profile(table: SessionTable, mask: npt.NDArray[np.bool_]) -> dict[str, float]:
    """What a persona's sessions look like (medians, shares): descriptive, not model input."""
    x = table.x[mask]
    pages = x[:, :3].sum(axis=1)
    secs = x[:, 3:].sum(axis=1)
    profile = {f"median_{f}": _r(float(np.median(x[:, i])), 2) for i, f in enumerate(FEATURES)}
    profile.update(
        median_pages=_r(float(np.median(pages)), 2),
        median_seconds=_r(float(np.median(secs)), 2),
        share_with_informational=_r(float((x[:, 1] > 0).mean()), 4),
        share_with_administrative=_r(float((x[:, 0] > 0).mean()), 4),
        new_visitor_share=_r(float(table.new_visitor[mask].mean()), 4),
        weekend_share=_r(float(table.weekend[mask].mean()), 4),
    )
    return profile


@dataclass(frozen=True)
class Fit:
    """A learned taxonomy on one table: labels (persona index per row) and its document."""

    labels: npt.NDArray[np.int_]
    document: dict[str, Any]


def fit(
    table: SessionTable,
    *,
    k_range: tuple[int, int] = K_RANGE,
    seed: int = SEED,
    k: int | None = None,
) -> Fit:
    """Learn the taxonomy and the classifier's parameters from finished sessions.

    Runs single-threaded: on a busy two-core machine OpenMP's spin-waiting made k-means about
    fifty times slower, and one thread keeps the result independent of the machine.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _fit(table, k_range=k_range, seed=seed, k=k)


def _fit(table: SessionTable, *, k_range: tuple[int, int], seed: int, k: int | None) -> Fit:
    from sklearn.cluster import KMeans

    z, center, scale = standardise(table.x)
    selection: dict[str, Any] = (
        select_k(z, k_range, seed) if k is None else {"k": k, "criterion": "given"}
    )
    km = KMeans(n_clusters=int(selection["k"]), n_init=10, random_state=seed).fit(z)
    typicals = [typical_session(center, scale, c) for c in km.cluster_centers_]
    order = sorted(range(len(typicals)), key=lambda i: (_depth(typicals[i]), i))
    remap = np.empty(len(order), dtype=int)
    remap[order] = np.arange(len(order))
    labels = remap[km.labels_]
    means = km.cluster_centers_[order]
    named = name_personas([typicals[i] for i in order])
    d2 = ((z[:, None, :] - means[None, :, :]) ** 2).sum(axis=2)
    variance = float(d2[np.arange(len(z)), labels].mean() / z.shape[1])
    return Fit(
        labels, _document(table, labels, means, center, scale, variance, d2, named, selection)
    )


def _depth(typical: Mapping[str, float]) -> float:
    return sum(typical[f"{f}_pages"] for f in FAMILIES)


def _document(
    table: SessionTable,
    labels: npt.NDArray[np.int_],
    means: FloatArray,
    center: FloatArray,
    scale: FloatArray,
    variance: float,
    d2: FloatArray,
    named: list[tuple[str, str]],
    selection: dict[str, Any],
) -> dict[str, Any]:
    names = [n for n, _ in named]
    conversion = conversion_by_persona(np.array(names)[labels], table.converted)
    total_pages = table.x[:, :3].sum(axis=1)
    by_pages = []
    for n in range(MIN_PAGES):
        keep = total_pages >= n
        counts = np.bincount(labels[keep], minlength=len(names))
        by_pages.append([_r(c / max(keep.sum(), 1)) for c in counts])
    personas = []
    for i, (name, rule) in enumerate(named):
        mask = labels == i
        typical = typical_session(center, scale, means[i])
        personas.append(
            {
                "name": name,
                "rule": rule,
                "prior": _r(mask.mean()),
                "size": int(mask.sum()),
                "mean_z": [_r(v) for v in means[i]],
                "centroid": {f: _r(v, 2) for f, v in typical.items()},
                "conversion": conversion["personas"][name],
                "profile": _profile(table, mask),
            }
        )
    return {
        "format": FORMAT,
        "features": list(FEATURES),
        "transform": "z = (log1p(x) - center) / scale",
        "center": [_r(v) for v in center],
        "scale": [_r(v) for v in scale],
        "variance": _r(variance),
        "atypical_d2": _r(float(np.quantile(d2.min(axis=1), ATYPICAL_QUANTILE))),
        "min_pages": MIN_PAGES,
        "confident_p": CONFIDENT_P,
        "priors_by_pages": by_pages,
        "personas": personas,
        "chi_square": conversion["chi_square"],
        "selection": selection,
        "training": table.source,
        "ecom": None,
        "trained_with": _versions(),
    }


def _versions() -> dict[str, str]:
    import sklearn

    return {"numpy": np.__version__, "scikit-learn": sklearn.__version__}


# --------------------------------------------------------------------------- ecom check

# The retentioneering e-commerce events as live storefront events: page kinds to page types
# (reviews and comparisons are product pages; a promo page lists products), actions to
# actions. Error pages, payment errors, checkout bugs and wishlist adds have no live kind and
# are skipped (the time on them counts to the page before).
ECOM_EVENTS: Final[dict[str, tuple[EventKind, PageType | None]]] = {
    "home": ("page_view", "home"),
    "account_page": ("page_view", "account"),
    "cart": ("page_view", "cart"),
    "shipping_details": ("page_view", "checkout"),
    "payment_details": ("page_view", "checkout"),
    "delivery_choice": ("page_view", "checkout"),
    "payment_choice": ("page_view", "checkout"),
    "support_chat": ("page_view", "help"),
    "catalog": ("page_view", "category"),
    "promo_page": ("page_view", "category"),
    "search": ("page_view", "search"),
    "filter_results": ("page_view", "search"),
    "product_view": ("page_view", "product"),
    "review_page": ("page_view", "product"),
    "compare": ("page_view", "product"),
    "add_to_cart": ("add_to_cart", None),
    "purchase": ("purchase", None),
    "payment_done": ("purchase", None),
}


@dataclass(frozen=True)
class EcomSessions:
    """The ecom clickstream folded into live session features, with outcomes."""

    features: list[SessionFeatures]
    converted: npt.NDArray[np.bool_]
    lifecycle: list[str]
    source: dict[str, Any]


def load_ecom(path: Path | str) -> EcomSessions:
    """Fold the ecom clickstream through ``events.fold``, as the feature store would."""
    import io

    import pandas as pd

    path = Path(path)
    data = _read_bytes(path)
    frame = pd.read_csv(io.BytesIO(data))
    need = ["session_id", "event", "timestamp", "platform", "acquisition_channel"]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise SourceDataError(f"{path}: missing columns {missing}")
    frame["ts"] = pd.to_datetime(frame["timestamp"])
    frame = frame.sort_values(["session_id", "ts"], kind="stable")
    if "user_lifecycle" not in frame.columns:
        frame["user_lifecycle"] = ""
    cols = ["session_id", "event", "ts", "platform", "acquisition_channel", "user_lifecycle"]
    current: SessionFeatures | None = None
    features: list[SessionFeatures] = []
    converted: list[bool] = []
    lifecycle: list[str] = []
    skipped = 0
    for j, (sid, event, ts, platform, channel, life) in enumerate(
        zip(*(frame[c].tolist() for c in cols), strict=True)
    ):
        if current is None or current.session_id != str(sid):
            current = SessionFeatures(session_id=str(sid))
            features.append(current)
            converted.append(False)
            lifecycle.append(str(life))
        mapped = ECOM_EVENTS.get(str(event))
        if mapped is None:
            skipped += 1
            continue
        current = fold(current, _ecom_event(current.session_id, j, mapped, ts, platform, channel))
        features[-1] = current
        converted[-1] = converted[-1] or mapped[0] == "purchase"
    source = {
        "file": path.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "events": len(frame),
        "events_skipped": skipped,
        "sessions": len(features),
    }
    return EcomSessions(features, np.array(converted, dtype=bool), lifecycle, source)


def _ecom_event(
    sid: str,
    j: int,
    mapped: tuple[EventKind, PageType | None],
    ts: Any,
    platform: Any,
    channel: Any,
) -> Event:
    kind, page_type = mapped
    return Event(
        event_id=f"ecom-{j:08d}",
        session_id=sid,
        kind=kind,
        ts=ts.to_pydatetime(),
        page_type=page_type,
        device=platform if platform in ("desktop", "mobile", "tablet") else None,
        utm_source=str(channel),
    )


def _shares(values: Sequence[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return {k: _r(c / len(values), 4) for k, c in sorted(out.items())}


def ecom_summary(model: PersonaModel, ecom: EcomSessions) -> dict[str, Any]:
    """The learned personas applied to the ecom sessions: conversion per persona (with the
    chi-square test), and each persona's device, channel and lifecycle mix, which UCI lacks."""
    labels = [max(p, key=p.__getitem__) for p in map(model.posterior, ecom.features)]
    summary = conversion_by_persona(labels, ecom.converted)
    mixes: dict[str, dict[str, dict[str, float]]] = {}
    for name in sorted(set(labels)):
        idx = [i for i, lab in enumerate(labels) if lab == name]
        mixes[name] = {
            "device": _shares([ecom.features[i].device or "unknown" for i in idx]),
            "channel": _shares([ecom.features[i].channel or "unknown" for i in idx]),
            "lifecycle": _shares([ecom.lifecycle[i] for i in idx]),
        }
    return {"source": ecom.source, **summary, "mix": mixes}


# --------------------------------------------------------------------------- entry points


def train(
    uci_path: Path | str,
    ecom_path: Path | str | None = None,
    *,
    k_range: tuple[int, int] = K_RANGE,
    seed: int = SEED,
) -> PersonaModel:
    """Learn the persona model from the UCI file; with ``ecom_path``, also record how its
    personas convert and where they come from on the ecom clickstream."""
    table = load_uci(uci_path)
    model = PersonaModel(fit(table, k_range=k_range, seed=seed).document)
    if ecom_path is not None:
        doc = dict(model.document)
        doc["ecom"] = ecom_summary(model, load_ecom(ecom_path))
        model = PersonaModel(doc)
    return model


def summary(model: PersonaModel) -> dict[str, Any]:
    """The figures a person reads first: k, personas with size and conversion, the test."""
    doc = model.document
    return {
        "k": len(model.names),
        "selection": doc["selection"],
        "personas": {
            p["name"]: {"size": p["size"], "conversion": p["conversion"], "rule": p["rule"]}
            for p in doc["personas"]
        },
        "chi_square": doc["chi_square"],
        "training": doc["training"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cxagent.storefront.persona train --uci PATH [--ecom PATH] --out PATH``."""
    parser = argparse.ArgumentParser(prog="python -m cxagent.storefront.persona")
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="learn the persona model and write its JSON")
    tr.add_argument("--uci", required=True, type=Path, help="online_shoppers_intention.csv[.gz]")
    tr.add_argument("--ecom", type=Path, default=None, help="ecom.csv[.gz] (optional check)")
    tr.add_argument("--out", required=True, type=Path, help="where to write the model JSON")
    tr.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    try:
        model = train(args.uci, args.ecom, seed=args.seed)
    except CXAgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model.save(args.out)
    print(json.dumps({"out": str(args.out), **summary(model)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
