"""``hqstream bench cost --compare REF``: the ref's code in a temporary worktree, run by
the components instead of this checkout's, and the side-by-side table."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from hqstream.bench import ref_code
from hqstream.bench.cost import PHASES, Usage, _report_compare, partition_counts
from hqstream.bench.pipeline_rig import Pipeline, command_of, keep_logs, minute_closed_after
from hqstream.bench.proc_cpu import group_cpu_s, jit_cpu_s, jit_share
from hqstream.bench.ref_code import (
    REPO,
    RefCode,
    build_ref_native,
    dependency_drift,
    drift_warning,
    ref_checkout,
)
from hqstream.local_runner import local_partitions
from tests.conftest import KafkaEndpoint
from tests.native import native_or_skip


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_ref_is_checked_out_in_an_ignored_worktree_then_removed() -> None:
    head = _git("rev-parse", "HEAD")
    with ref_checkout("HEAD") as ref:
        assert ref.commit == head
        assert ref.path.parent == REPO / ".bench"
        assert (ref.path / "hqstream" / "bench" / "cost.py").is_file()
        assert str(ref.path) in _git("worktree", "list")
        assert _git("status", "--porcelain", "--", ".bench") == ""  # ignored
    assert not ref.path.exists()
    assert str(ref.path) not in _git("worktree", "list")


def test_unknown_ref_is_refused() -> None:
    with pytest.raises(RuntimeError, match="rev-parse"), ref_checkout("no-such-ref-xyz"):
        pass


def test_head_declares_its_own_dependencies() -> None:
    head = _git("rev-parse", "HEAD")
    assert dependency_drift(head) == []
    assert drift_warning(RefCode("HEAD", head, REPO)) is None


def test_a_ref_with_other_dependencies_is_said_to_run_on_this_checkout_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(A clone may be shallow: the ref's pyproject.toml is given, not looked up.)"""
    theirs = _git("show", "HEAD:pyproject.toml").replace(
        '"orjson', '"left-pad>=1",\n    "orjson', 1
    )
    monkeypatch.setattr(
        ref_code, "_git", lambda *args: theirs if args[0] == "show" else _git(*args)
    )
    head = _git("rev-parse", "HEAD")
    assert dependency_drift(head) == ["left-pad>=1"]
    warning = drift_warning(RefCode("old", head, REPO / ".bench" / "old"))
    assert warning == (
        f"old ({head[:7]}) declares other dependencies (left-pad>=1); "
        "it runs on this checkout's packages"
    )


def test_components_import_the_other_checkout(tmp_path: Path) -> None:
    """The command and environment the rig starts each component with import the
    ``hqstream`` package of ``code``, not this checkout's (nor the current folder's)."""
    package = tmp_path / "hqstream"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "cli.py").write_text("print(__file__)\n")
    exe, env = command_of(tmp_path)
    done = subprocess.run(
        exe, env={"PATH": "/usr/bin:/bin", **env}, cwd=REPO, capture_output=True, text=True
    )
    assert done.stdout.strip() == str(package / "cli.py"), done.stderr
    this_exe, this_env = command_of(None)
    assert this_env == {} and this_exe[0] == sys.executable


def _usage(cpu: dict[str, float], ticks: float, wall: float = 10.0) -> Usage:
    return {**cpu, "simulate": 0.1, "client": 0.1, "_ticks": ticks, "_wall": wall}


def test_compare_table_has_both_sides_and_the_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    ref = _usage({"produce": 1.0, "streams-0": 6.0, "broker": 5.0}, ticks=3000)
    this = _usage({"produce": 0.5, "streams-0": 1.5, "broker": 1.0}, ticks=3000)
    idle_ref = _usage({"produce": 0.1, "streams-0": 0.1, "broker": 2.0}, ticks=0)
    idle_this = _usage({"produce": 0.1, "streams-0": 0.1, "broker": 0.2}, ticks=0)
    _report_compare(
        ["main (abc)", "cost (def)"],
        [(PHASES["idle"], [idle_ref, idle_this]), (PHASES["333"], [ref, this])],
        "1.0 2.0 3.0",
    )
    out = capsys.readouterr().out
    # 333: 12 CPU-s over 3,000 ticks = 4,000 ms/1k against 3 CPU-s = 1,000 ms/1k
    assert (
        "| **pipeline** (produce + streams-0 + broker) | 120.0% · 4000.0 | 30.0% · 1000.0 | 4.00x |"
        in out
    )
    assert "| streams-0 | 60.0% · 2000.0 | 15.0% · 500.0 | 4.00x |" in out
    # idle: no ticks, the ratio is of the share of a core
    assert "| broker | 20.0% · - | 2.0% · - | 10.00x |" in out
    assert "load average at the end: 1.0 2.0 3.0" in out


def test_the_pipeline_has_as_many_partitions_as_hqstream_up_gives_it() -> None:
    # docs/benchmarks.md, "One partition per worker on one machine"
    assert [local_partitions(w) for w in (1, 2, 6)] == [1, 2, 6]
    assert partition_counts("", workers=1) == [1]
    assert partition_counts("", workers=6) == [6]
    assert partition_counts("12,4", workers=1) == [12, 4]  # with --compare: the ref's, this one's
    for wrong in ("12,4,2", "0", "x", "4,"):
        with pytest.raises(typer.BadParameter):
            partition_counts(wrong, workers=1)
    with pytest.raises(typer.BadParameter, match="one comparison at a time"):
        partition_counts("12,4", workers=1, comparing=True)


def test_a_failed_runs_logs_are_kept_without_the_workers_data(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "journal").mkdir(parents=True)
    (run / "streams" / "v1").mkdir(parents=True)
    (run / "produce.log").write_text("reconnecting to the feed in 0.4s\n")
    (run / "journal" / "000001.wal").write_bytes(b"line\n")
    (run / "streams" / "v1" / "big.sst").write_bytes(b"0" * 1000)
    kept = keep_logs(run, into=tmp_path / "kept")
    assert kept.parent == tmp_path / "kept" and kept.name.startswith("hqstream-bench-failed-")
    assert (kept / "produce.log").read_text() == "reconnecting to the feed in 0.4s\n"
    assert (kept / "journal" / "000001.wal").read_bytes() == b"line\n"
    assert not (kept / "streams").exists()
    assert keep_logs(run, into=tmp_path / "kept") != kept  # a second failure: a folder of its own


def test_each_feed_goes_on_after_the_exchange_times_fed_before(tmp_path: Path) -> None:
    """A restarted simulator starts its exchange clock after the last feed's newest
    time, so no phase replays times the workers have seen (they skip those)."""
    rig = Pipeline({}, [], tmp_path, gateway_port=0, metrics_port=0, feed_port=0)
    first = rig.next_start(1000.0)
    rig._fed = (1000.0, 3.0)  # fed 3-second snapshots for 40 s ...
    second = rig.next_start(1040.0)
    # ... i.e. at most 14 snapshots, up to first + 39 s of exchange time
    assert second - first >= dt.timedelta(seconds=40)
    rig._fed = (1040.0, 1.0)  # stopped at once: its one snapshot is still behind the next
    assert rig.next_start(1040.2) - second >= dt.timedelta(seconds=1)
    assert first.tzinfo is not None and first.hour == 9 and first.minute == 30


def test_a_measurement_waits_until_the_restarted_feed_flows(tmp_path: Path) -> None:
    """The receiver reconnects to a restarted simulator with its backoff: `bench e2e`
    and `bench cost` measure only once a whole snapshot came through."""
    rig = Pipeline({}, [], tmp_path, gateway_port=0, metrics_port=0, feed_port=0)
    read = iter([100.0, 100.0, 100.0, 350.0, 5099.0, 5100.0, 9999.0])
    rig.lines_received = lambda: next(read)  # type: ignore[method-assign]
    shown: list[str] = []
    rig.wait_for_feed(100.0, 5000, shown.append, poll_s=0)
    assert next(read) == 9999.0  # it stopped at the first reading 5,000 lines on
    assert shown == [f"waiting for the feed, {n:,} lines" for n in (0, 0, 0, 250, 4999)]
    rig.lines_received = lambda: 100.0  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="the feed did not flow: 0 lines"):
        rig.wait_for_feed(100.0, 5000, shown.append, timeout_s=0.05, poll_s=0.01)


def test_jit_compiler_time_is_counted_from_the_jvms_compiler_threads(
    kafka: KafkaEndpoint,
) -> None:
    """The broker warm-up waits on the CPU time of a JVM's C1/C2 compiler threads:
    a running broker has some, and a Python process group none."""
    if kafka.broker is None or kafka.broker.proc is None:
        pytest.skip("the broker is not ours (HQ_KAFKA_BOOTSTRAP or a container)")
    compilers = jit_cpu_s(kafka.broker.proc.pid)
    assert sum(compilers.values()) > 0
    assert sum(compilers.values()) < group_cpu_s(kafka.broker.proc.pid)
    assert jit_cpu_s(os.getpgid(0)) == {}


def test_the_jit_share_compares_thread_by_thread() -> None:
    """A JVM ends compiler threads it no longer needs (C1-only brokers did so during
    the warm-up): a thread gone from the second reading must not make the share
    negative, and one that started in between counts whole."""
    before = {"7/20": 3.0, "7/21": 5.0}
    after = {"7/20": 3.5, "7/22": 0.5}  # 7/21 ended, 7/22 started
    assert jit_share(before, after, seconds=10) == pytest.approx(0.1)
    assert jit_share({}, {}, seconds=10) == 0.0


def test_the_broker_warm_up_runs_through_an_exchange_minute() -> None:
    """A minute's first snapshot closes every stock's candle, and what the closes send
    (candles, bars and their topics) reaches the broker then only: a warm-up that
    stopped before it left the first measured minute to the broker's compilers."""
    opening = dt.datetime(2026, 12, 2, 9, 30, tzinfo=dt.UTC)
    # 09:30:00: the minute closes 60 s in, its snapshot spread over 3 s, then settled
    assert minute_closed_after(opening, 3.0, settle_s=5.0) == pytest.approx(68.0)
    # 09:30:45.5: the next minute starts 14.5 s in
    later = opening + dt.timedelta(seconds=45.5)
    assert minute_closed_after(later, 3.0, settle_s=5.0) == pytest.approx(22.5)


def test_a_ref_with_another_compiled_extension_runs_its_own() -> None:
    """A ref whose ``hqstream_native`` is of another version than the installed one gets
    its own, built into its worktree and imported first by its components (else its
    workers would find a version they refuse and run the Python path); a ref of the
    installed version builds nothing."""
    native = native_or_skip()
    ours = native.__version__
    head = _git("rev-parse", "HEAD")
    said: list[str] = []
    assert build_ref_native(RefCode("HEAD", head, REPO), said.append) is None
    assert said == []
    with ref_checkout("HEAD") as ref:
        crate = ref.path / "native"
        pinned = f'version = "{ours}"'
        for name, old in (("Cargo.toml", pinned), ("pyproject.toml", pinned),
                          ("Cargo.lock", f'name = "hqstream-native"\n{pinned}')):  # fmt: skip
            path = crate / name
            text = path.read_text()
            assert old in text, name
            path.write_text(text.replace(old, old.replace(ours, "0.0.1"), 1))
        note = build_ref_native(ref, said.append)
        assert said == [
            f"building {ref.label}'s own hqstream_native 0.0.1 (this checkout: {ours}) ..."
        ]
        assert note == f"{ref.label} runs its own hqstream_native 0.0.1 (this checkout: {ours})"
        exe, env = command_of(ref.path)
        done = subprocess.run(
            [exe[0], "-P", "-c", "import hqstream_native as n; print(n.__version__, n.__file__)"],
            env={"PATH": os.environ["PATH"], **env}, cwd=REPO, capture_output=True, text=True,
        )  # fmt: skip
        version, where = done.stdout.split()
        assert version == "0.0.1" and where.startswith(str(ref.path)), done.stderr
    assert not ref.path.exists()
