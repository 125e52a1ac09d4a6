"""Where PostgreSQL's time goes during a bench phase: pg_stat_statements, with --profile.

PostgreSQL is one of the busiest processes in the bench; py-spy cannot see
inside it, so the profile run loads pg_stat_statements and writes the
statements that took the most execution time while the phase's load ran.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import asyncpg

SETTINGS = (
    "shared_preload_libraries=pg_stat_statements,auto_explain",
    "pg_stat_statements.track=all",
    # Planning too: it is where per-execution planning (custom plans) would show.
    "pg_stat_statements.track_planning=on",
    # The plan, with actual row counts, of any statement over 10 ms: in postgres.log.
    "auto_explain.log_min_duration=10ms",
    "auto_explain.log_analyze=on",
    "auto_explain.log_timing=off",
    "auto_explain.log_level=warning",
)


def available(bin_dir: Path) -> bool:
    """Whether this PostgreSQL installation has the pg_stat_statements and auto_explain modules."""
    try:
        libdir = subprocess.run(
            [str(bin_dir / "pg_config"), "--pkglibdir"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        libdir = str(bin_dir.parent / "lib")
    return all(
        (Path(libdir) / f"{name}.so").exists() for name in ("pg_stat_statements", "auto_explain")
    )


async def reset(admin_url: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await conn.execute("SELECT pg_stat_statements_reset()")
    finally:
        await conn.close()


async def write_top(admin_url: str, database: str, out: Path, limit: int = 30) -> list[str]:
    """The phase database's heaviest statements by total execution time, to ``out``.

    Returns the first few lines, to print.
    """
    conn = await asyncpg.connect(admin_url)
    try:
        rows = await conn.fetch(
            """
            SELECT calls, total_exec_time, total_plan_time, query,
                   sum(total_exec_time) OVER () AS total,
                   sum(total_plan_time) OVER () AS planning
            FROM pg_stat_statements
            WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1)
            ORDER BY total_exec_time DESC LIMIT $2""",
            database,
            limit,
        )
    finally:
        await conn.close()
    total, planning = (rows[0]["total"], rows[0]["planning"]) if rows else (0, 0)
    lines = [f"all statements: {total:.0f} ms of execution, {planning:.0f} ms of planning"]
    for row in rows:
        query = " ".join(row["query"].split())
        lines.append(
            f"{row['total_exec_time']:9.0f} ms {row['calls']:8d} calls"
            f" {row['total_exec_time'] / max(1, row['calls']):7.3f} ms/call"
            f" {row['total_plan_time']:7.0f} ms planning  {query[:160]}"
        )
    await asyncio.to_thread(out.write_text, "\n".join(lines) + "\n", encoding="utf-8")
    return lines[:9]
