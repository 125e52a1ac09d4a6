"""The four services as real subprocesses (``python -m services.<name>``), for the
local run, the system tests and the benchmark."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from deploy.local.procs import Managed, free_port, tail
from shared.apikeys import hash_key, new_key
from shared.webhooks import new_secret

SERVICES = ("intake", "router", "escalation", "notify")
REPO = Path(__file__).resolve().parents[2]


def write_secrets(path: Path, departments: list[str]) -> dict[str, list[str]]:
    """A fresh secret per department, in the format services read (CIVIC_SECRETS_FILE)."""
    secrets = {department: [new_secret()] for department in departments}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"departments": secrets}))
    path.chmod(0o600)
    return secrets


def write_api_keys(path: Path, clients: dict[str, str]) -> dict[str, str]:
    """A fresh key per client (name → role) in CIVIC_API_KEYS_FILE's format (hashes only).

    Returns name → plaintext key; the caller decides where a person may read them.
    """
    keys = {name: new_key() for name in clients}
    entries = [
        {"name": name, "roles": [role], "sha256": hash_key(keys[name])}
        for name, role in clients.items()
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"clients": entries}))
    return keys


@dataclass
class ServiceSet:
    """Start, stop, kill and restart the services; each keeps its port across restarts."""

    workdir: Path
    env: Mapping[str, str]
    ports: dict[str, int] = field(default_factory=lambda: {s: free_port() for s in SERVICES})
    procs: dict[str, Managed] = field(default_factory=dict)
    passthrough: bool = False  # True: children write to our stdout (make run)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def log_file(self, service: str) -> Path:
        return self.workdir / f"{service}.log"

    def child_env(self, service: str) -> dict[str, str]:
        env = {**os.environ, **self.env}
        env["CIVIC_HTTP_PORT"] = str(self.ports[service])
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def start(self, *services: str, wait: bool = True, timeout: float = 60) -> None:
        names = services or SERVICES
        for service in names:
            self.procs[service] = Managed.spawn(
                service,
                [sys.executable, "-m", f"services.{service}"],
                log_file=None if self.passthrough else self.log_file(service),
                env=self.child_env(service),
                cwd=REPO,
                stdout=sys.stdout.buffer if self.passthrough else None,  # type: ignore[arg-type]
            )
        if wait:
            for service in names:
                self.wait_ready(service, timeout)

    def wait_ready(self, service: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        proc = self.procs[service]
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(
                    f"{service} exited with {proc.popen.returncode} while starting:\n"
                    + tail(self.log_file(service))
                )
            try:
                if httpx.get(f"{self.url(service)}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{service} not ready after {timeout}s:\n{tail(self.log_file(service))}")

    def stop(self, *services: str) -> dict[str, int | None]:
        codes = {}
        for service in reversed(services or tuple(self.procs)):
            proc = self.procs.pop(service, None)
            if proc is not None:
                codes[service] = proc.stop(timeout=30)
        return codes

    def kill(self, service: str) -> None:
        proc = self.procs.pop(service, None)
        if proc is not None:
            proc.kill()

    def restart(self, service: str) -> None:
        self.stop(service)
        self.start(service)
