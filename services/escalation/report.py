"""The department report: counts per department and the three rates made of them. Pure.

Definitions (the README section on escalation repeats them):

- *dispatched*: assignments of a case to the department as lead, dispatched in the period
  (a case returned and re-dispatched counts once for each department it went to);
- *held* = dispatched − returned (a return the router accepted is not held against it);
- *response rate* = contacted on time / held;
- *resolution rate* = resolved / held (resolved now, whether on time or late);
- *satisfaction rate* = (satisfied + basically satisfied) / rated, with each case's latest
  rating.
A rate with a zero denominator is null (no data), never 0 or 1.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from fractions import Fraction
from typing import Any

COUNTS = (
    "dispatched",
    "returned",
    "signed_on_time",
    "contacted_on_time",
    "resolved",
    "resolved_on_time",
    "satisfied",
    "basically_satisfied",
    "unsatisfied",
    "overdue_open",
)


@dataclass(frozen=True)
class DepartmentLine:
    department: str
    dispatched: int
    returned: int
    held: int
    signed_on_time: int
    contacted_on_time: int
    resolved: int
    resolved_on_time: int
    satisfied: int
    basically_satisfied: int
    unsatisfied: int
    rated: int
    response_rate: float | None
    resolution_rate: float | None
    satisfaction_rate: float | None
    overdue_open: int


def rate(numerator: int, denominator: int) -> float | None:
    """A share rounded to 4 places (exact rational rounding, half up); None without data."""
    if denominator == 0:
        return None
    share = Fraction(numerator, denominator)
    return math.floor(share * 10_000 + Fraction(1, 2)) / 10_000


def line(department: str, counts: Mapping[str, int]) -> DepartmentLine:
    c = {name: int(counts.get(name, 0) or 0) for name in COUNTS}
    held = c["dispatched"] - c["returned"]
    rated = c["satisfied"] + c["basically_satisfied"] + c["unsatisfied"]
    return DepartmentLine(
        department=department,
        dispatched=c["dispatched"],
        returned=c["returned"],
        held=held,
        signed_on_time=c["signed_on_time"],
        contacted_on_time=c["contacted_on_time"],
        resolved=c["resolved"],
        resolved_on_time=c["resolved_on_time"],
        satisfied=c["satisfied"],
        basically_satisfied=c["basically_satisfied"],
        unsatisfied=c["unsatisfied"],
        rated=rated,
        response_rate=rate(c["contacted_on_time"], held),
        resolution_rate=rate(c["resolved"], held),
        satisfaction_rate=rate(c["satisfied"] + c["basically_satisfied"], rated),
        overdue_open=c["overdue_open"],
    )


def build(rows: Sequence[Mapping[str, Any]]) -> list[DepartmentLine]:
    return [line(str(row["department"]), row) for row in rows]


def as_json(lines: Sequence[DepartmentLine]) -> list[dict[str, Any]]:
    return [asdict(item) for item in lines]


def as_csv(lines: Sequence[DepartmentLine]) -> str:
    out = io.StringIO()
    names = [f.name for f in fields(DepartmentLine)]
    writer = csv.DictWriter(out, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for item in lines:
        row = asdict(item)
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()
