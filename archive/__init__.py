"""The Parquet archive of hqstream's topics and the replay of a past day.

``hqstream archive`` consumes the normalized quotes, candles and alerts and
writes them, exactly once per partition and offset range, as Parquet files
partitioned by trade date and market; ``hqstream replay`` publishes an archived
day again. Like every service, this package imports only :mod:`schemas` and
:mod:`hqcore` (the archive's files, layout and reader are in
:mod:`hqcore.parquet_archive`, which the gateway reads too).
"""
