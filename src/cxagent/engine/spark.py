"""A Spark session for the engine: local by default, a cluster or Spark Connect by URL.

``CXAGENT_SPARK_MASTER`` (or ``connect(..., spark_master=...)``) picks where it runs:
``local[2]`` (default: the machine's cores, no cluster), ``spark://host:7077`` (a standalone
cluster; any master URL ``SparkSession.builder.master`` takes) or ``sc://host:15002`` (Spark
Connect: the driver runs on the cluster). The session keeps wall-clock timestamps as the
data holds them (time zone UTC, like DuckDB's naive timestamps), writes nothing next to the
working directory (its warehouse is a temporary directory) and has no web UI. Locally the
driver's JVM gets ``CXAGENT_SPARK_DRIVER_MEMORY`` (default 6g) of heap.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Final

SPARK_MASTER_ENV: Final = "CXAGENT_SPARK_MASTER"
DEFAULT_MASTER: Final = "local[2]"
DRIVER_MEMORY_ENV: Final = "CXAGENT_SPARK_DRIVER_MEMORY"
# local mode runs the executors inside the driver's JVM, whose default heap (1 GB) runs out
# on 10 M orders; the cube also comes back to the driver as Arrow
DEFAULT_DRIVER_MEMORY: Final = "6g"


def spark_session(master: str | None = None, *, cores: int = 2) -> Any:
    """The process's Spark session (``getOrCreate``: one per process, reused)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # the optional extra is not installed
        raise ImportError(
            "engine 'spark' needs pyspark: pip install 'cxagent[spark]' (and Java 17)"
        ) from exc
    # launched by spark-submit (it starts the JVM and hands over its gateway): its master
    # and settings rule unless a master is named here
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
    master = master or os.environ.get(SPARK_MASTER_ENV) or (None if submitted else DEFAULT_MASTER)
    active = SparkSession.getActiveSession()
    if active is not None:  # one session a process: its settings were fixed when it started
        return active
    builder = SparkSession.builder.appName("cxagent")
    if master is None:
        return builder.config("spark.sql.session.timeZone", "UTC").getOrCreate()
    builder = builder.remote(master) if master.startswith("sc://") else builder.master(master)
    if not master.startswith("sc://"):
        warehouse = tempfile.mkdtemp(prefix="cxagent-spark-")
        memory = os.environ.get(DRIVER_MEMORY_ENV) or DEFAULT_DRIVER_MEMORY
        builder = (
            builder.config("spark.ui.enabled", "false")
            .config("spark.driver.memory", memory)
            .config("spark.driver.maxResultSize", "0")  # the cube is collected: no cap
            .config("spark.sql.warehouse.dir", warehouse)
            .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={warehouse}")
        )
    return (
        builder.config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(max(2 * cores, 2)))
        .getOrCreate()
    )
