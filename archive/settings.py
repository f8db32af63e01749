"""Settings of the archiver and the replay (``hqstream archive`` / ``replay``).

Shared settings (Kafka, partitions, schema registry) come from
:class:`hqcore.settings.CommonSettings` (``HQ_*``); the archive's own use
``HQ_ARCHIVE_*``, except the topic prefix (``HQ_TOPIC_PREFIX``, in
CommonSettings) that every service agrees on. Environment variables are
read nowhere else (the object-store client reads its own credentials, see
docs/archive.md); this module never connects to anything.
"""

from __future__ import annotations

from functools import cache, partial

from pydantic import Field

from hqcore.settings import CommonSettings, env_alias

_env = partial(env_alias, "HQ_ARCHIVE_")


class ArchiveSettings(CommonSettings):
    """Where the archive lives, how files are rolled and compacted."""

    root: str = Field(
        ".run/archive",
        validation_alias=_env("root"),
        description="a local directory, or a filesystem URL (s3://bucket/path?region=...)",
    )
    group_id: str = Field("hqstream-archive", validation_alias=_env("group_id"))
    instance_id: str = Field(
        "",
        validation_alias=_env("instance_id"),
        description="static group membership (the pod name of a StatefulSet): a restarted "
        "archiver gets its partitions back at once instead of after the session timeout",
    )
    session_timeout_ms: int = Field(45_000, ge=1000, validation_alias=_env("session_timeout_ms"))
    datasets: str = Field(
        "ticks,candles,alerts",
        validation_alias=_env("datasets"),
        description="comma-separated: ticks (hq.ticks.normalized), candles (hq.candles.1m), "
        "alerts (hq.alerts)",
    )
    roll_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1,
        validation_alias=_env("roll_bytes"),
        description="a partition's buffer is written once its Avro payloads add up to this",
    )
    roll_seconds: float = Field(
        300.0,
        gt=0,
        validation_alias=_env("roll_seconds"),
        description="... or once its first record has waited this long",
    )
    row_group_rows: int = Field(
        500_000,
        ge=1,
        validation_alias=_env("row_group_rows"),
        description="rows per Parquet row group (analytics: large; ~200 MB of quotes uncompressed)",
    )
    zstd_level: int = Field(3, ge=1, le=22, validation_alias=_env("zstd_level"))
    compact_max_rows: int = Field(
        50_000_000,
        ge=1,
        validation_alias=_env("compact_max_rows"),
        description="compaction starts another output file past this many rows",
    )
    stats_interval_s: float = Field(5.0, gt=0, validation_alias=_env("stats_interval_s"))
    metrics_port: int = Field(
        9104, validation_alias=_env("metrics_port"), description="Prometheus + /healthz; 0 = off"
    )

    @property
    def dataset_names(self) -> list[str]:
        return [d.strip() for d in self.datasets.split(",") if d.strip()]


@cache
def get_settings() -> ArchiveSettings:
    return ArchiveSettings()
