"""Where archive files live: a local directory, or any pyarrow/fsspec filesystem.

Writes are atomic. Locally a file is written under a temporary name in its
directory, fsynced, renamed into place and the directory fsynced; readers
never see a partial file and a crash leaves at most a ``*.tmp`` file, which
recovery deletes. On object stores (``s3://``, ``gs://``, ...) an object
appears whole when its upload completes, so files are written under their
final key. This module knows nothing about Kafka.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

TMP_SUFFIX = ".tmp"


@dataclass
class Storage:
    """An archive root on some filesystem."""

    fs: pafs.FileSystem
    base: str  # root path inside ``fs``, without a trailing slash
    local: bool

    def path(self, *parts: str) -> str:
        return "/".join([self.base, *parts])

    def list_files(self, *parts: str) -> list[str]:
        """Every file under ``base/parts...`` (recursive), full paths, sorted."""
        selector = pafs.FileSelector(self.path(*parts), recursive=True, allow_not_found=True)
        infos = self.fs.get_file_info(selector)
        return sorted(i.path for i in infos if i.type == pafs.FileType.File)

    def write_table(self, path: str, table: pa.Table, **options: Any) -> None:
        """Writes ``table`` as Parquet at ``path`` atomically and durably."""
        directory = path.rsplit("/", 1)[0]
        if not self.local:
            self.fs.create_dir(directory, recursive=True)
            pq.write_table(table, path, filesystem=self.fs, **options)
            return
        _makedirs_durably(directory)
        tmp = f"{path}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}"
        try:
            with open(tmp, "wb") as fh:
                pq.write_table(table, fh, **options)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        _fsync_dir(directory)

    def open_writer(self, path: str, schema: pa.Schema, **options: Any) -> AtomicWriter:
        return AtomicWriter(self, path, schema, options)

    def delete(self, paths: list[str]) -> None:
        for path in paths:
            self.fs.delete_file(path)
        if self.local:
            for directory in {p.rsplit("/", 1)[0] for p in paths}:
                _fsync_dir(directory)

    def metadata(self, path: str) -> dict[bytes, bytes]:
        with self.fs.open_input_file(path) as fh:
            meta = pq.ParquetFile(fh).schema_arrow.metadata
        return dict(meta or {})

    def num_rows(self, path: str) -> int:
        with self.fs.open_input_file(path) as fh:
            return int(pq.ParquetFile(fh).metadata.num_rows)

    def read_table(self, path: str, columns: list[str] | None = None) -> pa.Table:
        with self.fs.open_input_file(path) as fh:
            return pq.read_table(fh, columns=columns)


class AtomicWriter:
    """A Parquet writer fed table by table, published by :meth:`commit`.

    Tables are gathered into row groups of ``row_group_size`` rows, however
    small the tables written (compaction feeds it one small file at a time).
    """

    def __init__(self, storage: Storage, path: str, schema: pa.Schema, options: dict[str, Any]):
        self.storage, self.path = storage, path
        options = dict(options)
        self._group_rows = int(options.pop("row_group_size", 1_000_000))
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        directory = path.rsplit("/", 1)[0]
        if storage.local:
            _makedirs_durably(directory)
            self._target = f"{path}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}"
            self._fh: Any = open(self._target, "wb")  # noqa: SIM115 (closed in commit/abort)
        else:
            storage.fs.create_dir(directory, recursive=True)
            self._target = path
            self._fh = storage.fs.open_output_stream(path)
        self._writer = pq.ParquetWriter(self._fh, schema, **options)

    def write(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= self._group_rows:
            self._drain(final=False)

    def _drain(self, final: bool) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        full = table.num_rows // self._group_rows * self._group_rows
        cut = table.num_rows if final else full
        if cut:
            self._writer.write_table(table.slice(0, cut), row_group_size=self._group_rows)
        rest = table.slice(cut)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows

    def commit(self) -> None:
        self._drain(final=True)
        self._writer.close()
        if self.storage.local:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            os.replace(self._target, self.path)
            _fsync_dir(self.path.rsplit("/", 1)[0])
        else:
            self._fh.close()

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            self._fh.close()
            if self.storage.local and os.path.exists(self._target):
                os.unlink(self._target)


def open_storage(root: str) -> Storage:
    """A local directory (a path or ``file://``), else a pyarrow or fsspec filesystem URL.

    pyarrow handles ``s3://`` (and S3-compatible stores through
    ``?endpoint_override=host:port&scheme=http``), ``gs://``, ``hdfs://``;
    any other scheme goes through fsspec (``memory://`` in tests).
    """
    if "://" not in root or root.startswith("file://"):
        path = os.path.abspath(root.removeprefix("file://"))
        os.makedirs(path, exist_ok=True)
        return Storage(pafs.LocalFileSystem(), path.rstrip("/") or "/", local=True)
    try:
        fs, base = pafs.FileSystem.from_uri(root)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        import fsspec

        fsspec_fs, base = fsspec.core.url_to_fs(root)
        fs = pafs.PyFileSystem(pafs.FSSpecHandler(fsspec_fs))
    return Storage(fs, base.rstrip("/"), local=False)


def _makedirs_durably(directory: str) -> None:
    missing = []
    d = directory
    while d and not os.path.isdir(d):
        missing.append(d)
        d = os.path.dirname(d)
    os.makedirs(directory, exist_ok=True)
    for created in missing:
        _fsync_dir(os.path.dirname(created))


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
