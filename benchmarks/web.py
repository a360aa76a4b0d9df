"""Benchmark: page latency of the web workbench over HTTP, once the views are stored.

    python benchmarks/web.py --data demo-data [--requests 200] [--rebuild]

Builds the stored views when the dataset's store has none (or with ``--rebuild``), starts the
real application under uvicorn on a free loopback port, signs in as the ML engineer (bearer
token) and requests each page sequentially over one keep-alive connection: the dashboard,
every incident's detail, RCA and recommendations pages, the PM summary and the merchant
report, plus the dashboard's JSON twin. Target (issue 6): dashboard and incident pages at most
150 ms at the 95th percentile. Prints JSON: per page kind the p50, p95 and p99 in ms and the
response size.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from cxagent.store.db import default_url
from cxagent.web.app import create_app
from cxagent.web.server import running
from cxagent.web.settings import Settings
from cxagent.workbench.build import build
from cxagent.workbench.reader import Workbench


def _pages(workbench: Workbench) -> dict[str, list[str]]:
    ids = [inc["id"] for inc in workbench.list_incidents()]
    return {
        "dashboard": ["/"],
        "incident": [f"/incidents/{i}" for i in ids],
        "rca": [f"/incidents/{i}/rca" for i in ids],
        "recommendations": [f"/incidents/{i}/recommendations" for i in ids],
        "summary": ["/summary"],
        "merchants": ["/merchants"],
        "api_overview": ["/api/overview"],
    }


def measure(base: str, token: str, pages: dict[str, list[str]], n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "gzip"}
    with httpx.Client(base_url=base, headers=headers, timeout=30.0) as client:
        for kind, paths in pages.items():
            for path in paths:  # warm up: templates compiled, connections open
                client.get(path).raise_for_status()
            times, size = [], 0
            for i in range(n):
                path = paths[i % len(paths)]
                start = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - start) * 1000)
                response.raise_for_status()
                size = max(size, len(response.content))
            t = np.array(times)
            out[kind] = {
                "requests": n,
                "p50_ms": round(float(np.percentile(t, 50)), 1),
                "p95_ms": round(float(np.percentile(t, 95)), 1),
                "p99_ms": round(float(np.percentile(t, 99)), 1),
                "max_bytes": size,
            }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("demo-data"))
    parser.add_argument("--requests", type=int, default=200, help="requests per page kind")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the stored views")
    args = parser.parse_args(argv)
    url = default_url(args.data)
    workbench = Workbench.from_url(url)
    if args.rebuild or workbench.get_analysis("overview") is None:
        start = time.perf_counter()
        build(args.data, store_url=url)
        print(f"built the views in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    settings = Settings()
    with running(create_app(settings, workbench)) as base:
        result = measure(base, settings.engineer_token, _pages(workbench), args.requests)
    print(json.dumps({"data": str(args.data), "pages": result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
