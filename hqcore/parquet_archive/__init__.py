"""The Parquet archive's files, shared by the archiver that writes them and the readers.

Where the files live (:mod:`~hqcore.parquet_archive.storage`: a local
directory or any pyarrow/fsspec filesystem, atomic writes), how they are
named and partitioned (:mod:`~hqcore.parquet_archive.layout`), their Arrow
schemas (:mod:`~hqcore.parquet_archive.arrow_schema`, from the Avro ones), and
reading a day back in exchange-time order (:mod:`~hqcore.parquet_archive.reader`).
The archiver (``archive/``: consuming, batching, compaction, ``hqstream
replay``) and the gateway's ``replay_day`` (``api/day_replay.py``) both stand on
it; it imports only :mod:`schemas`.
"""
