"""Arithmetic of the benchmark's figures: percentiles, windows, loss and duplicates."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation): a value that was actually observed."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def summarise_flow(
    published: dict[str, float],
    stats: dict[str, Any],
    window: tuple[float, float],
    triaged: set[str] | frozenset[str] = frozenset(),
    queued: set[str] | frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """What the receivers saw of what was published.

    - delivered: requests whose lead department received their dispatch webhook;
    - triaged: sent to the triage queue by the router (a person routes them, no department
      hears of them yet): neither delivered nor lost;
    - queued: not delivered when the drain ended, but its dispatch webhook still
      waiting in notify's queue (late, not lost: the system was behind);
    - lost: published, neither triaged nor delivered nor queued anywhere;
    - duplicates: webhook-ids delivered more than once, plus second dispatches of a
      request, plus escalations received more than once;
    - throughput: first deliveries that arrived inside the measured window, per second;
    - latency: publication → arrival, for requests published inside the window, and the
      same split where the router stamped its dispatched event: publication → routed
      (intake, its relay, the router) and routed → arrival (the router's commit and relay,
      notify, the webhook).
    """
    dispatches: dict[str, list[list[Any]]] = stats["lead_dispatches"]
    start, end = window
    delivered = [ref for ref in published if ref in dispatches]
    waiting = [ref for ref in published if ref not in dispatches and ref in triaged]
    late = [
        ref for ref in published if ref not in dispatches and ref not in triaged and ref in queued
    ]
    first = {ref: min(dispatches[ref], key=lambda d: d[1]) for ref in delivered}
    first_arrival = {ref: d[1] for ref, d in first.items()}
    measured = [ref for ref in delivered if start <= published[ref] <= end]
    latencies = [(first_arrival[ref] - published[ref]) * 1000 for ref in measured]
    routed = {ref: first[ref][3] for ref in measured if len(first[ref]) > 3 and first[ref][3]}
    split = [(routed[ref] - published[ref], first_arrival[ref] - routed[ref]) for ref in routed]
    extra_dispatches = sum(len({d[2] for d in dispatches[ref]}) - 1 for ref in delivered)
    in_window = sum(1 for ref in delivered if start <= first_arrival[ref] <= end)
    figures: dict[str, Any] = {
        "published": len(published),
        "delivered": len(delivered),
        "triaged": len(waiting),
        "queued": len(late),
        "lost": len(published) - len(delivered) - len(waiting) - len(late),
        "duplicates": stats["repeated_webhook_ids"]
        + extra_dispatches
        + stats["repeated_escalations"],
        "window_seconds": round(end - start, 3),
        "delivered_in_window": in_window,
        "throughput_rps": round(in_window / (end - start), 1) if end > start else None,
        "escalations_received": stats["escalations"],
        "latencies_ms": latencies,
    }
    lost = set(published) - set(dispatches) - set(triaged) - set(queued)
    if lost:
        figures["lost_refs_sample"] = sorted(lost)[:5]
    for pct in (50, 95, 99):
        figures[f"p{pct}_ms"] = round(percentile(latencies, pct), 1) if latencies else None
    if split:
        figures["hops_p50_p99_ms"] = {
            hop: [round(percentile(seconds, pct) * 1000, 1) for pct in (50, 99)]
            for hop, seconds in (
                ("published_to_routed", [a for a, _ in split]),
                ("routed_to_lead", [b for _, b in split]),
            )
        }
    return figures


class CpuMeter:
    """CPU seconds used by each named process and its live children (PostgreSQL's backends)."""

    def __init__(self, pids: dict[str, int], alone: frozenset[str] = frozenset()) -> None:
        self.pids = pids
        self.alone = alone  # counted without their children (the benchmark's own process)
        self.start: dict[str, float] = {}

    def read(self) -> dict[str, float]:
        import psutil

        used: dict[str, float] = {}
        for name, pid in self.pids.items():
            try:
                process = psutil.Process(pid)
                family = [process]
                if name not in self.alone:
                    family += process.children(recursive=True)
            except psutil.Error:
                continue
            total = 0.0
            for member in family:
                try:
                    times = member.cpu_times()
                except psutil.Error:
                    continue
                total += times.user + times.system
            used[name] = total
        return used

    def begin(self) -> None:
        self.start = self.read()

    def shares(self, seconds: float) -> dict[str, float]:
        """Cores used by each process over the last ``seconds`` since ``begin``."""
        end = self.read()
        return {
            name: round((end[name] - self.start.get(name, 0.0)) / seconds, 2)
            for name in end
            if seconds > 0
        }
