"""Where a dataset is read from: a local directory, or a folder on object storage.

``--data`` (and ``connect``) take either. A URL (``s3://bucket/prefix``; ``gs://`` and
``az://`` where fsspec has the filesystem: gcsfs, adlfs) is read through the fsspec
filesystem of its scheme: the manifest and the Parquet footers here, the tables by DuckDB
(the filesystem registered on its connection, so DuckDB's httpfs extension is not needed) or
by Spark (the URL handed on, S3 spelled ``s3a://``: the cluster's hadoop-aws reads it).

Credentials are the filesystem library's own: for S3 the ``AWS_*`` variables or
``~/.aws`` (``AWS_ENDPOINT_URL`` for an S3-compatible store such as MinIO); nothing of ours
holds them. Only reading goes there: what the agent writes (the incident store, state files)
stays local or in its database.

Every place that reads a dataset goes through ``Location`` (``connect``, ``io.load_manifest``),
never through ``Path(data) / ...``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Final, TypeVar

from cxagent.errors import CXAgentError, DataValidationError

T = TypeVar("T")

CLOUD_EXTRA: Final = "pip install 'cxagent[cloud]'"


@dataclass(frozen=True)
class Scheme:
    """A URL scheme: its fsspec protocol, the package that implements it, Spark's scheme."""

    protocol: str  # the scheme the fsspec filesystem (and DuckDB through it) is given
    package: str  # what to install for it
    spark: str  # Spark's (Hadoop's) spelling


SCHEMES: Final[dict[str, Scheme]] = {
    **dict.fromkeys(("s3", "s3a", "s3n"), Scheme("s3", f"s3fs ({CLOUD_EXTRA})", "s3a")),
    **dict.fromkeys(("gs", "gcs"), Scheme("gs", "gcsfs (pip install gcsfs)", "gs")),
    "az": Scheme("az", "adlfs (pip install adlfs)", "abfss"),
    "abfs": Scheme("abfs", "adlfs (pip install adlfs)", "abfss"),
    "abfss": Scheme("abfss", "adlfs (pip install adlfs)", "abfss"),
}
# "s3://b/p" as typed, or "s3:/b/p" as ``pathlib.Path`` left it (it folds the double slash)
_URL: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):/+(.*)$")
CREDENTIALS_HINT: Final = (
    "credentials and endpoint come from the filesystem library's environment: for S3 "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), AWS_ENDPOINT_URL for an "
    "S3-compatible store"
)
LISTING_TTL_S: Final = 30.0  # a table's file listing is reused this long (one LIST a table)
FOOTER_THREADS: Final = 8  # footers read concurrently: each is a round trip


def remote_url(root: Path | str) -> str | None:
    """The object-storage URL ``root`` names (scheme lower-case, no trailing slash), or None
    for a local path. ``Path("s3://b/p")`` is ``s3:/b/p``: that is read back as the URL."""
    match = _URL.match(str(root))
    if match is None or match.group(1).lower() not in SCHEMES:
        return None
    rest = match.group(2).rstrip("/")
    if not rest:
        raise CXAgentError(f"dataset URL {root!s}: names no bucket")
    return f"{match.group(1).lower()}://{rest}"


@dataclass(frozen=True)
class Location:
    """A dataset's root: a local directory (``url`` is its path) or an object-storage URL."""

    url: str
    scheme: Scheme | None = None
    _listings: dict[str, tuple[float, tuple[str, ...]]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def of(cls, root: Path | str | Location) -> Location:
        if isinstance(root, Location):
            return root
        url = remote_url(root)
        if url is None:
            return cls(str(Path(root)))
        return cls(url, SCHEMES[url.split("://", 1)[0]])

    @property
    def remote(self) -> bool:
        return self.scheme is not None

    @property
    def path(self) -> Path:
        """The local directory (a remote location has none)."""
        if self.scheme is not None:
            raise CXAgentError(f"{self.url}: a dataset on object storage has no local directory")
        return Path(self.url)

    def __str__(self) -> str:
        return self.url

    @property
    def _key(self) -> str:
        """The root as the fsspec filesystem names it: ``bucket/prefix``."""
        return self.url.split("://", 1)[1]

    def child(self, *parts: str) -> str:
        """``root/part/...`` as DuckDB and fsspec read it (the protocol's own scheme)."""
        if self.scheme is None:
            return str(Path(self.url, *parts))
        return "/".join([f"{self.scheme.protocol}://{self._key}", *parts])

    def spark_url(self, *parts: str) -> str:
        """``root/part/...`` as Spark (Hadoop) reads it: ``s3a://`` for S3."""
        if self.scheme is None:
            return self.child(*parts)
        return "/".join([f"{self.scheme.spark}://{self._key}", *parts])

    @cached_property
    def filesystem(self) -> Any:
        """The fsspec filesystem of the URL's scheme (a fresh instance: its settings are the
        environment's now, not those of an instance cached earlier in the process)."""
        assert self.scheme is not None, "a local dataset is read directly"
        try:
            import fsspec

            return fsspec.filesystem(self.scheme.protocol, skip_instance_cache=True)
        except ImportError as exc:
            raise CXAgentError(
                f"{self.url}: reading a dataset on object storage needs fsspec and "
                f"{self.scheme.package} ({exc})"
            ) from None

    def _io(self, what: str, call: Callable[[], T]) -> T:
        """``call()``, its failure turned into an error that names ``what`` and the fix."""
        try:
            return call()
        except CXAgentError:
            raise
        except FileNotFoundError:
            raise
        except Exception as exc:  # the filesystem library's own errors: auth, network, ...
            raise CXAgentError(
                f"{what}: cannot read it ({type(exc).__name__}: {exc}); {CREDENTIALS_HINT}"
            ) from exc

    def read_text(self, name: str) -> str:
        """The text of file ``name`` under the root (FileNotFoundError when absent)."""
        if self.scheme is None:
            return (self.path / name).read_text()
        path = self.child(name)
        return self._io(path, lambda: str(self.filesystem.cat_file(path).decode()))

    def exists(self) -> bool:
        if self.scheme is None:
            return self.path.is_dir()
        return bool(self._io(self.url, lambda: self.filesystem.exists(self.url)))

    def files(self, table: str) -> tuple[str, ...]:
        """The Parquet files of ``table``, in partition order, as the engines name them.
        Locally listed on every call (a rewritten table is seen at once); on object storage
        a listing is reused for ``LISTING_TTL_S`` seconds, as one LIST request costs tens of
        milliseconds and an investigation asks for the same tables dozens of times."""
        if self.scheme is None:
            from cxagent.data.io import table_files

            return tuple(str(f) for f in table_files(self.path, table))
        now = time.monotonic()
        cached = self._listings.get(table)
        if cached is not None and now - cached[0] < LISTING_TTL_S:
            return cached[1]
        folder = f"{self._key}/{table}"
        keys = self._io(self.child(table), lambda: self.filesystem.find(folder))
        scheme = self.scheme.protocol
        found = tuple(sorted(f"{scheme}://{k}" for k in keys if k.endswith(".parquet")))
        self._listings[table] = (now, found)
        return found

    def read_schemas(self, files: list[str]) -> list[Any]:
        """The Arrow schemas in the footers of ``files`` (remote: read concurrently)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        fs = None if self.scheme is None else self.filesystem

        def read(path: str) -> Any:
            try:
                return pq.read_schema(path, filesystem=fs)
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataValidationError(
                    f"not a readable Parquet file ({exc})", file=path
                ) from None

        if fs is None or len(files) < 2:
            return [read(f) for f in files]
        with ThreadPoolExecutor(max_workers=FOOTER_THREADS) as pool:
            return list(pool.map(lambda f: self._io(f, lambda: read(f)), files))

    def register(self, con: Any) -> None:
        """Let the Ibis DuckDB backend ``con`` read this location (its fsspec filesystem)."""
        if self.scheme is not None:
            con.register_filesystem(self.filesystem)


def spark_read_error(url: str, exc: Exception) -> CXAgentError:
    """Spark's failure to read ``url`` (a remote dataset's table), with what it needs."""
    text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    causes = [line.removeprefix("Caused by: ") for line in lines if line.startswith("Caused by")]
    first = (causes or lines or [type(exc).__name__])[-1 if causes else 0]
    hint = CREDENTIALS_HINT
    if "No FileSystem for scheme" in text or "ClassNotFoundException" in text:
        hint = (
            "the Spark session needs the Hadoop connector of the store: for s3a:// the "
            "hadoop-aws jar matching the cluster's Hadoop (pyspark 4.0 bundles Hadoop 3.4.1: "
            "spark.jars.packages=org.apache.hadoop:hadoop-aws:3.4.1) and its credentials "
            "(spark.hadoop.fs.s3a.*)"
        )
    return CXAgentError(f"{url}: Spark cannot read it ({first[:300]}); {hint}")
