"""Child processes for the local stack: spawned in their own process group with a
log file, stopped with SIGTERM then SIGKILL, never left behind."""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


def as_user(user: str | None) -> dict[str, Any]:
    """Popen arguments to run as ``user`` with only that user's group: a root group
    kept as primary would deny access through group permission bits."""
    if user is None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Linux's default start of the range; BSDs and macOS start theirs higher, at 49152.
DEFAULT_EPHEMERAL_START = 32768
_given: set[int] = set()


def listening_ports() -> range:
    """Where servers we start listen: just below the range the kernel draws outgoing
    connections' source ports from. A port from that range (what binding port 0 gives)
    can be taken by any client's connection between our check and the server's bind —
    seen in CI, a service's HTTP port taken so while the tests ran."""
    try:
        start = int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        start = DEFAULT_EPHEMERAL_START
    return range(max(1024, start - 10_000), start)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, outside the ephemeral range, and not given out
    before by this process (a port stays free until its server binds it, so two calls
    in a row must not return the same one)."""
    ports = listening_ports()
    rng = random.Random()  # noqa: S311 - spreading ports, not security
    for port in rng.sample(ports, k=min(len(ports), 2_000)):  # each tried at most once
        if port in _given:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    # The range was configured away (or is full): fall back to any port the kernel gives.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Managed:
    name: str
    popen: subprocess.Popen[bytes]
    log_file: Path | None
    _log: IO[bytes] | None = None

    @classmethod
    def spawn(
        cls,
        name: str,
        argv: Sequence[str],
        *,
        log_file: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        stdout: int | IO[bytes] | None = None,
    ) -> Managed:
        log = None
        if log_file is not None:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            log = open(log_file, "ab")  # noqa: SIM115 - closed in stop()
        popen = subprocess.Popen(
            list(argv),
            stdout=stdout if stdout is not None else (log or subprocess.DEVNULL),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            **as_user(user),
            start_new_session=True,  # own process group: signals reach its children too
        )
        return cls(name, popen, log_file, log)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM, wait, then SIGKILL: the group is gone when this returns."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(10)
        else:
            self.signal(signal.SIGKILL)  # stray grandchildren, if any
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.popen.returncode

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.popen.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None


def tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_for(
    ready: Callable[[], bool],
    timeout: float,
    *,
    what: str,
    alive: Managed | None = None,
    log_file: Path | None = None,
    interval: float = 0.2,
) -> None:
    """Poll ``ready`` until true; fail fast with the log's tail if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if alive is not None and not alive.alive():
            raise RuntimeError(
                f"{what} exited with {alive.popen.returncode} while starting; "
                f"last lines of {log_file}:\n{tail(log_file)}"
            )
        time.sleep(interval)
    raise TimeoutError(
        f"{what} not ready after {timeout:.0f}s; last lines of {log_file}:\n{tail(log_file)}"
    )


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
