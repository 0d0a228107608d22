"""The archive tier: sealed ranges of the log in Parquet files, read together with the hot store.

``layout`` (the file's columns and names), ``location`` (a local directory or an S3-compatible bucket),
``reader`` and ``tiered`` (hot and archive read as one store) sit at the store's level; ``writer``,
``retention`` and ``checks`` (what ``lineage verify`` checks of the files) at the ledger's. Needs the
``[archive]`` extra (pyarrow). docs/archive.md describes the design.
"""
