"""`make run`: everything starts, a request flows through, Ctrl-C ends it all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.settings import REPO_ROOT

pytestmark = [pytest.mark.system]


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def test_local_run_shows_a_case_through_every_service_and_stops_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIVIC_")}
    workdir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.local.run", "--rate", "2", "--workdir", str(workdir)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: dict[str, set[str]] = {}
    pids: set[int] = set()
    lines: list[str] = []
    traced = None
    deadline = time.monotonic() + 150
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == "service started":
                pids.add(record["pid"])
            case_id = record.get("case_id")
            if case_id:
                seen.setdefault(case_id, set()).add(f"{record['service']}:{record['event']}")
                steps = seen[case_id]
                if {
                    "intake:request accepted",
                    "router:case dispatched",
                    "escalation:case taken",
                    "notify:delivered",
                    "department:department received",
                    "escalation:case action",
                } <= steps:
                    traced = case_id
                    break
            if time.monotonic() > deadline:
                break
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    tail = "".join(lines[-40:])
    assert traced is not None, f"no case went through every service; last output:\n{tail}"
    assert code == 0, tail
    assert len(pids) == 4
    assert processes_mentioning(str(workdir)) == []  # Kafka and PostgreSQL are gone
    assert [pid for pid in pids if Path(f"/proc/{pid}").exists()] == []
