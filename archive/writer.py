"""Turns one batch of one Kafka partition into archive files (exactly once).

A batch's rows are split by (trade date, market); each group becomes one
Parquet file named after the batch's offset range and its part number
(:mod:`hqcore.parquet_archive.layout`). Files are written atomically and durably; the caller
commits the batch's offsets only after :meth:`BatchWriter.write` returns.
This module never talks to Kafka.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pyarrow as pa

from hqcore.parquet_archive import layout
from hqcore.parquet_archive.arrow_schema import (
    OFFSET_COLUMN,
    PARTITION_COLUMN,
    SPECS,
    Dataset,
    dataset_schema,
)
from hqcore.parquet_archive.storage import Storage
from schemas.exchange import trade_date_of

CHUNK_ROWS = 4096
"""Decoded records are turned into Arrow every this many rows: a batch of five
minutes of the full market is held in ~200 MB of columns, not ~1.5 GB of dicts."""


@cache
def arrow_schema(dataset: Dataset) -> pa.Schema:
    return dataset_schema(dataset)


@dataclass
class Batch:
    """Decoded records of one partition, in offset order, not yet archived."""

    dataset: Dataset
    topic: str
    partition: int
    first: int = -1
    last: int = -1
    payload_bytes: int = 0
    started: float = 0.0  # clock reading at the first record
    row_count: int = 0
    chunks: list[pa.Table] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    keys: list[tuple[str, str, str]] = field(default_factory=list)  # directory of each row

    def add(self, offset: int, record: dict[str, Any] | None, size: int, now: float) -> None:
        """Adds the record at ``offset`` (None: undecodable, the range still covers it)."""
        if self.first < 0:
            self.first, self.started = offset, now
        self.last = offset
        self.payload_bytes += size
        if record is None:
            return
        record[PARTITION_COLUMN] = self.partition
        record[OFFSET_COLUMN] = offset
        self.keys.append(directory_of(self.dataset, record))
        self.pending.append(record)
        self.row_count += 1
        if len(self.pending) >= CHUNK_ROWS:
            self._columnize()

    def _columnize(self) -> None:
        if self.pending:
            schema = arrow_schema(self.dataset)
            self.chunks.append(pa.Table.from_pylist(self.pending, schema=schema))
            self.pending = []

    def table(self) -> pa.Table:
        """Every row of the batch, in offset order."""
        self._columnize()
        if not self.chunks:
            return arrow_schema(self.dataset).empty_table()
        return pa.concat_tables(self.chunks)

    @property
    def empty(self) -> bool:
        return self.first < 0


def write_options(row_group_rows: int, zstd_level: int) -> dict[str, Any]:
    return {
        "compression": "zstd",
        "compression_level": zstd_level,
        "row_group_size": row_group_rows,
        "use_dictionary": True,
        "write_statistics": True,
    }


def directory_of(dataset: Dataset, row: dict[str, Any]) -> tuple[str, str, str]:
    date = row.get("trade_date") or trade_date_of(int(row[SPECS[dataset].time_column]))
    return layout.partition_dir(dataset, str(date), str(row.get("market", "")))


class BatchWriter:
    """Writes batches as Parquet files under one archive root."""

    def __init__(self, storage: Storage, row_group_rows: int, zstd_level: int) -> None:
        self.storage = storage
        self.options = write_options(row_group_rows, zstd_level)

    def write(self, batch: Batch) -> list[str]:
        """Writes every file of ``batch``; returns their paths (none for no rows)."""
        groups: dict[tuple[str, str, str], list[int]] = defaultdict(list)
        for i, key in enumerate(batch.keys):
            groups[key].append(i)
        whole = batch.table()
        written = []
        for part, key in enumerate(sorted(groups), start=1):
            name = layout.live_name(
                batch.topic, batch.partition, batch.first, batch.last, part, len(groups)
            )
            rows = groups[key]
            table = whole if len(groups) == 1 else whole.take(pa.array(rows, pa.int64()))
            path = self.storage.path(*key, name)
            self.storage.write_table(path, table, **self.options)
            written.append(path)
        return written
