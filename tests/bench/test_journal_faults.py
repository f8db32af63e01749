"""The journal's faults end to end (issue 13): 0 lost in every row.

The checks live in hqstream/bench/journal_faults.py so the fault suite
(`hqstream bench journal-faults`) runs exactly the same code: this is the
test of that bench's checks, hence in tests/bench/.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hqstream.bench.journal_faults import (
    broker_pause,
    disk_full,
    journal_corruption,
    receiver_kill_in_flight,
    receiver_kill_while_spooling,
    small_disk,
)
from hqstream.local_runner import LocalKafka
from tests.conftest import KafkaEndpoint


def test_disk_full_is_counted_and_the_forwarder_goes_on(tmp_path: Path) -> None:
    row = disk_full(tmp_path, lines=20_000)
    assert row.lost == 0, row  # every line journaled (and readable) or counted
    assert row.dropped_counted > 0, "the fake disk is full after 1 MiB"
    assert "forwarder alive: True" in row.note
    assert "1 'LOST' error line(s)" in row.note, "one error line per interval, not per batch"


def test_a_real_full_tmpfs_is_counted_and_the_forwarder_goes_on(tmp_path: Path) -> None:
    with small_disk(tmp_path) as mnt:
        if mnt is None:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        row = disk_full(tmp_path, journal_dir=mnt, lines=20_000)
    assert row.lost == 0, row
    assert row.dropped_counted > 0
    assert "forwarder alive: True" in row.note


@pytest.mark.integration
def test_corrupt_journal_is_replayed_around_the_damage(
    kafka: KafkaEndpoint, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    row = journal_corruption(kafka.bootstrap, tmp_path)
    assert row.lost == 0, row
    assert row.out_of_order == 0, row
    assert row.dlq >= 3
    assert row.note.startswith("3 of 3 damaged records' bytes found in the DLQ"), row
    assert row.note.endswith("released: True"), row


@pytest.mark.integration
def test_receiver_sigkill_while_spooling_loses_nothing_accepted(
    own_kafka: LocalKafka, tmp_path: Path
) -> None:
    row = receiver_kill_while_spooling(own_kafka, tmp_path)
    assert row.lost == 0, row
    assert row.out_of_order == 0, row


@pytest.mark.integration
def test_receiver_sigkill_with_lines_in_memory_loses_and_repeats_nothing(
    kafka: KafkaEndpoint, tmp_path: Path
) -> None:
    row = receiver_kill_in_flight(kafka.bootstrap, tmp_path, lines=1500)
    assert (row.lost, row.duplicated, row.out_of_order) == (0, 0, 0), row
    # the first kill caught every line in memory; the second, every line in doubt
    assert row.note.startswith("kill 1: 0 acked, 1500 recovered;"), row
    assert row.note.endswith("1500 in doubt, 1500 found in Kafka and skipped"), row


@pytest.mark.integration
def test_broker_pause_hands_records_to_the_journal_in_seconds(
    own_kafka: LocalKafka, tmp_path: Path
) -> None:
    row = broker_pause(own_kafka, tmp_path, pause_s=16, delivery_timeout_s=5)
    assert row.seconds < 5 + 4, row  # the delivery timeout + librdkafka's 1 s scan + slack
    assert row.lost == 0, row
    assert row.out_of_order == 0, row
    assert row.dropped_counted == 0, row
