"""The processes and the counting behind ``hqstream bench faults``.

:class:`FaultRig` runs one scenario's pipeline on a shared local broker and
Redis (:class:`hqstream.local_runner.LocalStack`), each scenario on its own
uuid topics, consumer group and Redis database: the feed simulator (with a
sent log), the receiver and two stream workers, as separate processes like
``hqstream up`` runs them. Like Kubernetes, it restarts a worker or receiver
that exits unless a scenario took it down on purpose (and counts restarts).

:func:`count` compares what the simulator sent (its sent log, plus records a
scenario put on the raw topic itself) with the raw topic, the normalized
topic, the DLQ and Redis after the pipeline drained. Loopback only; every
process started here is stopped by :meth:`FaultRig.stop`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

from hqcore.redis_client import sync_client
from hqstream.local_cluster import LocalRedisCluster
from hqstream.local_runner import LocalStack, create_topics, free_port, port_open
from hqstream.up import SECOND_FEED_OPTIONS, Child, metric_figures
from producers.in_doubt import header
from producers.wal import newest_line_read
from schemas import redis_keys as rk
from schemas.topics import DLQ, H_SOURCE, NORMALIZED, RAW, Headers, topic_specs

logger = logging.getLogger(__name__)

WORKERS = ("streams-1", "streams-2")
#: librdkafka's own log lines (broker down: one per reconnect) stay out of the console
_QUIET = logging.getLogger("hqstream.bench.faults.kafka")
_QUIET.setLevel(logging.CRITICAL)


def digest(line: bytes) -> bytes:
    return hashlib.blake2b(line, digest_size=10).digest()


def tick_id(line: bytes) -> tuple[str, int] | None:
    """``(code, exchange_ts)`` of a valid quote line, ``None`` for a bad one."""
    from streams.errors import BadRecord
    from streams.parse import parse_record

    try:
        quote = parse_record(line, 0, 0)
    except BadRecord:
        return None
    except Exception:  # what a hostile line may raise in a parser without bounds
        return None
    return str(quote["code"]), int(quote["exchange_ts"])


class SentLog:
    """The simulators' sent logs (one per feed), read incrementally: newest exchange ts
    per stock over all of them."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.offsets = dict.fromkeys(paths, 0)
        self.newest: dict[str, int] = {}
        self._tails = dict.fromkeys(paths, b"")

    @property
    def offset(self) -> int:
        """Bytes read so far, over every log."""
        return sum(self.offsets.values())

    def update(self) -> None:
        for path in self.paths:
            self._update(path)

    def _update(self, path: Path) -> None:
        if not path.exists():
            return
        with path.open("rb") as fh:
            fh.seek(self.offsets[path])
            data = fh.read()
        self.offsets[path] += len(data)
        lines = (self._tails[path] + data).split(b"\n")
        self._tails[path] = lines.pop()
        for line in lines:
            ident = tick_id(line.rstrip(b"\r")) if line else None
            if ident is not None and ident[1] > self.newest.get(ident[0], 0):
                self.newest[ident[0]] = ident[1]


#: two-feed runs start their simulators' shared schedule this long after the rig is made
SCHEDULE_LEAD_S = 15.0


class FaultRig:
    """One scenario's topics, group, Redis database and processes."""

    def __init__(
        self,
        stack: LocalStack,
        run_dir: Path,
        *,
        redis_db: int,
        stocks: int,
        interval_s: float,
        spread: bool,
        partitions: int = 12,
        feeds: int = 1,
        redis_cluster: LocalRedisCluster | None = None,
    ) -> None:
        if feeds not in (1, 2):
            raise ValueError("one or two feeds")
        self.stack = stack
        self.redis_cluster = redis_cluster  # set: the workers write to it, not stack.redis
        self.run_dir = run_dir
        # a --run-dir used before holds that run's sent logs and journal: appended
        # to, they would count its ticks as sent (and lost) in this one
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        self.partitions = partitions
        self.prefix = f"faults{secrets.token_hex(3)}."
        self.group = f"{self.prefix}streams"
        self.redis_url = (
            redis_cluster.url
            if redis_cluster is not None
            else f"{stack.redis.url.rsplit('/', 1)[0]}/{redis_db}"
        )
        #: feed names; the first one's processes keep the single-feed names
        self.feeds = ("a", "b")[:feeds]
        self.simulators = [_suffixed("simulate", feed) for feed in self.feeds]
        self.receivers = [_suffixed("produce", feed) for feed in self.feeds]
        self.sent_log = SentLog([run_dir / f"{_suffixed('sent', f)}.log" for f in self.feeds])
        self.injected: Counter[bytes] = Counter()  # digests of records put on the raw topic here
        self.restarts: Counter[str] = Counter()
        self.down: set[str] = set()  # taken down on purpose: not restarted
        #: per receiver SIGKILL: its feed and the newest line it had read (its WAL's last)
        self.receiver_kills: list[tuple[str, bytes | None]] = []
        create_topics(stack.kafka.bootstrap, topic_specs(partitions), prefix=self.prefix)
        self._flush_redis()
        self.feed_ports = [free_port() for _ in self.feeds]
        self.receiver_metrics = [free_port() for _ in self.feeds]
        env = {
            **os.environ,
            "HQ_KAFKA_BOOTSTRAP": stack.kafka.bootstrap,
            "HQ_REDIS_URL": self.redis_url,
            "HQ_TOPIC_PREFIX": self.prefix,
            "HQ_PARTITIONS": str(partitions),
            "HQ_FEED_ADDR": f"127.0.0.1:{self.feed_ports[0]}",
            "HQ_FEED_TOKEN": secrets.token_urlsafe(16),
            "HQ_JOURNAL_DIR": str(run_dir / "journal"),
            "HQ_LOG_LEVEL": "INFO",
            "HQ_STREAMS_GROUP_ID": self.group,
            "HQ_STREAMS_DATADIR": str(run_dir / "streams"),
        }
        if feeds > 1:  # one token for both: the HQ_FEEDS entries name HQ_FEED_TOKEN
            env["HQ_FEEDS"] = json.dumps(
                [
                    {"name": f, "addr": f"127.0.0.1:{port}"}
                    for f, port in zip(self.feeds, self.feed_ports, strict=True)
                ]
            )
        exe = [sys.executable, "-m", "hqstream.cli"]
        simulate = [*exe, "simulate", "--stocks", str(stocks), "--interval", str(interval_s)]
        simulate += ["--spread"] if spread else []
        if feeds > 1:  # one market on one wall-clock schedule
            simulate += ["--epoch", str(time.time() + SCHEDULE_LEAD_S)]
        self.children: dict[str, Child] = {}
        for i, feed in enumerate(self.feeds):
            name, receiver = self.simulators[i], self.receivers[i]
            args = [*simulate, "--addr", f"127.0.0.1:{self.feed_ports[i]}",
                    "--sent-log", str(self.sent_log.paths[i])]  # fmt: skip
            args += list(SECOND_FEED_OPTIONS) if i else []
            self.children[name] = Child(name, args, env, run_dir / f"{name}.log")
            produce = [*exe, "produce", "--metrics-port", str(self.receiver_metrics[i])]
            produce += ["--feed", feed] if feeds > 1 else []
            self.children[receiver] = Child(receiver, produce, env, run_dir / f"{receiver}.log")
        self.worker_metrics: dict[str, int] = {}
        for name in WORKERS:
            port = free_port()
            self.worker_metrics[name] = port
            worker_env = {
                **env,
                "HQ_STREAMS_METRICS_PORT": str(port),
                "HQ_STREAMS_WORKER_ID": f"{self.prefix}{name}",
                # static membership, as `hqstream up` runs it: a replacement takes
                # the killed worker's place at once
                "HQ_STREAMS_GROUP_INSTANCE_ID": f"{self.prefix}{name}",
            }
            log = run_dir / f"{name}.log"
            self.children[name] = Child(name, [*exe, "streams"], worker_env, log)
        self._consumer: Consumer | None = None

    # -- processes ----------------------------------------------------------------

    def start(self) -> None:
        """Workers first (they join the group), then the simulators and the receivers."""
        for name in WORKERS:
            self.children[name].start()
        for name in self.simulators:
            self.children[name].start()
        deadline = time.monotonic() + 30
        while not all(map(port_open, self.feed_ports)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for name in self.receivers:
            self.children[name].start()

    def kill(self, name: str, *, keep_down: bool = True) -> None:
        """SIGKILL a child (its whole process group); restarted later unless ``keep_down``."""
        child = self.children[name]
        if keep_down:
            self.down.add(name)
        if child.proc is not None and child.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.proc.pid, signal.SIGKILL)
            child.proc.wait()
        if name in self.receivers:
            feed = self.feeds[self.receivers.index(name)]
            self.receiver_kills.append((feed, newest_line_read(self.journal_dir(feed) / "wal")))

    def journal_dir(self, feed: str) -> Path:
        """A feed's receiver journal (HQ_FEEDS gives each its own directory)."""
        root = self.run_dir / "journal"
        return root / feed if len(self.feeds) > 1 else root

    def start_again(self, name: str) -> None:
        self.down.discard(name)
        child = self.children[name]
        if child.log is not None:
            child.log.close()
        child.start()

    def stop_child(self, name: str, grace: float = 20.0) -> None:
        self.down.add(name)
        self.children[name].stop(grace)

    def supervise(self) -> list[str]:
        """Restart children that exited on their own; returns their names."""
        restarted = []
        for name, child in self.children.items():
            if name in self.down or child.proc is None or child.proc.poll() is None:
                continue
            logger.warning("%s exited (%s); restarting it", name, child.state)
            self.restarts[name] += 1
            self.start_again(name)
            restarted.append(name)
        return restarted

    def stop(self) -> None:
        for name in (*self.simulators, *self.receivers, *WORKERS):
            self.down.add(name)
            self.children[name].stop()
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                self._consumer.close()
            self._consumer = None

    def delete_topics(self) -> None:
        """Delete this scenario's topics: a broker restarted after SIGKILL recovers
        every partition's log, so leftovers would slow the next scenario's restart."""
        from confluent_kafka.admin import AdminClient

        config: dict[str, Any] = {"bootstrap.servers": self.stack.kafka.bootstrap, "logger": _QUIET}
        admin = AdminClient(config)
        names = [self.prefix + spec.name for spec in topic_specs(self.partitions)]
        for future in admin.delete_topics(names, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result(timeout=30)

    # -- live figures -------------------------------------------------------------

    def _offsets_consumer(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(
                {
                    "bootstrap.servers": self.stack.kafka.bootstrap,
                    "group.id": self.group,  # never subscribes: reads the group's commits
                    "enable.auto.commit": False,
                    "logger": _QUIET,
                }
            )
        return self._consumer

    def raw_tps(self) -> list[TopicPartition]:
        return [TopicPartition(self.prefix + RAW, p) for p in range(self.partitions)]

    def end_offsets(self, timeout: float = 2.0) -> list[int] | None:
        try:
            c = self._offsets_consumer()
            return [int(c.get_watermark_offsets(tp, timeout=timeout)[1]) for tp in self.raw_tps()]
        except Exception:
            return None

    def committed(self, timeout: float = 2.0) -> list[int] | None:
        try:
            done = self._offsets_consumer().committed(self.raw_tps(), timeout=timeout)
        except Exception:
            return None
        return [max(0, int(tp.offset)) for tp in done]

    def stale_quotes(self, newest: dict[str, int], *, strict: bool = False) -> int | None:
        """Stocks whose Redis quote is older than ``newest`` says (``None``: Redis down).

        ``strict``: the quote must be newer than ``newest`` (a later tick got through).
        """
        if not newest:
            return 0
        client = sync_client(self.redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            pipe = client.pipeline(transaction=False)
            codes = list(newest)
            for code in codes:
                pipe.hget(rk.quote(code), "ts")
            stored = pipe.execute()
        except Exception:
            return None
        finally:
            client.close()
        behind = [
            ts is None or int(ts) < newest[c] + strict for c, ts in zip(codes, stored, strict=True)
        ]
        return sum(behind)

    def receiver_drained(self) -> bool:
        """Every receiver forwarded every line it read."""
        return all(map(_receiver_drained, self.receiver_metrics))

    def ticks_in_no_candle(self) -> int:
        """Ticks the live workers folded into no candle, their minute having closed
        already: 0 unless a candle clock ran ahead of the feed. A killed worker's
        count is gone with it."""
        metric = "hq_streams_candle_ticks_after_close_total"
        return sum(
            int(metric_figures(port).get(metric, 0)) for port in self.worker_metrics.values()
        )

    def produce_raw(self, records: Iterable[tuple[bytes, bytes, Headers]]) -> int:
        """Put records on the raw topic directly (as the receiver would); returns how many."""
        producer = Producer(
            {
                "bootstrap.servers": self.stack.kafka.bootstrap,
                "partitioner": "murmur2_random",
                "enable.idempotence": True,
                "logger": _QUIET,
            }
        )
        n = 0
        for key, value, headers in records:
            producer.produce(self.prefix + RAW, value, key, headers=cast(Any, headers))
            self.injected[digest(value)] += 1
            n += 1
        if producer.flush(30) != 0:
            raise RuntimeError("records for the raw topic not acknowledged within 30 s")
        return n

    def _flush_redis(self) -> None:
        if self.redis_cluster is not None:  # one database: the cluster is the scenario's own
            self.redis_cluster.flush()
            return
        client = sync_client(self.redis_url)
        try:
            client.flushdb()
        finally:
            client.close()


def _receiver_drained(metrics_port: int) -> bool:
    figures = metric_figures(metrics_port)
    if not figures:
        return False
    lines = figures.get("hq_receiver_lines_total", 0.0)
    produced = figures.get("hq_receiver_produced_total", 0.0)
    return produced >= lines and figures.get("hq_receiver_journal_bytes", 0.0) == 0


def _suffixed(name: str, feed: str) -> str:
    """Feed a's processes and files keep the single-feed names; feed b's end in ``-b``."""
    return name if feed == "a" else f"{name}-{feed}"


@dataclass(frozen=True)
class Counts:
    """One scenario's figures once the pipeline drained."""

    sent: int
    #: sent (or put on the raw topic) but not in the raw topic; with two feeds: a
    #: line neither feed's receiver put on the raw topic. Not counted here: ``unread``
    lost_at_receiver: int
    lost_in_streams: int  # raw records neither normalized nor dead-lettered
    duplicated: int  # raw-topic records beyond what was sent
    published_twice: int  # (stock, exchange_ts) on the normalized topic more than once
    not_newest: int  # stocks whose Redis quote is not their newest tick sent
    dlq: int
    #: lines a feed pushed to a receiver it killed, after the newest line that receiver
    #: read (its write-ahead log's last) and before the simulator noticed: the kernel
    #: buffers of a dead connection, which the protocol never sends again; with two
    #: feeds, only those the other feed did not deliver either
    unread: int = 0

    @property
    def lost(self) -> int:
        return self.lost_at_receiver + self.lost_in_streams


def _read_topic(bootstrap: str, topic: str) -> Iterable[bytes]:
    """Every record value of ``topic``, from the beginning to the current end."""
    return (msg.value() or b"" for msg in _read_records(bootstrap, topic))


def _read_records(bootstrap: str, topic: str) -> Iterable[Message]:
    """Every record of ``topic``, from the beginning to the current end."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"faults-count-{secrets.token_hex(4)}",
            "enable.auto.commit": False,
            "logger": _QUIET,
        }
    )
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        pending = {p for p, end in ends.items() if end > 0}
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        deadline = time.monotonic() + 120
        while pending and time.monotonic() < deadline:
            for msg in c.consume(10_000, timeout=1.0):
                p, offset = msg.partition(), msg.offset()
                if msg.error() or p is None or offset is None:
                    continue
                if offset >= ends[p] - 1:
                    pending.discard(p)
                if offset < ends[p]:
                    yield msg
        if pending:
            raise RuntimeError(f"{topic}: partitions {sorted(pending)} not read to their end")
    finally:
        c.close()


def count(rig: FaultRig) -> Counts:
    """Compare sent, raw, normalized, DLQ and Redis (call after the pipeline drained)."""
    from schemas.serde import make_codec

    bootstrap = rig.stack.kafka.bootstrap
    rig.sent_log.update()
    expected: Counter[bytes] = Counter(rig.injected)
    sent = 0
    sent_order: dict[str, list[bytes]] = {}  # each feed's lines, as pushed
    for feed, path in zip(rig.feeds, rig.sent_log.paths, strict=True):
        order = sent_order[feed] = []
        if not path.exists():
            continue
        for line in path.read_bytes().split(b"\n"):
            if line:
                order.append(digest(line.rstrip(b"\r")))
        expected.update(order)
        sent += len(order)
    dead = {digest(value) for value in _read_topic(bootstrap, rig.prefix + DLQ)}
    dlq_records = sum(1 for _ in _read_topic(bootstrap, rig.prefix + DLQ))
    raw: Counter[bytes] = Counter()
    by_source: dict[bytes, set[bytes]] = {}
    valid: set[tuple[str, int]] = set()  # to be normalized
    bad: set[bytes] = set()  # unreadable, not dead-lettered
    for msg in _read_records(bootstrap, rig.prefix + RAW):
        value = msg.value() or b""
        d = digest(value)
        by_source.setdefault(header(msg, H_SOURCE) or b"", set()).add(d)
        if d not in raw and d not in dead:  # a dead letter (with its reason) is accounted for
            ident = tick_id(value)
            if ident is None:
                bad.add(d)
            else:
                valid.add(ident)
        raw[d] += 1
    if len(rig.feeds) > 1:  # a line is lost when no feed's copy reached the raw topic
        lost_at_receiver = sum(1 for d in expected if not raw[d])
    else:
        lost_at_receiver = sum(max(0, n - raw[d]) for d, n in expected.items())
    unread = _unread_at_kills(rig, sent_order, by_source) - raw.keys()
    lost_at_receiver -= sum(expected[d] for d in unread)
    duplicated = sum(max(0, n - expected[d]) for d, n in raw.items())
    codec = make_codec("quote")
    normalized: Counter[tuple[str, int]] = Counter()
    for value in _read_topic(bootstrap, rig.prefix + NORMALIZED):
        quote = codec.decode(value)
        normalized[str(quote["code"]), int(quote["exchange_ts"])] += 1
    lost_in_streams = len(valid - normalized.keys()) + len(bad)
    not_newest = rig.stale_quotes(rig.sent_log.newest)
    return Counts(
        sent=sent,
        lost_at_receiver=lost_at_receiver,
        lost_in_streams=lost_in_streams,
        duplicated=duplicated,
        published_twice=sum(n - 1 for n in normalized.values()),
        not_newest=len(rig.sent_log.newest) if not_newest is None else not_newest,
        dlq=dlq_records,
        unread=sum(expected[d] for d in unread),
    )


def _unread_at_kills(
    rig: FaultRig, sent_order: dict[str, list[bytes]], by_source: dict[bytes, set[bytes]]
) -> set[bytes]:
    """The lines each killed receiver never read: those its feed pushed after the
    newest line in its write-ahead log, up to the first line it (restarted) put on
    the raw topic (lines pushed while no receiver was connected are not in the sent
    log). Everything before that line must be in Kafka: the receiver's part."""
    unread: set[bytes] = set()
    for feed, newest in rig.receiver_kills:
        if newest is None:
            continue
        order = sent_order[feed]
        if len(rig.feeds) > 1:  # HQ_FEEDS: a receiver's source header is its feed's name
            delivered = by_source.get(feed.encode(), set())
        else:
            delivered = set().union(*by_source.values())
        try:
            i = order.index(digest(newest)) + 1
        except ValueError:
            continue
        while i < len(order) and order[i] not in delivered:
            unread.add(order[i])
            i += 1
    return unread
