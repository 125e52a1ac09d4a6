"""``python -m services.router.evaluate --city <city> --format <fmt> --data FILE``.

Routes every row through the same code the service uses (``domain.decide``)
and prints a per-department breakdown, then, as its last line, one JSON object:
``{"n", "accuracy", "coverage", "precision_auto", "p50_ms", "p99_ms"}``.

- accuracy: the lead is right (triage counts as wrong);
- coverage: the share dispatched without triage;
- precision_auto: accuracy among the dispatched;
- p50_ms / p99_ms: routing time per request (locate, classify, route).

``--predictions FILE`` writes one CSV row per request (text, expected lead, the lead
decided or the triage kind, category, confidence, whether it was right, the trace), so
that people can read the misses.

Without ``--cv`` the pack's trained model is used (trained first if missing).
``--cv K`` runs K-fold cross-validation on FILE itself: K models, each trained
on the other folds of FILE only and measured on its own fold.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.router import domain
from services.router.cli import add_pack_arguments, open_pack
from services.router.datasets import FORMATS, DataError, Row, fold_of, read_rows
from services.router.model_store import ModelError, fit, load_or_train
from shared.citypack import CityPack


@dataclass(frozen=True)
class Result:
    row: Row
    outcome: domain.Outcome
    seconds: float

    @property
    def dispatched(self) -> bool:
        return isinstance(self.outcome, domain.Decision)

    @property
    def right(self) -> bool:
        return isinstance(self.outcome, domain.Decision) and (
            self.outcome.lead == self.row.expected_lead
        )


def route_all(pack: CityPack, model: domain.Model, rows: Sequence[Row]) -> list[Result]:
    results = []
    for row in rows:
        request = row.request(pack)
        started = time.perf_counter()
        outcome = domain.decide(request, pack, model)
        results.append(Result(row, outcome, time.perf_counter() - started))
    return results


def summary(results: Sequence[Result]) -> dict[str, float | int]:
    n = len(results)
    dispatched = [r for r in results if r.dispatched]
    right = sum(r.right for r in results)
    times = sorted(r.seconds * 1000 for r in results)
    return {
        "n": n,
        "accuracy": round(right / n, 4) if n else 0.0,
        "coverage": round(len(dispatched) / n, 4) if n else 0.0,
        "precision_auto": round(right / len(dispatched), 4) if dispatched else 0.0,
        "p50_ms": round(statistics.median(times), 3) if times else 0.0,
        "p99_ms": round(_percentile(times, 0.99), 3) if times else 0.0,
    }


def _percentile(ordered: list[float], share: float) -> float:
    """Nearest rank: the smallest value with at least ``share`` of the values at or below it."""
    index = min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))
    return ordered[index]


def breakdown(results: Sequence[Result]) -> list[str]:
    """One line per expected lead, then the commonest mistakes."""
    lines = [f"{'expected lead':<34} {'n':>5} {'right':>6} {'triage':>7} {'wrong':>6}"]
    leads = Counter(r.row.expected_lead for r in results)
    for lead, n in leads.most_common():
        mine = [r for r in results if r.row.expected_lead == lead]
        right = sum(r.right for r in mine)
        triage = sum(not r.dispatched for r in mine)
        lines.append(f"{lead:<34} {n:>5} {right:>6} {triage:>7} {n - right - triage:>6}")
    mistakes = Counter(
        (r.row.expected_lead, r.outcome.lead)
        for r in results
        if isinstance(r.outcome, domain.Decision) and not r.right
    )
    for (expected, got), count in mistakes.most_common(10):
        lines.append(f"wrong: {count} x expected {expected}, dispatched to {got}")
    reasons = Counter(r.outcome.kind for r in results if isinstance(r.outcome, domain.Triage))
    for kind, count in reasons.most_common():
        lines.append(f"triage: {count} x {kind}")
    return lines


PREDICTION_COLUMNS = (
    "line",
    "text",
    "expected_lead",
    "outcome",
    "decided",
    "category",
    "confidence",
    "right",
    "trace",
)


def prediction_rows(results: Sequence[Result]) -> list[dict[str, str]]:
    """One row per request: the lead decided, or ``triage:<kind>``, with its reasons."""
    rows = []
    for r in results:
        outcome = r.outcome
        decided = outcome.lead if isinstance(outcome, domain.Decision) else f"triage:{outcome.kind}"
        rows.append(
            {
                "line": str(r.row.line),
                "text": r.row.text,
                "expected_lead": r.row.expected_lead,
                "outcome": "dispatched" if r.dispatched else "triage",
                "decided": decided,
                "category": outcome.category or "",
                "confidence": f"{outcome.confidence:.4f}",
                "right": "yes" if r.right else "no",
                "trace": " | ".join(outcome.trace),
            }
        )
    return rows


def write_predictions(path: Path, results: Sequence[Result]) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=PREDICTION_COLUMNS)
        writer.writeheader()
        writer.writerows(prediction_rows(results))


def cross_validate(pack: CityPack, rows: Sequence[Row], folds: int) -> list[Result]:
    results: list[Result] = []
    for fold in range(folds):
        train = [r for r in rows if fold_of(r, folds) != fold]
        test = [r for r in rows if fold_of(r, folds) == fold]
        model = fit(pack, train, version=f"cv{fold + 1}of{folds}")
        results.extend(route_all(pack, model, test))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pack_arguments(parser)
    parser.add_argument("--format", choices=FORMATS, required=True, dest="fmt")
    parser.add_argument("--data", type=Path, required=True, help="CSV file to route")
    parser.add_argument("--cv", type=int, default=0, help="K-fold cross-validation on --data")
    parser.add_argument(
        "--predictions", type=Path, help="write one CSV row per request here (to read misses)"
    )
    args = parser.parse_args(argv)
    if args.cv == 1 or args.cv < 0:
        parser.error("--cv needs at least 2 folds")
    pack = open_pack(args, "router-evaluate")
    try:
        rows = read_rows(args.data, args.fmt, pack)
        if not rows:
            raise DataError(f"{args.data}: no rows")
        if args.cv:
            results = cross_validate(pack, rows, args.cv)
        else:
            trained = load_or_train(pack, args.models_dir)
            route_all(pack, trained.model, rows[:20])  # warm caches before timing
            results = route_all(pack, trained.model, rows)
    except (DataError, ModelError, ValueError) as error:
        print(f"cannot evaluate: {error}", file=sys.stderr)
        return 2
    mode = f"{args.cv}-fold cross-validation" if args.cv else "pack model"
    print(f"# {pack.name}: {args.data.name} ({args.fmt}), {mode}")
    for line in breakdown(results):
        print(line)
    if args.predictions is not None:
        try:
            write_predictions(args.predictions, results)
        except OSError as error:
            print(f"cannot write predictions: {error}", file=sys.stderr)
            return 2
        print(f"predictions: {len(results)} rows in {args.predictions}")
    print(json.dumps(summary(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
