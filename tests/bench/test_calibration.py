"""The benchmarks' calibrations: the same work every run, and what it covers."""

from __future__ import annotations

import math

from hqstream.bench import common
from streams.pipeline import Parsed, Processor
from streams.settings import StreamsSettings


def test_the_parse_calibration_parses_the_same_good_lines_every_run() -> None:
    """Its figure compares across days only if the lines are the same, and it is the
    worker's whole parse only if every line becomes a published quote (none dead
    lettered or dropped by the arbiter, a second pass included)."""
    records = common._calibration_records()
    assert len(records) == common.PARSE_CALIBRATION_STOCKS
    common._calibration_records.cache_clear()
    again = common._calibration_records()  # built again: the same lines
    assert [r.value for r in again] == [r.value for r in records]
    processor = Processor(StreamsSettings(metrics_port=0))
    for _ in range(2):
        parsed = Parsed(n_in=len(records))
        processor.parse(records, parsed)
        assert (len(parsed.quotes), len(parsed.dead), parsed.arbitrated) == (len(records), 0, 0)
    figure = common.measure_parse_calibration_us()
    assert math.isfinite(figure) and figure > 0
    assert f"{common.parse_calibration_us():.2f} µs a line" in common.calibration_row()
