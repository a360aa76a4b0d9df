"""The engine: portable dataframe expressions (Ibis) that aggregate orders to sufficient
statistics. DuckDB over the Parquet files by default; nothing assumes the orders fit in
Python memory."""
