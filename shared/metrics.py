"""Prometheus helpers: names follow ``civicroute_<service>_<thing>_<unit>``.

Labels are bounded by construction (topic, department, category, channel,
outcome) — never a case id, never personal data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# From 1 ms to 60 s: covers routing decisions up to webhook round trips.
MetricT = TypeVar("MetricT", Counter, Gauge, Histogram)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """Metric factory for one service; metrics register once per process."""

    def __init__(self, service: str, registry: CollectorRegistry = REGISTRY) -> None:
        self.service = service
        self.registry = registry
        self._made: dict[str, Counter | Gauge | Histogram] = {}

    def _name(self, name: str) -> str:
        return f"civicroute_{self.service}_{name}"

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        return self._once(name, lambda full: Counter(full, doc, labels, registry=self.registry))

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        return self._once(name, lambda full: Gauge(full, doc, labels, registry=self.registry))

    def histogram(
        self,
        name: str,
        doc: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        return self._once(
            name,
            lambda full: Histogram(full, doc, labels, buckets=buckets, registry=self.registry),
        )

    def _once(self, name: str, make: Callable[[str], MetricT]) -> MetricT:
        made = self._made.get(name)
        if made is None:
            made = self._made[name] = make(self._name(name))
        return made  # type: ignore[return-value]

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
