"""The benchmarks' calibrations: the same work every run, and what it covers."""

from __future__ import annotations

import math

from hqstream.bench import common
from streams.pipeline import Parsed, Processor
from streams.settings import StreamsSettings


def test_the_parse_calibration_parses_the_same_good_lines_every_run() -> None:
    """Its figure compares across days only if the lines are the same, and it is the
    worker's whole parse only if every line becomes a published quote (none dead
    lettered or dropped by the arbiter after the first of the three passes)."""
    lines = common._calibration_lines()
    assert len(lines) == common.PARSE_CALIBRATION_STOCKS
    common._calibration_lines.cache_clear()
    assert common._calibration_lines() == lines  # built again: the same lines
    processor = Processor(StreamsSettings(metrics_port=0))
    for _ in range(2):
        parsed = Parsed(n_in=len(lines))
        processor.parse(common._calibration_records(lines), parsed)
        assert (len(parsed.quotes), len(parsed.dead), parsed.arbitrated) == (len(lines), 0, 0)
    figure = common.measure_parse_calibration_us()
    assert math.isfinite(figure) and figure > 0
    assert f"{common.parse_calibration_us():.2f} µs a line" in common.calibration_row()
