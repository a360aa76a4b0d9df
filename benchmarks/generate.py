"""Benchmark: generate N orders with all tables, streaming by day on the default 2 workers.

    python benchmarks/generate.py --orders 10000000 --days 30 [--out DIR] [--workers 2]

Prints JSON: wall seconds, orders per second, peak resident memory of the parent and of the
largest worker, rows per table and bytes on disk. The target (issue 2) is 10 million orders
in at most 180 s on 2 cores with memory bounded by one day per worker.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

from cxagent.data.scenario.generator import generate
from cxagent.data.scenario.spec import parse_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="keep the dataset here")
    args = parser.parse_args()

    spec = parse_spec(
        {
            "name": "bench-generate",
            "seed": 11,
            "start": "2024-01-01",
            "days": args.days,
            "orders_per_day": -(-args.orders // args.days),
            "interventions": [
                {
                    "cause": "batching_policy",
                    "start": "2024-01-20T00:00",
                    "scope": {"region": "SF", "category": "grocery"},
                }
            ],
        }
    )
    tmp = Path(tempfile.mkdtemp(prefix="cxbench-"))
    out = args.out or tmp / "data"
    started = time.perf_counter()
    truth = generate(spec, out, overwrite=True, workers=args.workers)
    seconds = time.perf_counter() - started
    size = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    orders = truth["rows"]["orders"]
    print(
        json.dumps(
            {
                "benchmark": "generate",
                "orders": orders,
                "days": args.days,
                "workers": args.workers,
                "seconds": round(seconds, 1),
                "orders_per_second": round(orders / seconds),
                "peak_rss_mb_parent": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                "peak_rss_mb_largest_worker": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
                // 1024,
                "rows": truth["rows"],
                "bytes_on_disk": size,
                "machine": f"{platform.machine()}, {platform.python_version()}",
            },
            indent=2,
        )
    )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
