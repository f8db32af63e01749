"""Compaction: merges a closed day's files into few large ones, per market and topic.

For each ``trade_date=D/market=M`` directory, the live files of complete
batches and earlier compacted files are merged (source by source, in order of
their first exchange time, so memory stays bounded by one source) into
compacted files of at most ``compact_max_rows`` rows. Each lists what it holds
in its footer; it is renamed into place, and only then are its sources
deleted. A crash in between leaves sources that recovery (and the next
compaction) deletes, since a compacted file names them. Running it twice is a
no-op: a directory holding one compacted file and nothing else is done.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field

import pyarrow.compute as pc

from archive.writer import write_options
from hqcore.parquet_archive import layout
from hqcore.parquet_archive.arrow_schema import SPECS, Dataset, dataset_schema
from hqcore.parquet_archive.errors import ArchiveError
from hqcore.parquet_archive.storage import Storage

logger = logging.getLogger(__name__)


class DayNotClosed(ArchiveError):
    """Compaction of a trade date that is today or later (on the exchange's clock)."""


@dataclass
class CompactionReport:
    files_in: int = 0
    files_out: int = 0
    rows: int = 0
    leftovers_deleted: int = 0
    directories: list[str] = field(default_factory=list)


def compact_day(
    storage: Storage,
    dataset: Dataset,
    trade_date: str,
    *,
    today: str,
    max_rows: int,
    row_group_rows: int,
    zstd_level: int,
) -> CompactionReport:
    """Compacts every market of ``trade_date`` in ``dataset``; ``today`` guards open days."""
    if trade_date >= today:
        raise DayNotClosed(f"{trade_date} is not closed yet (today is {today} in Shanghai)")
    report = CompactionReport()
    index = layout.scan(storage, dataset, trade_date)
    leftovers = index.leftover_paths()
    if leftovers:
        storage.delete(leftovers)
        report.leftovers_deleted = len(leftovers)
        index = layout.scan(storage, dataset, trade_date)
    complete = {r for (topic, p) in list(index.ranges) for r in index.complete(topic, p)}
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)  # (dir, topic) -> paths
    for name, path in index.live.items():
        if layout.parse_live(name).range in complete:
            groups[(path.rsplit("/", 1)[0], name.split("+", 1)[0])].append(path)
    for name, path in index.compacted.items():
        groups[(path.rsplit("/", 1)[0], name.split("+", 1)[0])].append(path)
    options = write_options(row_group_rows, zstd_level)
    time_column = SPECS[dataset].time_column
    for (directory, topic), paths in sorted(groups.items()):
        if len(paths) == 1 and layout.is_compacted(paths[0].rsplit("/", 1)[-1]):
            continue
        report.directories.append(directory)
        _compact_directory(storage, dataset, topic, paths, time_column, max_rows, options, report)
    return report


def _compact_directory(
    storage: Storage,
    dataset: Dataset,
    topic: str,
    paths: list[str],
    time_column: str,
    max_rows: int,
    options: dict[str, object],
    report: CompactionReport,
) -> None:
    # order sources by their first exchange time; plan outputs of <= max_rows rows
    firsts = []
    for path in paths:
        ts = storage.read_table(path, columns=[time_column]).column(0)
        firsts.append((pc.min(ts).as_py() or 0, path, len(ts)))
    firsts.sort()
    plans: list[list[tuple[str, int]]] = [[]]
    rows = 0
    for _, path, n in firsts:
        if plans[-1] and rows + n > max_rows:
            plans.append([])
            rows = 0
        plans[-1].append((path, n))
        rows += n
    schema = dataset_schema(dataset)
    for plan in plans:
        sources: set[str] = set()
        replaces: list[str] = []
        for path, _ in plan:
            name = path.rsplit("/", 1)[-1]
            if layout.is_compacted(name):
                replaces.append(name)
                meta = storage.metadata(path)
                sources.update(json.loads(meta.get(layout.SOURCES_KEY, b"[]")))
            else:
                sources.add(name)
        out_name = layout.compacted_name(topic, sorted(sources))
        out_path = f"{directory_of(plan[0][0])}/{out_name}"
        if any(p == out_path for p, _ in plan):
            continue  # this output exists already (an earlier run): nothing to merge
        meta = {
            **(schema.metadata or {}),
            layout.SOURCES_KEY: json.dumps(sorted(sources)).encode(),
            layout.REPLACES_KEY: json.dumps(sorted(replaces)).encode(),
        }
        out_schema = schema.with_metadata(meta)
        writer = storage.open_writer(out_path, out_schema, **options)
        try:
            for path, _ in plan:
                table = storage.read_table(path).select(schema.names)
                table = table.sort_by([(time_column, "ascending")]).cast(out_schema)
                writer.write(table)
                report.rows += table.num_rows
        except BaseException:
            writer.abort()
            raise
        writer.commit()
        storage.delete([p for p, _ in plan])
        report.files_in += len(plan)
        report.files_out += 1
        logger.info("compacted %d files into %s", len(plan), out_path)


def directory_of(path: str) -> str:
    return path.rsplit("/", 1)[0]
