"""Benchmark: the storefront persona model on the UCI Online Shoppers data (issue 7).

    python benchmarks/persona.py --uci ../shared/data/real/uci_online_shoppers/online_shoppers_intention.csv.gz \\
        [--ecom ../shared/data/ecom_sessions/ecom.csv.gz] [--calls 100000]

Trains the model exactly as ``python -m cxagent.storefront.persona train`` does, then reports:

- the chosen k with the silhouette and bootstrap stability of every k tried;
- persona sizes and conversion (UCI ``Revenue``, Sakar et al. 2019) with Wilson intervals, and
  the chi-square p of persona x conversion; the same among sessions with no administrative
  page, where buying cannot be what put a session in its persona (if the shop's checkout pages
  were administrative ones, shopper and researcher conversion would be partly mechanical);
- held-out agreement: the pipeline refitted on 75% of the sessions (k fixed), classifying the
  other 25% through the live path (``uci_session`` -> ``posterior``), against the cluster
  labels of the full-data taxonomy; with the log-loss of its probabilities and how often the
  live ``classify`` is confident;
- ``classify()`` latency in microseconds, one call at a time, over in-progress synthetic live
  sessions (``sessions.py``, cut after a random number of events);
- whether the shipped JSON is what this training produces.

Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from cxagent.storefront import persona as P
from cxagent.storefront.events import SessionFeatures, fold
from cxagent.storefront.sessions import generate_sessions

TEST_SHARE = 0.25


def machine() -> dict[str, Any]:
    mem_gb = None
    try:
        with open("/proc/meminfo") as fh:
            kb = int(fh.readline().split()[1])
        mem_gb = round(kb / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "memory_gb": mem_gb,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def holdout(table: P.SessionTable, k: int) -> dict[str, Any]:
    """Refit on 75% (stratified by cluster), classify the other 25% through the live path."""
    from sklearn.model_selection import train_test_split

    full = P.fit(table, k=k)
    names = np.array([p["name"] for p in full.document["personas"]])
    truth = names[full.labels]
    idx = np.arange(len(truth))
    train, test = train_test_split(
        idx, test_size=TEST_SHARE, random_state=P.SEED, stratify=full.labels
    )
    model = P.PersonaModel(P.fit(table.subset(train), k=k).document)
    sessions = [P.uci_session(table.x[i]) for i in test]
    posts = [model.posterior(f) for f in sessions]
    pred = np.array([max(p, key=p.__getitem__) for p in posts])
    eps = 1e-12
    log_loss = -float(
        np.mean([np.log(max(p.get(t, 0.0), eps)) for p, t in zip(posts, truth[test], strict=True)])
    )
    live = [model.classify(f) for f in sessions]
    long = np.array([f.page_views >= P.MIN_PAGES for f in sessions])
    live_pred = np.array([r.persona for r in live])
    confusion = Counter(zip(truth[test].tolist(), pred.tolist(), strict=True))
    return {
        "train_sessions": len(train),
        "test_sessions": len(test),
        "names_reproduced": sorted(model.names) == sorted(names.tolist()),
        "agreement": round(float(np.mean(pred == truth[test])), 4),
        "log_loss": round(log_loss, 4),
        "classify_agreement_3plus_pages": round(
            float(np.mean(live_pred[long] == truth[test][long])), 4
        ),
        "classify_reasons": dict(Counter(r.reason for r in live)),
        "confusion": {f"{t}->{p}": n for (t, p), n in sorted(confusion.items())},
        "test_conversion_by_classifier": P.conversion_by_persona(pred, table.converted[test]),
    }


def without_admin(model: P.PersonaModel, table: P.SessionTable) -> dict[str, Any]:
    """Conversion per persona among sessions that never saw an administrative page."""
    keep = table.x[:, 0] == 0
    labels = [
        max(p, key=p.__getitem__)
        for p in (model.posterior(P.uci_session(r)) for r in table.x[keep])
    ]
    return {"sessions": int(keep.sum()), **P.conversion_by_persona(labels, table.converted[keep])}


def live_pool(n: int, seed: int) -> list[SessionFeatures]:
    """In-progress live sessions: synthetic visits cut after a random number of events."""
    rng = random.Random(seed)
    pool = []
    for s in generate_sessions(n, seed=seed):
        f = SessionFeatures(session_id=s.session_id)
        for e in s.events[: rng.randint(1, len(s.events))]:
            f = fold(f, e)
        pool.append(f)
    return pool


def latency(model: P.PersonaModel, pool: list[SessionFeatures], calls: int) -> dict[str, Any]:
    for f in pool[:1000]:  # warm up
        model.classify(f)
    times = np.empty(calls, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(calls):
        f = pool[i % len(pool)]
        t0 = clock()
        model.classify(f)
        times[i] = clock() - t0
    us = times / 1000.0
    return {
        "calls": calls,
        "p50_us": round(float(np.percentile(us, 50)), 2),
        "p99_us": round(float(np.percentile(us, 99)), 2),
        "max_us": round(float(us.max()), 1),
        "mean_us": round(float(us.mean()), 2),
        "reasons": dict(Counter(model.classify(f).reason for f in pool)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--uci", type=Path, required=True)
    ap.add_argument("--ecom", type=Path, default=None)
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--pool", type=int, default=3000, help="synthetic live sessions to cycle")
    args = ap.parse_args()

    started = time.perf_counter()
    model = P.train(args.uci, args.ecom)
    train_s = time.perf_counter() - started
    doc = model.document
    table = P.load_uci(args.uci)
    k = len(model.names)
    out: dict[str, Any] = {
        "command": " ".join(["python", *sys.argv]),
        "machine": machine(),
        "train_seconds": round(train_s, 1),
        "training": doc["training"],
        "k": k,
        "selection": doc["selection"],
        "personas": {
            p["name"]: {
                "size": p["size"],
                "share": p["prior"],
                "rule": p["rule"],
                "centroid": p["centroid"],
                "conversion": p["conversion"],
            }
            for p in doc["personas"]
        },
        "chi_square": doc["chi_square"],
        "without_administrative_pages": without_admin(model, table),
        "holdout": holdout(table, k),
        "latency": latency(model, live_pool(args.pool, seed=1), args.calls),
        "ecom": None
        if doc["ecom"] is None
        else {key: doc["ecom"][key] for key in ("source", "personas", "chi_square")},
    }
    shipped = P.shipped_model().document
    out["shipped_model_matches"] = {
        "training_sha256": shipped["training"]["sha256"] == doc["training"]["sha256"],
        "personas": shipped["personas"] == doc["personas"],
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
