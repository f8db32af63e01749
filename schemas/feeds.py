"""The vendor feeds hqstream reads (``HQ_FEEDS``): one receiver process per feed.

``HQ_FEEDS`` is a JSON list; each entry names a feed (the ``source`` header of
its records, and its label in metrics and ``/api/realtime/status``), where it
is, the environment variable holding its token (a Kubernetes Secret's key,
never the token itself), its line format and its priority::

    HQ_FEEDS='[{"name": "a", "addr": "feed-a.vendor:7070", "token_env": "HQ_FEED_A_TOKEN",
                "priority": 0, "metrics_url": "http://hq-producer-a:9101/metrics"},
               {"name": "b", "addr": "feed-b.other:7070", "token_env": "HQ_FEED_B_TOKEN",
                "priority": 1, "metrics_url": "http://hq-producer-b:9101/metrics"}]'

``hqstream produce --feed a`` reads feed ``a``. Unset (the default), there is
one feed from ``HQ_FEED_ADDR`` / ``HQ_FEED_TOKEN``. The stream workers need
no list: they arbitrate between whatever ``source`` headers arrive
(streams/arbitration.py). Priority orders the feeds in the status (the
primary first); arbitration itself takes the first copy of a snapshot, from
whichever feed delivers it first.

Formats (``format``): ``hq-line-v1`` is shared/spec/feed-protocol.md (``$``
lines and Beijing JSON). A vendor with another line format gets a parser
module and an entry here; see docs/architecture.md, "Several feeds".
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

FeedFormat = Literal["hq-line-v1"]
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,30}")


class FeedConfig(BaseModel):
    """One entry of ``HQ_FEEDS``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="the `source` header and label: lower-case, digits, dashes")
    addr: str = Field(description="vendor host:port")
    token_env: str = Field("HQ_FEED_TOKEN", description="environment variable with the token")
    format: FeedFormat = "hq-line-v1"
    priority: int = Field(0, description="0 = primary; orders the feeds in the status")
    metrics_url: str = Field("", description="its receiver's /metrics (for the gateway's status)")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(f"feed name {value!r}: 1-31 of a-z, 0-9 and '-'")
        return value

    @field_validator("token_env")
    @classmethod
    def _hq_name(cls, value: str) -> str:
        if not value.startswith("HQ_"):
            raise ValueError(f"{value!r}: hqstream reads only HQ_ environment variables")
        return value


def by_priority(feeds: list[FeedConfig]) -> list[FeedConfig]:
    return sorted(feeds, key=lambda f: (f.priority, f.name))
