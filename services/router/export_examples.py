"""``python -m services.router.export_examples --out FILE``: operators' triage decisions as
labelled examples (CSV, the ``labelled`` format with ``category``) for the next training run::

    python -m services.router.export_examples --out manual.csv
    python -m services.router.train --city demo-zh --extra manual.csv

Reads the router's schema at ``CIVIC_DATABASE_URL`` (or ``--database-url``).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import sys
from datetime import datetime
from pathlib import Path

from services.router import store
from shared.db import connect_pool

COLUMNS = ("text", "category", "expected_lead", "channel", "address", "lat", "long", "grid_id")


async def export(database_url: str, out: Path, since: datetime | None) -> int:
    pool = await connect_pool(database_url, "router", max_size=1, attempts=3)
    try:
        async with pool.acquire() as conn:
            rows = await store.examples(conn, since)
    finally:
        await pool.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row[k] is None else row[k] for k in COLUMNS})
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--database-url", default=os.environ.get("CIVIC_DATABASE_URL"))
    parser.add_argument(
        "--since", type=datetime.fromisoformat, default=None, help="only decisions from then on"
    )
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url or CIVIC_DATABASE_URL is required")
    count = asyncio.run(export(args.database_url, args.out, args.since))
    print(f"{count} labelled examples written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
