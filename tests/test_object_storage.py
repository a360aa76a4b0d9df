"""A dataset on object storage: read through fsspec from a local S3-compatible server (moto in
server mode, started here), it gives what the same dataset gives from a directory; what the
agent writes stays local; a missing extra or an unreadable URL says what to do."""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from cxagent.cli import app
from cxagent.engine.connection import ENGINE_ENV, connect
from cxagent.engine.storage import Location, remote_url
from cxagent.errors import CXAgentError, DataValidationError
from cxagent.incidents import detect_incidents
from cxagent.rca.orders import order_frame

BUCKET = "cx-lake"
URL = f"s3://{BUCKET}/marketplace/v1"


def cloud_missing(reason: str) -> None:
    """No cloud extra: a failure where CI is set (`make` installs it), a skip elsewhere."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason} (required when CI is set: pip install -e '.[dev,cloud]')")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    """A moto S3 server on a free loopback port, the AWS_* environment pointing at it (fake
    credentials; no instance-metadata look-up), and an fsspec filesystem on it."""
    try:
        import fsspec
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        cloud_missing(f"the cloud extra or moto is not installed: {exc}")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request else
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        mp.setenv(ENGINE_ENV, "duckdb")
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir(BUCKET)
        try:
            yield fs
        finally:
            server.stop()


@pytest.fixture(scope="module")
def s3_dataset(s3: Any, incident_dataset: Path) -> str:
    """The same dataset uploaded under ``URL``; returns the URL."""
    s3.put(f"{incident_dataset}/", URL.removeprefix("s3://"), recursive=True)
    return URL


def bucket_keys(fs: Any) -> list[str]:
    fs.invalidate_cache()
    return sorted(fs.find(BUCKET))


def feed(reports: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (r.draft.slice, r.draft.window_start, r.draft.detected_at, r.draft.severity, r.label)
        for r in reports
    ]


def test_urls_are_recognised_and_spelled_for_each_engine() -> None:
    assert remote_url("s3://bucket/a/b/") == "s3://bucket/a/b"
    assert remote_url(Path("s3://bucket/a/b")) == "s3://bucket/a/b"  # Path folds the "//"
    assert remote_url("S3A://bucket/a") == "s3a://bucket/a"
    assert remote_url("gs://bucket/a") == "gs://bucket/a"
    assert remote_url("/data/cx") is None and remote_url("demo-data") is None
    assert remote_url("file:///data/cx") is None  # not object storage: a local path
    loc = Location.of("s3a://bucket/cx")
    assert loc.remote and loc.child("orders") == "s3://bucket/cx/orders"
    assert loc.spark_url("orders") == "s3a://bucket/cx/orders"
    assert Location.of("gs://b/cx").spark_url("orders") == "gs://b/cx/orders"
    local = Location.of("/data/cx")
    assert not local.remote and local.spark_url("orders") == "/data/cx/orders"
    with pytest.raises(CXAgentError, match="names no bucket"):
        remote_url("s3://")


def test_detection_over_s3_gives_the_same_incidents_as_the_directory(
    s3: Any, incident_dataset: Path, s3_dataset: str, tmp_path: Path
) -> None:
    before = bucket_keys(s3)
    local = detect_incidents(incident_dataset, store_url=f"sqlite:///{tmp_path / 'local.db'}")
    remote = detect_incidents(s3_dataset, store_url=f"sqlite:///{tmp_path / 'remote.db'}")
    assert any(r.draft.slice.get("region") == "SF" for r in local), "the planted change"
    assert feed(remote) == feed(local)
    assert [r.draft.affected_orders for r in remote] == [r.draft.affected_orders for r in local]
    assert bucket_keys(s3) == before  # nothing written to the bucket


def test_the_slice_frame_over_s3_is_the_one_from_the_directory(
    s3_dataset: str, incident_dataset: Path
) -> None:
    import datetime as dt

    where = {"region": "SF", "category": "grocery"}
    start, end = dt.datetime(2024, 3, 18), dt.datetime(2024, 3, 26)
    local = order_frame(connect(incident_dataset), where, start, end, outcomes=True)
    remote = order_frame(connect(s3_dataset), where, start, end, outcomes=True)
    assert len(local) > 500
    pd.testing.assert_frame_equal(remote, local)


def test_the_command_line_reads_s3_and_writes_its_store_locally(
    s3: Any,
    s3_dataset: str,
    incident_dataset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # the default store of a remote dataset: ./cxagent.db
    monkeypatch.delenv("CXAGENT_DB_URL", raising=False)
    before = bucket_keys(s3)
    runner = CliRunner()
    remote = runner.invoke(app, ["detect", "--data", s3_dataset, "--json"])
    assert remote.exit_code == 0, remote.output
    assert (tmp_path / "cxagent.db").exists()
    local = runner.invoke(
        app,
        ["detect", "--data", str(incident_dataset), "--json", "--db", f"sqlite:///{tmp_path}/l.db"],
    )
    assert local.exit_code == 0, local.output

    def incidents(out: str) -> list[tuple[Any, ...]]:
        import json

        return [
            (i["slice"], i["window_start"], i["detected_at"], i["severity"])
            for i in json.loads(out)["incidents"]
        ]

    assert incidents(remote.output) == incidents(local.output) != []
    assert bucket_keys(s3) == before


def test_a_missing_extra_or_an_unreadable_url_says_what_to_do(
    s3: Any, s3_dataset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as mp:  # fsspec not installed
        mp.setitem(sys.modules, "fsspec", None)
        with pytest.raises(CXAgentError, match=r"s3://cx-lake/marketplace/v1: .*cxagent\[cloud\]"):
            connect(s3_dataset)
        bad = CliRunner().invoke(app, ["detect", "--data", s3_dataset])
        assert bad.exit_code == 2 and "cxagent[cloud]" in bad.output
    with pytest.raises(DataValidationError, match="s3://cx-lake/nothing-here/dataset.json"):
        connect(f"s3://{BUCKET}/nothing-here")
    # the footers are checked as a local dataset's are, the file named by its URL
    s3.pipe(f"{BUCKET}/broken/dataset.json", s3.cat(f"{BUCKET}/marketplace/v1/dataset.json"))
    s3.pipe(f"{BUCKET}/broken/orders/date=2024-03-04/part-0.parquet", b"not parquet")
    with pytest.raises(DataValidationError, match="s3://cx-lake/broken/orders/date=2024-03-04"):
        connect(f"s3://{BUCKET}/broken")
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    with monkeypatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
        mp.setenv("AWS_MAX_ATTEMPTS", "1")
        with pytest.raises(CXAgentError, match=r"s3://cx-lake/marketplace/v1.*AWS_ENDPOINT_URL"):
            connect(s3_dataset)


def test_spark_is_handed_the_s3a_url_and_says_what_the_cluster_needs(
    s3_dataset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spark reads s3a:// through the cluster's hadoop-aws, which a local pyspark lacks (and
    cannot fetch here): the error names the URL and the connector. Reading with it is not
    tested here."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        pytest.skip("pyspark is not installed")
    engine = connect(s3_dataset, engine="spark")  # the footers are checked through fsspec
    with pytest.raises(CXAgentError, match=r"s3a://cx-lake/marketplace/v1/orders") as err:
        engine.table("orders").count().execute()
    assert "hadoop-aws" in str(err.value) or "fs.s3a" in str(err.value)
