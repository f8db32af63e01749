"""Start a real single-node Apache Kafka (KRaft) and a real Redis on loopback.

Used by ``hqstream up`` / ``make run`` and by the test fixtures when neither
``HQ_KAFKA_BOOTSTRAP``/``HQ_REDIS_URL`` nor a Docker engine is available.
The broker jars come from Maven Central via ``deploy/local/fetch-kafka.sh``
into ``.cache/kafka/libs``; configs live in ``deploy/local/``. Every process
started here is stopped by :meth:`LocalStack.stop` (also on SIGTERM of the
owner via the context manager). This module never touches remote hosts.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from schemas.topics import TopicSpec, topic_specs

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
LOCAL_DIR = ROOT / "deploy" / "local"
KAFKA_LIBS = ROOT / ".cache" / "kafka" / "libs"
DEFAULT_RUN_DIR = ROOT / ".run"


#: The CPU priority ``hqstream up`` and the speed benchmarks (those started through
#: ``hqstream.bench.common.bench_env``; the fault and failover benches keep 0) give
#: their local Redis: a nice(1) increment below the pipeline's. On one machine, at
#: each of the vendor's bursts the quotes' path (receiver, broker, the workers'
#: parse, gateway) then goes first and Redis writes the burst's quotes, statistics
#: and candles right after, from the same idle CPU (docs/benchmarks.md, "Redis
#: after the quotes"). Redis runs at most as late as the CPU is busy: a few hundred
#: ms of a burst.
#:
#: A nice value weighs only against the threads of its own *autogroup* where the
#: kernel has them (``/proc/sys/kernel/sched_autogroup_enabled``, on in Debian's
#: kernels): each session (setsid) is one, and the scheduler shares the CPU fairly
#: between them first. So every process started here and by ``hqstream up`` has
#: a process group of its own (``process_group=0``: stopped with ``killpg``, out
#: of reach of the terminal's Ctrl-C) in the caller's session, not a session of
#: its own; until 2026-12-06 each had its own, and these priorities changed nothing.
REDIS_NICE = 10

#: The nice increment ``hqstream up`` and the speed benchmarks give the local broker's
#: housekeeping threads (:data:`BROKER_BACKGROUND_THREADS`); its request threads keep
#: the caller's priority. Every minute (segment.ms) the log cleaner compacts the
#: compacted topics' closed segments (~0.3-0.4 s of CPU), and a young broker's JIT
#: compilers work in bursts of their own: on two cores, the vendor's burst that
#: met them waited (its slowest quote 160 ms against a median of 121, the
#: cleaner's 115 ms of CPU in its first 300 ms; docs/benchmarks.md, "Priorities in
#: one autogroup"). At nice 19 they take the CPU the quotes leave.
BROKER_BACKGROUND_NICE = 19

#: The broker's housekeeping threads, by the start of their Linux names (15 bytes
#: of the JVM's thread names): the log cleaner and the JIT compilers.
BROKER_BACKGROUND_THREADS = ("kafka-log-clean", "C1 CompilerThre", "C2 CompilerThre")


def local_partitions(workers: int = 1) -> int:
    """The tick topics' partitions on one machine (``hqstream up`` and the benchmarks
    of its pipeline): one per stream worker.

    Production keeps 12 (up to 12 workers: deploy/k8s). A partition no worker
    needs is not free: the receiver's librdkafka sends one produce request per
    partition (librdkafka#1700), the broker handles each on its own, and a worker
    fetches and tracks each of its partitions. At 1,667 ticks/s and one worker,
    4 partitions instead of 12 cost the pipeline 1.26x less CPU per tick, and 1
    instead of 4 another 1.19x (docs/benchmarks.md, "One partition per worker on
    one machine").
    """
    return workers


class LocalRunnerError(RuntimeError):
    """A local Kafka or Redis could not be started."""


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (bound at once: one after another, the kernel may hand
    the same port out twice)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def lower_threads(pid: int, prefixes: tuple[str, ...], increment: int) -> list[str]:
    """Lower by ``increment`` (at most to nice 19) the priority of ``pid``'s threads
    whose Linux name starts with one of ``prefixes``; the names of those lowered.

    Linux only (``setpriority`` of a thread id; lowering needs no privilege):
    elsewhere, or when the process is gone, none."""
    lowered: list[str] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return lowered
    for task in tasks:
        try:
            name = (task / "comm").read_text().rstrip("\n")
            if not name.startswith(prefixes):
                continue
            tid = int(task.name)
            nice = min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment)
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except (OSError, ValueError):  # the thread ended meanwhile
            continue
        lowered.append(name)
    return lowered


def _wait_for(predicate: object, timeout: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    assert callable(predicate)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LocalRunnerError(f"{what} exited with code {proc.returncode} while starting")
        if predicate():
            return
        time.sleep(0.2)
    raise LocalRunnerError(f"{what} did not become ready within {timeout:.0f}s")


def ensure_kafka_jars() -> None:
    stamp = list(KAFKA_LIBS.glob(".kafka-*")) if KAFKA_LIBS.exists() else []
    if not stamp:
        subprocess.run(["bash", str(LOCAL_DIR / "fetch-kafka.sh")], check=True)


def kafka_class_archive() -> Path:
    """The broker's class-data-sharing archive (JDK AppCDS) for these jars and this JDK.

    With it the JVM maps the broker's ~5,000 classes from one file instead of
    loading and verifying them from 100 jars: a broker starts and restarts about
    a third faster (docs/benchmarks.md, "Faults"), which is the backlog every
    broker fault leaves and the start-up time of every test session. A JVM that
    cannot use it (another JDK) warns and starts without it.
    """
    stamp = sorted(KAFKA_LIBS.glob(".kafka-*"))
    version = stamp[0].name.removeprefix(".kafka-") if stamp else "unknown"
    java = shutil.which("java") or "java"
    jdk = Path(os.path.realpath(java)).parent.parent.name
    return KAFKA_LIBS.parent / f"kafka-{version}-{jdk}.jsa"


def build_kafka_class_archive() -> Path:
    """Start and cleanly stop a broker that dumps the classes it loaded (``make setup``)."""
    archive = kafka_class_archive()
    if archive.exists():
        return archive
    partial = archive.with_name(f"{archive.name}.{os.getpid()}")
    with tempfile.TemporaryDirectory(prefix="hq-class-archive-") as work_dir:
        kafka = LocalKafka(Path(work_dir), jvm_flags=(f"-XX:ArchiveClassesAtExit={partial}",))
        try:
            kafka.start()
        finally:
            _terminate(kafka.proc, "kafka", grace=120)  # the JVM writes the archive as it exits
        exited = kafka.proc is not None and kafka.proc.returncode in (0, 143)
    if exited and partial.exists():
        partial.replace(archive)  # atomic: a concurrent setup finds a whole file or none
    else:
        partial.unlink(missing_ok=True)
    return archive


def kafka_cluster_id() -> str:
    """A random KRaft cluster id: a UUID in URL-safe base64, as Kafka's ``Uuid`` makes them.

    Like Kafka's own ``Uuid.randomUuid``, never one that starts with ``-``:
    the storage tool would read it as an option (1 start in 64 failed so).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass
class LocalKafka:
    """One KRaft broker+controller process on 127.0.0.1."""

    run_dir: Path
    port: int = 0
    controller_port: int = 0
    heap: str = "768m"
    #: extra JVM flags; by default the class-data-sharing archive when it exists
    jvm_flags: tuple[str, ...] | None = None
    #: the nice increment of its housekeeping threads (BROKER_BACKGROUND_NICE); 0: none
    background_nice: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        """Format a fresh data dir and start the broker."""
        ensure_kafka_jars()
        self.port = self.port or free_port()
        self.controller_port = self.controller_port or free_port()
        while self.controller_port == self.port:  # free_port() may hand the same one out twice
            self.controller_port = free_port()
        home = self.run_dir / "kafka"
        data = home / "data"
        shutil.rmtree(home, ignore_errors=True)
        data.mkdir(parents=True)
        template = (LOCAL_DIR / "server.properties.template").read_text()
        (home / "server.properties").write_text(
            template.format(port=self.port, controller_port=self.controller_port, data_dir=data)
        )
        cluster_id = kafka_cluster_id()
        fmt = subprocess.run(
            [
                *self._java(),
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(home / "server.properties"),
            ],
            capture_output=True,
            text=True,
        )
        if fmt.returncode != 0:
            raise LocalRunnerError(f"kafka storage format failed: {fmt.stderr or fmt.stdout}")
        self._launch(timeout)

    def restart(self, timeout: float = 90.0) -> None:
        """Start again on the same ports and data (after :meth:`kill` or :meth:`stop`)."""
        self._launch(timeout)

    def _java(self) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise LocalRunnerError("java not found: the local broker needs Java 17+")
        home = self.run_dir / "kafka"
        flags = self.jvm_flags
        if flags is None:
            archive = kafka_class_archive()
            flags = (f"-XX:SharedArchiveFile={archive}",) if archive.exists() else ()
        return [
            java,
            *flags,
            f"-Xmx{self.heap}",
            "-Xms256m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            # every JIT compiler thread from the start, so that all get background_nice
            "-XX:-UseDynamicNumberOfCompilerThreads",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={home}",
            f"-Dlog4j2.configurationFile={LOCAL_DIR / 'log4j2.properties'}",
            "-cp",
            f"{KAFKA_LIBS}/*",
        ]

    def _launch(self, timeout: float) -> None:
        home = self.run_dir / "kafka"
        log = (home / "stdout.log").open("ab")
        self.proc = subprocess.Popen(
            [*self._java(), "kafka.Kafka", str(home / "server.properties")],
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,  # the caller's session: see REDIS_NICE
        )
        _wait_for(self._ready, timeout, f"kafka on {self.bootstrap}", self.proc)
        logger.info("kafka ready on %s (logs in %s)", self.bootstrap, home)
        if self.background_nice:
            self._lower_background_threads()

    def _lower_background_threads(self) -> None:
        """Give the housekeeping threads ``background_nice``; the log cleaner starts with
        the broker's logs, so those missing are looked for again for a few seconds."""
        assert self.proc is not None
        if not Path(f"/proc/{self.proc.pid}/task").is_dir():
            logger.info("kafka: no /proc here: its housekeeping threads keep their priority")
            return
        missing: tuple[str, ...] = BROKER_BACKGROUND_THREADS
        lowered: list[str] = []
        deadline = time.monotonic() + 10.0
        while True:
            lowered += lower_threads(self.proc.pid, missing, self.background_nice)
            missing = tuple(p for p in missing if not any(n.startswith(p) for n in lowered))
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        logger.info(
            "kafka: %s at nice +%d%s",
            ", ".join(sorted(lowered)) or "no thread",
            self.background_nice,
            f" ({', '.join(missing)} not found)" if missing else "",
        )

    def _ready(self) -> bool:
        if not port_open(self.port):
            return False
        try:
            md = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=2)
        except Exception:
            return False
        return bool(md.brokers)

    def stop(self) -> None:
        _terminate(self.proc, "kafka", grace=20)
        self.proc = None

    def kill(self) -> None:
        """Hard-kill the broker (fault tests); :meth:`restart` brings it back."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): it looks unreachable, data is kept."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGCONT)


@dataclass
class LocalRedis:
    """Debian's redis-server on 127.0.0.1 with its data under the run dir."""

    run_dir: Path
    port: int = 0
    name: str = "redis"  # its folder under the run dir
    options: tuple[str, ...] = ()  # more redis-server options (a cluster node's)
    nice: int = 0  # CPU priority below the caller's (a nice(1) increment; REDIS_NICE)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> None:
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(server).exists():
            raise LocalRunnerError(
                "redis-server not found: run `make setup` (installs Debian's redis-server)"
            )
        self.port = self.port or free_port()
        data = self.run_dir / self.name
        data.mkdir(parents=True, exist_ok=True)
        log = (data / "redis.log").open("wb")
        # nice(1) execs the server: same pid, and every thread it starts inherits
        lower = ["nice", "-n", str(self.nice)] if self.nice and shutil.which("nice") else []
        self.proc = subprocess.Popen(
            [
                *lower,
                server,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(data),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
                "--maxclients",
                "20000",
                *(self.options or ("--databases", "1024")),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,  # the caller's session: see REDIS_NICE
        )
        _wait_for(lambda: port_open(self.port), timeout, f"redis on {self.port}", self.proc)
        logger.info("redis ready on %s", self.url)

    def stop(self) -> None:
        _terminate(self.proc, "redis", grace=5)
        self.proc = None

    def kill(self) -> None:
        """Hard-kill Redis (fault tests; nothing is saved); :meth:`start` brings it back empty."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None


def _terminate(proc: subprocess.Popen[bytes] | None, what: str, grace: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGCONT)
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        logger.warning("%s did not stop within %ss; killing it", what, grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def create_topics(
    bootstrap: str, specs: tuple[TopicSpec, ...] | None = None, *, prefix: str = ""
) -> list[str]:
    """Create topics explicitly (idempotent: existing ones are left as they are)."""
    specs = specs or topic_specs()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=10).topics)
    new = [
        NewTopic(
            prefix + s.name,
            num_partitions=s.partitions,
            replication_factor=1,
            config=dict(s.configs),
        )
        for s in specs
        if prefix + s.name not in existing
    ]
    if new:
        for name, fut in admin.create_topics(new, operation_timeout=30).items():
            try:
                fut.result()
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise LocalRunnerError(f"cannot create topic {name}: {exc}") from exc
    return [t.topic for t in new]


@dataclass
class LocalStack:
    """Kafka + Redis for one run; a context manager that always cleans up."""

    run_dir: Path = DEFAULT_RUN_DIR
    kafka_port: int = 0
    redis_port: int = 0
    with_redis: bool = True  # False: Kafka only (``hqstream up --redis-cluster`` brings its own)
    redis_nice: int = 0  # Redis's CPU priority below the caller's (REDIS_NICE)
    #: the broker's housekeeping threads' priority below the caller's (BROKER_BACKGROUND_NICE)
    broker_background_nice: int = 0
    kafka: LocalKafka = field(init=False)
    redis: LocalRedis = field(init=False)

    def __post_init__(self) -> None:
        self.kafka = LocalKafka(
            self.run_dir, port=self.kafka_port, background_nice=self.broker_background_nice
        )
        self.redis = LocalRedis(self.run_dir, port=self.redis_port, nice=self.redis_nice)

    def start(self) -> LocalStack:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            if self.with_redis:
                self.redis.start()
            self.kafka.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.kafka.stop()
        self.redis.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
