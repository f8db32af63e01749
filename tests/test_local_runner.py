"""hqstream.local_runner pieces that need no broker."""

from __future__ import annotations

import base64

from hqstream.local_runner import kafka_cluster_id


def test_cluster_ids_are_16_byte_uuids_that_never_look_like_an_option() -> None:
    """kafka-storage reads an id starting with '-' as an option: 1 start in 64 failed so."""
    ids = {kafka_cluster_id() for _ in range(5000)}
    assert len(ids) == 5000
    assert not any(i.startswith("-") for i in ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
