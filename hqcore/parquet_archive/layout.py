"""Archive paths and file names, and what they say about archived offsets.

``<root>/<dataset>/trade_date=YYYY-MM-DD/market=XX/<file>.parquet``.

A live file holds the rows of one batch of one Kafka partition that fall in
its directory: ``<topic>+<partition>+<first>-<last>+<k>of<n>.parquet``, where
``first``-``last`` is the batch's offset range (inclusive) and the batch wrote
``n`` files, one per (trade date, market) it touched. A range is archived
when all ``n`` parts exist; a crash part-way leaves an incomplete range, whose
parts recovery deletes before the range is read again. So the file names
alone say which offsets are archived, whatever was committed to Kafka.

A compacted file (``<topic>+compacted+<digest>.parquet``) lists in its
Parquet metadata the live parts it holds (``hqstream.sources``) and the
compacted files it replaced (``hqstream.replaces``); those files, if a crash
left them behind, are deleted by recovery. This module does no I/O except
through :class:`~hqcore.parquet_archive.storage.Storage` in :func:`scan`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Final

from hqcore.parquet_archive.errors import BadFileName
from hqcore.parquet_archive.storage import TMP_SUFFIX, Storage

SOURCES_KEY: Final = b"hqstream.sources"
REPLACES_KEY: Final = b"hqstream.replaces"

_LIVE = re.compile(r"^(?P<topic>[A-Za-z0-9._-]+)\+(?P<partition>\d+)\+(?P<first>\d+)-(?P<last>\d+)"
                   r"\+(?P<k>\d+)of(?P<n>\d+)\.parquet$")  # fmt: skip
_COMPACTED = re.compile(r"^(?P<topic>[A-Za-z0-9._-]+)\+compacted\+(?P<digest>[0-9a-f]+)\.parquet$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MARKET = re.compile(r"^[A-Za-z0-9_]{1,16}$")


@dataclass(frozen=True, slots=True, order=True)
class Range:
    """One batch of one partition: offsets ``first``..``last`` in ``parts`` files."""

    topic: str
    partition: int
    first: int
    last: int
    parts: int


@dataclass(frozen=True, slots=True)
class LiveName:
    range: Range
    part: int

    def __str__(self) -> str:
        r = self.range
        offsets = f"{r.first:012d}-{r.last:012d}"
        return f"{r.topic}+{r.partition}+{offsets}+{self.part}of{r.parts}.parquet"


def live_name(topic: str, partition: int, first: int, last: int, part: int, parts: int) -> str:
    return str(LiveName(Range(topic, partition, first, last, parts), part))


def parse_live(name: str) -> LiveName:
    m = _LIVE.match(name)
    if m is None:
        raise BadFileName(name)
    r = Range(m["topic"], int(m["partition"]), int(m["first"]), int(m["last"]), int(m["n"]))
    if not 1 <= int(m["k"]) <= r.parts or r.first > r.last:
        raise BadFileName(name)
    return LiveName(r, int(m["k"]))


def compacted_name(topic: str, sources: list[str]) -> str:
    digest = hashlib.sha256("\n".join(sorted(sources)).encode()).hexdigest()[:16]
    return f"{topic}+compacted+{digest}.parquet"


def is_compacted(name: str) -> bool:
    return _COMPACTED.match(name) is not None


def partition_dir(dataset: str, trade_date: str, market: str) -> tuple[str, str, str]:
    """The path parts of a (dataset, date, market) directory; odd values are made safe."""
    date = trade_date if _DATE.match(trade_date) else "unknown"
    mkt = market if _MARKET.match(market) else "unknown"
    return dataset, f"trade_date={date}", f"market={mkt}"


@dataclass
class ArchiveIndex:
    """What one dataset's files say: archived ranges, orphans, leftovers."""

    ranges: dict[tuple[str, int], dict[Range, set[int]]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    live: dict[str, str] = field(default_factory=dict)  # live name -> path
    compacted: dict[str, str] = field(default_factory=dict)  # compacted name -> path
    covered: set[str] = field(default_factory=set)  # live names held by compacted files
    replaced: set[str] = field(default_factory=set)  # compacted names replaced by others
    temporary: list[str] = field(default_factory=list)

    def add_part(self, name: LiveName) -> None:
        key = (name.range.topic, name.range.partition)
        self.ranges[key].setdefault(name.range, set()).add(name.part)

    def complete(self, topic: str, partition: int) -> list[Range]:
        return sorted(r for r, ks in self.ranges[(topic, partition)].items() if len(ks) == r.parts)

    def archived_through(self, topic: str, partition: int) -> int:
        """The last offset of ``topic``/``partition`` that is archived, or -1."""
        done = self.complete(topic, partition)
        return max((r.last for r in done), default=-1)

    def incomplete_paths(self, topic: str, partition: int) -> list[str]:
        """Live files of ranges whose other parts are missing (a crash mid-batch)."""
        bad = {r for r, ks in self.ranges[(topic, partition)].items() if len(ks) != r.parts}
        return sorted(p for n, p in self.live.items() if parse_live(n).range in bad)

    def forget(self, paths: list[str]) -> None:
        """Drops deleted files from the index (the ranges they counted for stay as they were:
        an orphan's range was incomplete anyway, a leftover's is held by a compacted file)."""
        gone = set(paths)
        self.live = {n: p for n, p in self.live.items() if p not in gone}
        self.compacted = {n: p for n, p in self.compacted.items() if p not in gone}
        self.temporary = [p for p in self.temporary if p not in gone]

    def leftover_paths(self) -> list[str]:
        """Files a compaction already holds (a crash before it deleted them)."""
        out = [p for n, p in self.live.items() if n in self.covered]
        out += [p for n, p in self.compacted.items() if n in self.replaced]
        return sorted(out)


def scan(storage: Storage, dataset: str, trade_date: str | None = None) -> ArchiveIndex:
    """Reads the names (and compacted files' footers) of a dataset, or of one day of it."""
    index = ArchiveIndex()
    parts = (dataset, f"trade_date={trade_date}") if trade_date else (dataset,)
    for path in storage.list_files(*parts):
        name = path.rsplit("/", 1)[-1]
        if name.endswith(TMP_SUFFIX):
            index.temporary.append(path)
        elif is_compacted(name):
            index.compacted[name] = path
            meta = storage.metadata(path)
            for source in json.loads(meta.get(SOURCES_KEY, b"[]")):
                index.covered.add(source)
                index.add_part(parse_live(source))
            index.replaced.update(json.loads(meta.get(REPLACES_KEY, b"[]")))
        elif _LIVE.match(name):
            index.live[name] = path
            index.add_part(parse_live(name))
    return index
