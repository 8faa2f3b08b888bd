"""A real single-node Apache Kafka broker on loopback, without Docker: for tests, CI and laptops.

The broker's jars come from Maven Central (``deploy/kafka/pom.xml``, resolved once per version into
a cache outside git); the broker runs KRaft (broker and controller in one JVM) on two free loopback
ports. Its state (pid, ports, work dir) is a JSON file in a state dir, so ``status`` and ``stop``
work from another process, and ``start`` is idempotent.

Environment overrides:
    ``MOTORWATCH_KAFKA_DEPLOY``  the folder with pom.xml, server.properties, log4j2.properties
    ``MOTORWATCH_KAFKA_CACHE``   jar cache (default ``~/.cache/motorwatch/kafka``; one libs-<version> each)
    ``MOTORWATCH_KAFKA_STATE``   state dir (default ``~/.local/state/motorwatch/kafka``)
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

# Tried in order: the first that Maven Central resolves is used.
KAFKA_VERSIONS = ("4.3.1", "4.2.1")
MAIN_CLASS = "kafka.Kafka"
STATE_FILE = "broker.json"
LOG_FILE = "broker.log"
# The quick JIT tier only (C1) and the serial GC: ~40% less CPU to start on a busy 2-core machine;
# the broker still outruns the Python clients many times over.
BROKER_JVM = ("-Xms256m", "-Xmx512m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
FORMAT_JVM = ("-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0

Log = Callable[[str], None]


class BrokerError(RuntimeError):
    """The local broker could not be resolved, started or stopped. The message says why."""


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    """A running local broker."""

    pid: int
    port: int
    controller_port: int
    work_dir: str
    log: str
    version: str

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def _quiet(_: str) -> None:
    pass


def deploy_dir() -> Path:
    """``deploy/kafka`` of this checkout (an editable install), or ``$MOTORWATCH_KAFKA_DEPLOY``."""
    env = os.environ.get("MOTORWATCH_KAFKA_DEPLOY")
    path = Path(env) if env else Path(__file__).resolve().parents[1] / "deploy" / "kafka"
    if not (path / "pom.xml").is_file():
        raise BrokerError(f"no Kafka deploy files in {path} (set MOTORWATCH_KAFKA_DEPLOY to deploy/kafka)")
    return path


def cache_dir() -> Path:
    env = os.environ.get("MOTORWATCH_KAFKA_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "motorwatch" / "kafka"


def default_state_dir() -> Path:
    env = os.environ.get("MOTORWATCH_KAFKA_STATE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "motorwatch" / "kafka"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (several test sessions may share one cache or state dir)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def resolve_jars(versions: tuple[str, ...] = KAFKA_VERSIONS, log: Log = _quiet) -> tuple[str, Path]:
    """The first of ``versions`` whose classpath resolves: ``(version, libs dir)``. Cached per version."""
    cache = cache_dir()
    errors = []
    with _locked(cache / ".resolve.lock"):
        for version in versions:
            libs = cache / f"libs-{version}"
            if (libs / ".complete").is_file():
                return version, libs
            if shutil.which("mvn") is None:
                raise BrokerError("Maven (mvn) is not installed: apt-get install -y maven")
            log(f"resolving Kafka {version} from Maven Central into {libs} ...")
            staging = Path(tempfile.mkdtemp(prefix=f"libs-{version}.", dir=cache))
            staging.chmod(0o755)
            cmd = [
                "mvn",
                "-B",
                "-q",
                "-f",
                str(deploy_dir() / "pom.xml"),
                f"-Dkafka.version={version}",
                "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staging}",
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode == 0 and any(staging.glob(f"kafka_2.13-{version}.jar")):
                (staging / ".complete").write_text(" ".join(cmd) + "\n")
                shutil.rmtree(libs, ignore_errors=True)
                staging.rename(libs)
                return version, libs
            shutil.rmtree(staging, ignore_errors=True)
            errors.append(f"{version}: {_tail(done.stdout + done.stderr, 15)}")
            log(f"Kafka {version} did not resolve")
    raise BrokerError("could not resolve the Kafka broker from Maven Central:\n" + "\n".join(errors))


def status(state_dir: Path | None = None) -> BrokerInfo | None:
    """The broker recorded in ``state_dir`` if its process is alive, else None."""
    state = (state_dir or default_state_dir()) / STATE_FILE
    try:
        info = BrokerInfo(**json.loads(state.read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None
    return info if _is_broker(info.pid) else None


def start(
    state_dir: Path | None = None,
    versions: tuple[str, ...] = KAFKA_VERSIONS,
    timeout_s: float = READY_TIMEOUT_S,
    log: Log = _quiet,
) -> BrokerInfo:
    """Start the broker (or return the one already running from ``state_dir``) once it is ready."""
    state_dir = state_dir or default_state_dir()
    with _locked(state_dir / ".lock"):
        running = status(state_dir)
        if running is not None:
            return running
        _clean(state_dir)
        version, libs = resolve_jars(versions, log)
        try:
            return _launch(state_dir, version, libs, timeout_s, log)
        except _PortTaken:  # a free port picked here was taken before the JVM bound it: once more
            log("a port was taken meanwhile; retrying with new ports")
        try:
            return _launch(state_dir, version, libs, timeout_s, log)
        except _PortTaken as exc:
            raise BrokerError(str(exc)) from None


def stop(state_dir: Path | None = None, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """Stop the broker of ``state_dir`` (SIGTERM, then SIGKILL after ``timeout_s``) and remove its
    data. The log stays at ``state_dir/broker.log``. Returns whether a broker was running."""
    state_dir = state_dir or default_state_dir()
    with _locked(state_dir / ".lock"):
        info = status(state_dir)
        if info is not None:
            _terminate(info.pid, timeout_s)
        _clean(state_dir)
        return info is not None


class _PortTaken(Exception):
    pass


def _launch(state_dir: Path, version: str, libs: Path, timeout_s: float, log: Log) -> BrokerInfo:
    java = shutil.which("java")
    if java is None:
        raise BrokerError("Java is not installed: apt-get install -y openjdk-17-jre-headless")
    deploy = deploy_dir()
    work = state_dir / "work"
    work.mkdir(parents=True)
    try:
        port, controller_port = _free_ports(2)
        template = string.Template((deploy / "server.properties").read_text())
        props = work / "server.properties"
        props.write_text(
            template.substitute(port=port, controller_port=controller_port, data_dir=work / "data")
        )
        jvm = [java, f"-Dlog4j2.configurationFile={deploy / 'log4j2.properties'}", f"-Dkafka.logs.dir={work}"]
        jvm += ["-cp", str(libs / "*")]
        cluster_id = new_cluster_id()
        storage_tool = [*jvm, *FORMAT_JVM, "kafka.tools.StorageTool", "format", "--standalone"]
        fmt = subprocess.run(
            [*storage_tool, "-t", cluster_id, "-c", str(props)], capture_output=True, text=True, check=False
        )
        if fmt.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed:\n{_tail(fmt.stdout + fmt.stderr, 20)}")
        log_path = state_dir / LOG_FILE
        with log_path.open("wb") as out:
            proc = subprocess.Popen(
                [*jvm, *BROKER_JVM, MAIN_CLASS, str(props)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives `motorwatch kafka start`; Ctrl-C there does not reach it
            )
        info = BrokerInfo(proc.pid, port, controller_port, str(work), str(log_path), version)
        (state_dir / STATE_FILE).write_text(json.dumps(asdict(info)) + "\n")
        try:
            _wait_ready(proc, info, timeout_s)
        except BaseException:
            _terminate(proc.pid, STOP_TIMEOUT_S)
            raise
    except BaseException:
        _clean(state_dir)
        raise
    log(f"Kafka {version} ready at {info.bootstrap} (pid {proc.pid})")
    return info


def _wait_ready(proc: subprocess.Popen, info: BrokerInfo, timeout_s: float) -> None:
    """Kafka opens its client port only once the broker is up; then one metadata round trip."""
    deadline = time.monotonic() + timeout_s
    while True:
        code = proc.poll()
        if code is not None:
            tail = _tail(Path(info.log).read_text(errors="replace"), 30)
            if "Address already in use" in tail:
                raise _PortTaken(f"port {info.port} or {info.controller_port} already in use:\n{tail}")
            raise BrokerError(f"the Kafka broker exited with code {code} while starting:\n{tail}")
        if time.monotonic() > deadline:
            raise BrokerError(
                f"the Kafka broker was not ready after {timeout_s:.0f} s:\n"
                f"{_tail(Path(info.log).read_text(errors='replace'), 30)}"
            )
        try:
            socket.create_connection(("127.0.0.1", info.port), timeout=0.5).close()
        except OSError:
            time.sleep(0.1)
            continue
        break
    _describe_cluster(info.bootstrap, max(5.0, deadline - time.monotonic()))


def new_cluster_id() -> str:
    """A random KRaft cluster id: 16 bytes, URL-safe base64 without padding, never starting with '-'.

    One id in 64 would start with '-', which the storage tool's argument parser takes for an option
    (Kafka's own ``Uuid.randomUuid`` draws again for the same reason).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _describe_cluster(bootstrap: str, timeout_s: float) -> None:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    timeout_ms = int(timeout_s * 1000)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms
        )
        try:
            admin.describe_cluster()
        finally:
            admin.close()
    except KafkaError as exc:
        raise BrokerError(
            f"the broker at {bootstrap} accepts connections but answers no metadata: {exc}"
        ) from exc


def _terminate(pid: int, timeout_s: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _is_alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            if not _wait_dead(pid, deadline):
                raise BrokerError(f"the Kafka broker (pid {pid}) survived SIGKILL")
            break
        time.sleep(0.1)
    _reap(pid)


def _wait_dead(pid: int, deadline: float) -> bool:
    while _is_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _is_alive(pid: int) -> bool:
    """The process runs (reaping it first when it is our exited child). A JVM's main thread can
    exit before the others: the process shows as a zombie then, but is alive while threads remain."""
    _reap(pid)
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields["State"].strip()[0] not in "ZX" or int(fields["Threads"]) > 1


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _is_broker(pid: int) -> bool:
    """``pid`` is alive and still a Kafka JVM (not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return False
    return MAIN_CLASS.encode() in cmdline and _is_alive(pid)


def _clean(state_dir: Path) -> None:
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    shutil.rmtree(state_dir / "work", ignore_errors=True)


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
