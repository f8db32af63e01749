"""Plumbing for fault checks against the receiver: a scripted vendor feed on
loopback, numbered quote lines, reading a topic back and tallying what came.

Shared by hqstream/bench/journal_faults.py and any other fault suite; loopback
only, no process of its own (LineFeed is a thread with a listening socket).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import re
import socket
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from producers import protocol


def quote_line(seq: int, stocks: int = 200) -> bytes:
    """A `$` line keyed by one of ``stocks`` codes that carries a global sequence number."""
    code = 600000 + seq % stocks
    return f"sh{code}$s{seq:010d}$10.00$10.01$9.99$10.02$123400$1234567.00$x".encode()


def seq_of(line: bytes) -> int:
    return int(line.split(b"$", 2)[1][1:])


class LineFeed:
    """A vendor stand-in on loopback: the auth handshake, then whatever lines it is given."""

    def __init__(self, token: str) -> None:
        self.token = token
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._conn: socket.socket | None = None
        self._connected = threading.Event()
        self._closed = False
        threading.Thread(target=self._accept, name="line-feed", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            try:
                line = conn.makefile("rb").readline()
                ok = protocol.parse_auth_request(line.strip()) == self.token
                conn.sendall(protocol.auth_ok() if ok else protocol.auth_rejected())
            except (OSError, protocol.ProtocolError):
                conn.close()
                continue
            self._conn = conn
            self._connected.set()

    def wait_client(self, timeout: float = 30) -> None:
        if not self._connected.wait(timeout):
            raise TimeoutError("the receiver did not connect to the feed")

    def send(self, lines: list[bytes]) -> bool:
        """True when the lines were handed to the socket; False when no receiver is there."""
        conn = self._conn
        if conn is None:
            return False
        try:
            conn.sendall(b"".join(line + b"\n" for line in lines))
        except OSError:
            self._conn = None
            self._connected.clear()
            return False
        return True

    def drop_client(self) -> None:
        """Forget the current connection (its receiver is gone); the next one is awaited."""
        conn, self._conn = self._conn, None
        self._connected.clear()
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()

    def send_surely(self, lines: list[bytes], timeout: float = 30) -> None:
        """Send, waiting for a receiver to (re)connect first if there is none."""
        deadline = time.monotonic() + timeout
        while not self.send(lines):
            self.wait_client(max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._server.close()
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()


def create_topics(bootstrap: str, partitions: int = 6) -> tuple[str, str]:
    raw, dead = f"faults.raw.{uuid.uuid4().hex[:8]}", f"faults.dlq.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(raw, partitions, 1), NewTopic(dead, 1, 1)])
    for fut in futures.values():
        fut.result(30)
    return raw, dead


def read_topic(bootstrap: str, topic: str, timeout: float = 60) -> list[Message]:
    """Every record of ``topic`` up to its end offsets, partition by partition."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"faults-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in parts
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        out: list[Message] = []
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + timeout
        while len(done) < len(parts) and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, timeout=0.5):
                if msg.error() is not None:
                    continue
                out.append(msg)
                if (msg.offset() or 0) + 1 >= ends[msg.partition() or 0]:
                    done.add(msg.partition() or 0)
        return out
    finally:
        consumer.close()


@dataclass(frozen=True)
class Tally:
    lost: int
    duplicated: int
    out_of_order: int


def tally(
    expected: list[bytes], got: list[bytes], optional: frozenset[bytes] = frozenset()
) -> Tally:
    """Compare lines read from Kafka (in partition order) with the lines expected.

    ``lost``: expected lines missing. ``duplicated``: extra copies. ``out_of_order``:
    per key (the code), lines whose first copy comes after a later-sent line's.
    ``optional`` lines may or may not be there (sent while the receiver died).
    """
    counts = collections.Counter(got)
    want = set(expected)
    lost = sum(1 for line in want if counts[line] == 0)
    duplicated = sum(n - 1 for n in counts.values() if n > 1)
    by_key: dict[bytes, list[int]] = collections.defaultdict(list)
    seen: set[bytes] = set()
    for line in got:
        if line in seen or (line not in want and line not in optional):
            continue
        seen.add(line)
        by_key[line[2:8]].append(seq_of(line))
    out_of_order = sum(
        sum(1 for a, b in itertools.pairwise(seqs) if b < a) for seqs in by_key.values()
    )
    return Tally(lost, duplicated, out_of_order)


def metric(port: int, name: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return -1.0
    total = 0.0
    for m in re.finditer(rf"^{name}(?:\{{[^}}]*\}})? ([0-9.e+]+)$", text, re.M):
        total += float(m.group(1))
    return total


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)
