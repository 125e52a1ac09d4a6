"""Benchmark traffic: real NYC 311 requests replayed in arrival order, and a
synthetic mixed-channel load for the Chinese pack.

Each item is ``(offset_seconds, payload)``: when to publish it, counted from the
start of the run, and the channel payload as the appeal platform would send it.
Every payload carries ``bench_t`` (kept by intake under ``extras``), which the
benchmark fills with the publication time so the receivers can measure latency.
"""

from __future__ import annotations

import csv
import itertools
import random
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

NYC_TIME = "%m/%d/%Y %I:%M:%S %p"
NYC_CHANNELS = {"PHONE": "hotline"}  # ONLINE, MOBILE, UNKNOWN: the app / web
ZH_CHANNEL_MIX = ("hotline", "hotline", "app", "app", "grid")


def nyc_rows(path: Path) -> list[dict[str, str]]:
    """Rows with a readable Created Date, in arrival order."""
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("Created Date")]
    rows.sort(key=lambda r: datetime.strptime(r["Created Date"], NYC_TIME))
    return rows


def _nyc_text(row: dict[str, str]) -> str:
    parts = (row.get("Complaint Type"), row.get("Descriptor"), row.get("Location Type"))
    return " / ".join(p for p in parts if p and p != "N/A")


def _coordinate(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def nyc_payload(row: dict[str, str], ref: str) -> dict[str, Any]:
    text = _nyc_text(row)
    borough = row.get("Borough") or None
    borough = None if borough in (None, "Unspecified") else borough
    if NYC_CHANNELS.get(row.get("Open Data Channel Type", "")) == "hotline":
        return {
            "channel": "hotline",
            "source_ref": ref,
            "summary": text[:500],
            "address_text": borough,
            "caller_phone": "+12125550143",
            "bench_t": 0.0,
        }
    payload: dict[str, Any] = {"channel": "app", "source_ref": ref, "text": text, "bench_t": 0.0}
    lat, long = _coordinate(row.get("Latitude")), _coordinate(row.get("Longitude"))
    if lat is not None and long is not None:
        payload |= {"lat": lat, "long": long}
    if borough:
        payload["address_text"] = borough
    return payload


def nyc_replay(
    path: Path, rate: float, duration: float, run: str
) -> Iterator[tuple[float, dict[str, Any]]]:
    """The file's requests in arrival order, their spread compressed to ``rate`` per second.

    The file is replayed again (fresh references) until ``duration`` is filled.
    """
    rows = nyc_rows(path)
    times = [datetime.strptime(r["Created Date"], NYC_TIME).timestamp() for r in rows]
    span = times[-1] - times[0]
    scale = (len(rows) / rate) / span if span > 0 else 0.0
    loop_length = len(rows) / rate
    for loop in itertools.count():
        for index, (row, at) in enumerate(zip(rows, times, strict=True)):
            offset = loop * loop_length + (at - times[0]) * scale
            if offset >= duration:
                return
            yield offset, nyc_payload(row, f"NYC-{run}-{loop}-{index}")


def zh_texts(pack_dir: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in sorted((pack_dir / "examples").glob("*.csv")):
        with path.open(encoding="utf-8", newline="") as handle:
            rows.extend(csv.DictReader(handle))
    return rows


def zh_synthetic(
    pack_dir: Path, rate: float, duration: float, run: str, seed: int = 5
) -> Iterator[tuple[float, dict[str, Any]]]:
    """Poisson arrivals at ``rate``, mixed hotline / app / grid, Chinese request texts."""
    rng = random.Random(seed)
    texts = zh_texts(pack_dir)
    offset = 0.0
    for n in itertools.count():
        offset += rng.expovariate(rate)
        if offset >= duration:
            return
        row = rng.choice(texts)
        channel = rng.choice(ZH_CHANNEL_MIX)
        ref = f"ZH-{run}-{n}"
        if channel == "hotline":
            payload: dict[str, Any] = {
                "channel": "hotline",
                "source_ref": ref,
                "summary": row["text"][:60],
                "details": row["text"],
                "address_text": row.get("address") or None,
                "caller_phone": f"13{rng.randint(100000000, 999999999)}",
            }
        elif channel == "app" or not row.get("category"):
            payload = {"channel": "app", "source_ref": ref, "text": row["text"]}
            if row.get("lat") and row.get("long"):
                payload |= {"lat": float(row["lat"]), "long": float(row["long"])}
            if row.get("address"):
                payload["address_text"] = row["address"]
        else:
            payload = {
                "channel": "grid",
                "source_ref": ref,
                "grid_worker_id": f"W{rng.randint(100, 999)}",
                "grid_id": row.get("grid_id") or "G-CY-0012",
                "checklist_code": row["category"],
                "text": row["text"],
            }
        payload["bench_t"] = 0.0
        yield offset, payload
