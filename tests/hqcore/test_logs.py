"""A library's repeated log line is shown once per interval; hqstream's own lines always."""

from __future__ import annotations

import logging

from hqcore.logs import RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_a_repeated_library_line_is_let_through_once_per_interval() -> None:
    clock = Clock()
    repeats = RepeatFilter(every_s=10, clock=clock)
    template = "Unable connect to node with id %s: %s"
    shown = []
    for i in range(50):  # five seconds of a broker outage, a line every 0.1 s
        clock.now = i * 0.1
        record = _record("aiokafka", template, 1, f"refused {i}")
        if repeats.filter(record):
            shown.append(record.getMessage())
    assert shown == ["Unable connect to node with id 1: refused 0"]
    clock.now = 10.0
    later = _record("aiokafka", template, 1, "refused again")
    assert repeats.filter(later)
    assert later.getMessage() == (
        "Unable connect to node with id 1: refused again (49 more like this in the last 10 s)"
    )


def test_lines_differ_by_logger_level_and_template() -> None:
    repeats = RepeatFilter(every_s=10, clock=Clock())
    assert repeats.filter(_record("aiokafka.consumer.fetcher", "Failed fetch from %s", 1))
    assert repeats.filter(_record("aiokafka", "Failed fetch from %s", 1))
    assert repeats.filter(_record("aiokafka", "Failed fetch from %s", 1, level=logging.WARNING))
    assert repeats.filter(_record("aiokafka", "Coordinator dead"))
    assert not repeats.filter(_record("aiokafka", "Coordinator dead"))


def test_our_own_lines_and_other_libraries_are_never_held() -> None:
    repeats = RepeatFilter(libraries=("aiokafka",), every_s=10, clock=Clock())
    for _ in range(3):
        assert repeats.filter(_record("streams.runtime", "redis down, retrying"))
        assert repeats.filter(_record("aiokafkax", "not the aiokafka package"))
