"""A real, throwaway Apache Kafka cluster for tests: KRaft brokers from the official jars, no ZooKeeper.

``scripts/install-kafka.sh`` fetches the broker jars through Maven (``scripts/kafka/pom.xml``) into
``$LINEAGE_KAFKA_HOME`` (by default ``~/.cache/lineage-ledger/kafka-<version>``). ``KafkaCluster`` starts 1 or 3
nodes from there, each a combined broker and controller on 127.0.0.1 with free ports and its own temporary
directory, formats their storage with one cluster id and a static controller quorum, and waits with bounded polling
until the cluster's metadata lists every broker. A node can be SIGKILLed and started again on the same ports and
data, and everything is stopped and deleted at the end.

``kafka_server`` (one per test process) is a single node; ``kafka_topic`` gives each test a fresh 4-partition
topic on it; ``kafka_cluster3`` gives a test a 3-node quorum of its own to break.

When java, the jars or confluent_kafka are missing the tests skip, saying that ``make test`` installs the jars;
with ``CI=true`` they fail instead, so a CI run never passes by skipping its integrations.

``running_kafka`` is the same cluster as a context manager, for benchmarks.
"""

from __future__ import annotations

import base64
import importlib.util
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import pytest

from tests.services import ServiceUnavailable, _free_port, _unavailable

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.admin._metadata import ClusterMetadata  # confluent_kafka.admin does not re-export it

__all__ = [
    "CLIENT_LOGGER",
    "KafkaCluster",
    "find_kafka_libs",
    "kafka_cluster3",
    "kafka_home",
    "kafka_server",
    "kafka_topic",
    "kafka_version",
    "running_kafka",
]

CLIENT_LOGGER = logging.getLogger("tests.kafka.librdkafka")
"""Pass as ``logger=`` to confluent_kafka clients: librdkafka's own log (a refused connection to a killed broker,
say) then goes through logging, which pytest captures, instead of straight to the terminal's stderr."""

_POM = Path(__file__).resolve().parent.parent / "scripts" / "kafka" / "pom.xml"
_STAMP = ".complete"
_INSTALL_HINT = "`make test` installs them via scripts/install-kafka.sh"
_START_ATTEMPTS = 5
_READY_SECONDS = 90.0
"""Three JVMs starting at once on a shared 2-core machine, next to another test process doing the same."""
_FORMAT_SECONDS = 60.0
_STOP_SECONDS = 2.0
"""Grace after SIGTERM. One node stops in well under a second; of three stopped together, the last controller
spends 5 s trying to hand over leadership to voters that are already gone. Nothing on disk is kept, so SIGKILL."""
_TOPIC_SECONDS = 30.0
_POLL_SECONDS = 0.05
_JVM_FLAGS = (
    "-Xms128m",
    "-Xmx512m",
    # Startup on a small machine: one GC thread instead of G1's, the C1 compiler only (C2 compiles little in a
    # short test run and competes with the broker for two cores), no hsperfdata files in /tmp.
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
)
_SETPRIV = shutil.which("setpriv")
_ORPHAN_GUARD = (_SETPRIV, "--pdeathsig", "KILL", "--") if _SETPRIV else ()
"""util-linux's setpriv, where there is one, runs each JVM with a parent-death signal: should the test process die
without its teardown (a crashed xdist worker, a SIGKILL), its brokers die with it instead of living on with half a
gigabyte of heap each. The "parent" is the thread that started the JVM, so start nodes from a thread that outlives
them (fixtures and tests run on the main thread)."""
_MAIN = "kafka.Kafka"
_STORAGE_TOOL = "kafka.tools.StorageTool"
"""``kafka-storage.sh format``: in Kafka 4.x still the Scala object in kafka_2.13 (not org.apache.kafka.tools)."""
_LOG4J2 = """\
status = warn
shutdownHook = disable
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
"""
"""Everything the broker logs goes to one file in its directory. Log4j's own shutdown hook is off: the broker
logs while it stops, and with the hook on log4j would already be gone (and complain on stderr)."""


def kafka_version() -> str:
    """The Kafka version ``scripts/kafka/pom.xml`` (and so scripts/install-kafka.sh) fetches."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", _POM.read_text(encoding="utf-8"))
    if match is None:
        raise RuntimeError(f"no <kafka.version> in {_POM}")
    return match.group(1).strip()


def kafka_home() -> Path:
    """Where scripts/install-kafka.sh puts the jars: ``$LINEAGE_KAFKA_HOME``, else the per-version cache dir."""
    home = os.environ.get("LINEAGE_KAFKA_HOME")
    if home:
        return Path(home)
    return Path.home() / ".cache" / "lineage-ledger" / f"kafka-{kafka_version()}"


def find_kafka_libs() -> Path | None:
    """The directory of broker jars under ``kafka_home()``, if scripts/install-kafka.sh finished filling it."""
    home = kafka_home()
    libs = home / "libs"
    return libs if (home / _STAMP).is_file() and libs.is_dir() else None


def _new_cluster_id() -> str:
    """A random cluster id as Kafka prints them (URL-safe base64 of 16 bytes, unpadded)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):  # would read as an option on the storage tool's command line
            return cluster_id


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the JVM's server sockets do
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _since(path: Path, offset: int) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def _stop_processes(processes: Sequence[subprocess.Popen[bytes]], timeout: float) -> None:
    """SIGTERM them all at once, then SIGKILL whichever has not exited within ``timeout`` seconds."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class _PortClash(Exception):
    """A node exited because another process took one of its ports first."""


@dataclass(slots=True)
class _Node:
    node_id: int
    root: Path
    broker_port: int
    controller_port: int
    process: subprocess.Popen[bytes] | None = None
    marks: tuple[int, int] = (0, 0)
    """The sizes of server.log and console.log when the process started: what it wrote since is after these."""

    @property
    def config(self) -> Path:
        return self.root / "server.properties"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    @property
    def console(self) -> Path:
        return self.root / "console.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self) -> str:
        return f"--- {self.log} ---\n{_tail(self.log)}\n--- {self.console} ---\n{_tail(self.console, 1000)}"

    def clashed(self) -> bool:
        """Whether this run of the node failed to bind a port (said in server.log, or on the console before logging)."""
        return any(
            "Address already in use" in _since(path, mark)
            for path, mark in zip((self.log, self.console), self.marks, strict=True)
        )


class KafkaCluster:
    """``nodes`` (1 or 3) Kafka KRaft servers on 127.0.0.1, each both broker and controller, started on entry.

    Node ``i`` (0-based) has ``node.id`` ``i + 1``, a broker listener and a controller listener on free ports and
    a directory of its own (configuration, data, ``server.log``) under one temporary directory. The controllers
    form a static quorum (``controller.quorum.voters``); the storage of every node is formatted with one random
    cluster id. Internal topics are replicated to every node (with 3 nodes: min.insync.replicas 2), topics are
    never created automatically, and a new consumer group rebalances at once.
    """

    def __init__(self, libs: Path, nodes: int = 1, *, java: str = "java") -> None:
        if nodes not in (1, 3):
            raise ValueError(f"a cluster of 1 or 3 nodes, not {nodes}")
        self.libs = libs
        self.java = java
        self.size = nodes
        self.cluster_id = _new_cluster_id()
        self._root: Path | None = None
        self._nodes: list[_Node] = []
        self._admin: AdminClient | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------

    def __enter__(self) -> KafkaCluster:
        try:
            self._start_all()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _start_all(self) -> None:
        self._root = Path(tempfile.mkdtemp(prefix="lineage-kafka-"))
        for _ in range(_START_ATTEMPTS):
            self._layout()
            self._format()
            for index in range(self.size):
                self._spawn(index)
            try:
                self._wait_until_up(range(self.size))
            except _PortClash:
                # another process took a port between our probe and the broker's bind: new ports, new storage
                _stop_processes([n.process for n in self._nodes if n.process is not None], 0.0)
                self._admin = None  # it knows the old ports
                for node in self._nodes:
                    shutil.rmtree(node.root, ignore_errors=True)
                continue
            return
        raise RuntimeError(f"Kafka nodes could not bind free ports in {_START_ATTEMPTS} attempts")

    def _layout(self) -> None:
        """Pick distinct free ports and write every node's configuration into a fresh directory."""
        assert self._root is not None
        ports: list[int] = []
        while len(ports) < 2 * self.size:
            port = _free_port()
            if port not in ports:
                ports.append(port)
        self._nodes = [
            _Node(
                node_id=i + 1,
                root=self._root / f"node-{i + 1}",
                broker_port=ports[2 * i],
                controller_port=ports[2 * i + 1],
            )
            for i in range(self.size)
        ]
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self._nodes)
        replicas, min_isr = self.size, min(self.size, 2)
        for node in self._nodes:
            node.root.mkdir()
            settings = {
                "process.roles": "broker,controller",
                "node.id": node.node_id,
                "controller.quorum.voters": voters,
                "listeners": f"PLAINTEXT://127.0.0.1:{node.broker_port},CONTROLLER://127.0.0.1:{node.controller_port}",
                "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.broker_port}",
                "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "controller.listener.names": "CONTROLLER",
                "inter.broker.listener.name": "PLAINTEXT",
                "log.dirs": node.root / "data",
                "num.partitions": 1,
                "default.replication.factor": replicas,
                "auto.create.topics.enable": "false",
                "group.initial.rebalance.delay.ms": 0,
                "offsets.topic.replication.factor": replicas,
                "offsets.topic.num.partitions": 5,
                "transaction.state.log.replication.factor": replicas,
                "transaction.state.log.min.isr": min_isr,
                "transaction.state.log.num.partitions": 5,
                "share.coordinator.state.topic.replication.factor": replicas,
                "share.coordinator.state.topic.min.isr": min_isr,
                # a killed broker is fenced (and loses its leaderships) after 4 s instead of 9
                "broker.session.timeout.ms": 4000,
                "broker.heartbeat.interval.ms": 500,
                # small: a few threads, 1 MB segments, and an 8 MB log cleaner buffer instead of 128 MB of heap
                "num.network.threads": 2,
                "num.io.threads": 2,
                "num.recovery.threads.per.data.dir": 1,
                "background.threads": 2,
                "log.segment.bytes": 1048576,
                "log.retention.bytes": 16777216,
                "log.cleaner.threads": 1,
                "log.cleaner.dedupe.buffer.size": 8388608,
            }
            node.config.write_text("".join(f"{k}={v}\n" for k, v in settings.items()), encoding="utf-8")
            (node.root / "log4j2.properties").write_text(_LOG4J2.format(log=node.log), encoding="utf-8")

    def _java(self, node: _Node, main: str, *args: str) -> list[str]:
        return [
            *_ORPHAN_GUARD,
            self.java,
            *_JVM_FLAGS,
            f"-Dlog4j2.configurationFile={node.root / 'log4j2.properties'}",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def _format(self) -> None:
        """Format every node's storage with the cluster id, the JVMs in parallel."""
        tools = [
            (
                node,
                subprocess.Popen(
                    self._java(
                        node, _STORAGE_TOOL, "format", "--cluster-id", self.cluster_id, "--config", str(node.config)
                    ),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                ),
            )
            for node in self._nodes
        ]
        failures = []
        for node, tool in tools:
            try:
                output, _ = tool.communicate(timeout=_FORMAT_SECONDS)
            except subprocess.TimeoutExpired:
                tool.kill()
                output, _ = tool.communicate()
            if tool.returncode != 0:
                failures.append(f"node {node.node_id}: {output.decode(errors='replace')[-2000:]}")
        if failures:
            raise RuntimeError("Kafka storage format failed:\n" + "\n".join(failures))

    def _spawn(self, index: int) -> None:
        node = self._nodes[index]
        node.marks = (_size(node.log), _size(node.console))
        with node.console.open("ab") as console:
            node.process = subprocess.Popen(
                self._java(node, _MAIN, str(node.config)),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
            )

    def _wait_until_up(self, indices: Iterable[int]) -> None:
        """Poll until each node in ``indices`` listens and the cluster's metadata lists every running broker.

        A broker opens its client listener only when it has caught up with the metadata log and been unfenced,
        so a refused connection means "not yet". The metadata check also asks for this cluster's id and these
        ports, so a stranger that happens to hold one of our ports (see ``_PortClash``) never passes for us.
        """
        waiting = [self._nodes[i] for i in indices]
        deadline = time.monotonic() + _READY_SECONDS
        while True:
            for node in waiting:
                if not node.running:
                    if node.clashed():
                        raise _PortClash()
                    code = node.process.returncode if node.process is not None else None
                    raise RuntimeError(f"Kafka node {node.node_id} exited with {code} at start:\n{node.tail()}")
            if all(_accepts(node.broker_port) for node in waiting) and self._lists_running_brokers():
                return
            if time.monotonic() > deadline:
                tails = "\n".join(node.tail() for node in waiting)
                raise RuntimeError(f"Kafka nodes {[n.node_id for n in waiting]} not up in {_READY_SECONDS} s:\n{tails}")
            time.sleep(_POLL_SECONDS)

    def _lists_running_brokers(self) -> bool:
        from confluent_kafka import KafkaException

        try:
            metadata = self.admin.list_topics(timeout=2)
        except KafkaException:
            return False
        listed = {(b.id, b.port) for b in metadata.brokers.values()}
        wanted = {(n.node_id, n.broker_port) for n in self._nodes if n.running}
        return str(metadata.cluster_id) == self.cluster_id and wanted <= listed

    def stop(self) -> None:
        """Stop every node (SIGTERM, SIGKILL after a timeout) and delete the cluster's directory. Idempotent."""
        if self._admin is not None:
            self._admin = None  # librdkafka closes the client when it is collected
        _stop_processes([n.process for n in self._nodes if n.process is not None], _STOP_SECONDS)
        for node in self._nodes:
            node.process = None
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    # --- nodes -----------------------------------------------------------------------------------------------

    def kill(self, index: int) -> None:
        """SIGKILL node ``index``'s JVM (no controlled shutdown) and wait for it to be gone."""
        node = self._nodes[index]
        if node.process is None or not node.running:
            raise RuntimeError(f"Kafka node {node.node_id} is not running")
        node.process.kill()
        node.process.wait()

    def start(self, index: int) -> None:
        """Start node ``index`` again, on its old ports and data, and wait until the cluster lists it again."""
        node = self._nodes[index]
        if node.running:
            raise RuntimeError(f"Kafka node {node.node_id} is already running")
        for _ in range(_START_ATTEMPTS):
            # its ports are ours, but a client's outgoing connection may hold one of them for a moment
            deadline = time.monotonic() + _READY_SECONDS
            while not (_bindable(node.broker_port) and _bindable(node.controller_port)):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the ports of Kafka node {node.node_id} stayed in use for {_READY_SECONDS} s")
                time.sleep(_POLL_SECONDS)
            self._spawn(index)
            try:
                self._wait_until_up([index])
            except _PortClash:
                continue
            return
        raise RuntimeError(f"Kafka node {node.node_id} could not bind its ports in {_START_ATTEMPTS} attempts")

    def node_id(self, index: int) -> int:
        """The ``node.id`` (broker id) of node ``index``."""
        return self._nodes[index].node_id

    def index_of(self, node_id: int) -> int:
        """The index of the node whose ``node.id`` is ``node_id``."""
        for index, node in enumerate(self._nodes):
            if node.node_id == node_id:
                return index
        raise KeyError(node_id)

    def log_path(self, index: int) -> Path:
        """Node ``index``'s server.log (gone after ``stop``)."""
        return self._nodes[index].log

    # --- clients ---------------------------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """``bootstrap.servers`` for clients: every node's broker listener, ``127.0.0.1:p1,127.0.0.1:p2,...``."""
        return ",".join(f"127.0.0.1:{n.broker_port}" for n in self._nodes)

    @property
    def admin(self) -> AdminClient:
        """An AdminClient on ``bootstrap``, made on first use and kept (its log goes to ``CLIENT_LOGGER``)."""
        if self._admin is None:
            from confluent_kafka.admin import AdminClient

            # reconnect.backoff.max.ms: retry a restarted broker within a second, not librdkafka's default 10 s
            config: dict[str, str | int | float | bool] = {
                "bootstrap.servers": self.bootstrap,
                "reconnect.backoff.max.ms": 1000,
            }
            self._admin = AdminClient(config, logger=CLIENT_LOGGER)
        return self._admin

    def metadata(self, topic: str | None = None) -> ClusterMetadata:
        """The cluster's metadata (of one topic, or of all of them) as some live broker sees it."""
        return self.admin.list_topics(topic, timeout=10)

    def create_topic(
        self, name: str, partitions: int, replication_factor: int, config: Mapping[str, str] | None = None
    ) -> None:
        """Create ``name``; wait until every partition has a leader and all ``replication_factor`` replicas in sync."""
        from confluent_kafka.cimpl import NewTopic  # confluent_kafka.admin does not re-export it for mypy

        topic = NewTopic(
            name, num_partitions=partitions, replication_factor=replication_factor, config=dict(config or {})
        )
        futures = self.admin.create_topics([topic], operation_timeout=_TOPIC_SECONDS, request_timeout=_TOPIC_SECONDS)
        futures[name].result(timeout=_TOPIC_SECONDS + 10)
        self.wait_for_topic(name, partitions=partitions, in_sync=replication_factor)

    def wait_for_topic(self, name: str, *, partitions: int, in_sync: int, timeout: float = _TOPIC_SECONDS) -> None:
        """Poll until ``name`` has ``partitions`` partitions with ``in_sync`` in-sync replicas, each led and served.

        Served: its leader answers for it (with its end offset). Metadata can name a leader a moment before that
        broker has taken the partition over, and in that moment it answers NOT_LEADER_FOR_PARTITION.
        """
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + timeout
        while True:
            with suppress(KafkaException):
                found = self.metadata(name).topics.get(name)
                if (
                    found is not None
                    and found.error is None
                    and len(found.partitions) == partitions
                    and all(p.leader >= 0 and len(p.isrs) == in_sync for p in found.partitions.values())
                    and self._leaders_answer(name, partitions)
                ):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {name} not ready ({partitions} partitions, ISR {in_sync}) in {timeout} s")
            time.sleep(_POLL_SECONDS)

    def _leaders_answer(self, name: str, partitions: int) -> bool:
        from confluent_kafka import KafkaException, TopicPartition
        from confluent_kafka.admin._listoffsets import OffsetSpec  # confluent_kafka.admin does not re-export it

        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        futures = self.admin.list_offsets(
            {TopicPartition(name, p): latest for p in range(partitions)}, request_timeout=5
        )
        try:
            for future in futures.values():
                future.result(timeout=10)
        except (KafkaException, TimeoutError):
            return False
        return True

    def leader_of(self, topic: str, partition: int = 0) -> int:
        """The index of the node that leads ``partition`` of ``topic`` now."""
        return self.index_of(self.metadata(topic).topics[topic].partitions[partition].leader)


@contextmanager
def running_kafka(nodes: int = 1) -> Iterator[KafkaCluster]:
    """A fresh Kafka cluster of ``nodes`` (1 or 3) KRaft nodes on 127.0.0.1 for the duration of the block.

    Raises ServiceUnavailable when confluent_kafka, java or the broker jars (scripts/install-kafka.sh) are missing.
    """
    if importlib.util.find_spec("confluent_kafka") is None:
        raise ServiceUnavailable(f"confluent_kafka is not installed (the [kafka] extra); {_INSTALL_HINT}")
    java = shutil.which("java")
    if java is None:
        raise ServiceUnavailable(f"java (17 or newer) is not on PATH, so no Kafka broker can run; {_INSTALL_HINT}")
    libs = find_kafka_libs()
    if libs is None:
        raise ServiceUnavailable(f"the Kafka {kafka_version()} broker jars are not in {kafka_home()}; {_INSTALL_HINT}")
    with KafkaCluster(libs, nodes, java=java) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kafka_server() -> Iterator[KafkaCluster]:
    """A single-node Kafka cluster private to this test process (skip, or fail with CI=true, if absent)."""
    with ExitStack() as stack:
        try:
            cluster = stack.enter_context(running_kafka())
        except ServiceUnavailable as e:
            _unavailable(str(e))
        yield cluster


@pytest.fixture
def kafka_topic(kafka_server: KafkaCluster) -> str:
    """The name of a fresh, empty 4-partition topic on ``kafka_server``."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    kafka_server.create_topic(name, partitions=4, replication_factor=1)
    return name


@pytest.fixture
def kafka_cluster3() -> Iterator[KafkaCluster]:
    """A 3-node Kafka cluster (3 brokers, 3 controllers) of this test's own, stopped after it.

    Function scope on purpose: the tests that want three nodes kill and restart them, so sharing one cluster
    would hand the next test a quorum in an unknown state. Starting one costs a few seconds.
    """
    with ExitStack() as stack:
        try:
            cluster = stack.enter_context(running_kafka(nodes=3))
        except ServiceUnavailable as e:
            _unavailable(str(e))
        yield cluster
