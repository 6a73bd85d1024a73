"""Prometheus metrics of the workstation (prometheus-client), and the text a scraper reads at `GET /metrics`.

Counters and histograms are module-level, recorded through the small functions below, so callers never touch
prometheus-client. Gauges that describe the present (machine, model, review queue) are not stored: a
`StateCollector` reads them at scrape time from callbacks the API hands in, which is also what keeps them right
with several worker processes.

Several workers (`uvicorn --workers N`, gunicorn): prometheus-client's multiprocess mode. Export
PROMETHEUS_MULTIPROC_DIR (an empty folder, emptied before each start) in the environment of the server *before* it
starts: prometheus-client reads it when it is imported. Each worker then writes its counters to files there and a
scrape of any worker sums the files of all of them (`render_metrics`). Python's process collector does not work in
that mode; the machine and process figures come from psutil through the state collector instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from monitoring.history import HISTORY, PredictionFacts

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED_ROUTE = "<unmatched>"  # a path no route serves: one label value, not one per scanned URL

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
INFERENCE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
UNIT_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)

HTTP_REQUESTS = Counter(
    "cxr_http_requests",
    "HTTP requests answered, by method, route template and status code",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "cxr_http_request_duration_seconds",
    "Time from request to the end of the answer, by method and route template",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
INFERENCE_SECONDS = Histogram(
    "cxr_inference_seconds",
    "Model time per prediction (cache hits excluded), by task",
    ["task"],
    buckets=INFERENCE_BUCKETS,
)
BATCH_SIZE = Histogram(
    "cxr_inference_batch_size", "Images handed to the model in one call", ["task"], buckets=BATCH_BUCKETS
)
CACHE_LOOKUPS = Counter(
    "cxr_prediction_cache", "Prediction cache lookups, by task and result (hit|miss)", ["task", "result"]
)
PREDICTIONS = Counter(
    "cxr_predictions", "Predictions, by task, predicted class and model version", ["task", "label", "model_version"]
)
CONFIDENCE = Histogram(
    "cxr_prediction_confidence", "Calibrated confidence of the predicted class", ["task"], buckets=UNIT_BUCKETS
)
UNCERTAINTY = Histogram(
    "cxr_prediction_uncertainty", "Normalised predictive entropy of each prediction", ["task"], buckets=UNIT_BUCKETS
)
UNCERTAIN = Counter("cxr_predictions_uncertain", "Predictions the uncertainty policy sent for expert review", ["task"])
GATE_REFUSALS = Counter("cxr_gate_refusals", "Images the input gate flagged as outside the model's scope", ["task"])


# --- recording ------------------------------------------------------------------------------------------------------


def record_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count one answered request (Prometheus) and keep it in the database history (`HISTORY`)."""
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_LATENCY.labels(method, route).observe(seconds)
    HISTORY.add_request(method, route, status, seconds)


@dataclass(frozen=True)
class PredictionSample:
    """What the metrics need of one prediction (plain values: monitoring does not know the inference types)."""

    task: str
    label: str
    model_version: str
    confidence: float
    seconds: float
    cached: bool = False
    entropy: float | None = None
    uncertain: bool = False
    out_of_scope: bool = False


def record_predictions(samples: Iterable[PredictionSample]) -> None:
    """One model call's predictions: batch size (of the images that reached the model), cache, class mix, scores;
    also kept in the database history (`HISTORY`)."""
    samples = list(samples)
    HISTORY.add_predictions(
        PredictionFacts(s.task, s.label, s.confidence, s.uncertain, s.out_of_scope, s.model_version) for s in samples
    )
    computed: dict[str, int] = {}
    for sample in samples:
        CACHE_LOOKUPS.labels(sample.task, "hit" if sample.cached else "miss").inc()
        PREDICTIONS.labels(sample.task, sample.label, sample.model_version).inc()
        CONFIDENCE.labels(sample.task).observe(sample.confidence)
        if sample.entropy is not None:
            UNCERTAINTY.labels(sample.task).observe(sample.entropy)
        if sample.uncertain:
            UNCERTAIN.labels(sample.task).inc()
        if sample.out_of_scope:
            GATE_REFUSALS.labels(sample.task).inc()
        if not sample.cached:
            INFERENCE_SECONDS.labels(sample.task).observe(sample.seconds)
            computed[sample.task] = computed.get(sample.task, 0) + 1
    for task, size in computed.items():
        BATCH_SIZE.labels(task).observe(size)


# --- gauges read at scrape time -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gauge:
    name: str
    documentation: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)


class StateCollector(Collector):
    """Gauges computed on each scrape by `read()` (machine, model, queue): one value per scrape, never stale."""

    def __init__(self, read: Callable[[], Iterable[Gauge]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        for gauge in self.read():
            family = families.get(gauge.name)
            if family is None:
                family = GaugeMetricFamily(gauge.name, gauge.documentation, labels=sorted(gauge.labels))
                families[gauge.name] = family
            family.add_metric([gauge.labels[key] for key in sorted(gauge.labels)], gauge.value)
        yield from families.values()


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def render_metrics(state: Callable[[], Iterable[Gauge]] | None = None) -> tuple[bytes, str]:
    """(body, content type) of the Prometheus text exposition: every counter and histogram (summed over all worker
    processes in multiprocess mode) plus the gauges `state` reads now."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY  # this process's metrics and prometheus-client's process/platform collectors
    body = generate_latest(registry)
    if state is not None:
        now = CollectorRegistry()
        now.register(StateCollector(state))
        body += generate_latest(now)
    return body, CONTENT_TYPE_LATEST


def mark_process_dead(pid: int | None = None) -> None:
    """At a worker's shutdown in multiprocess mode: drop its live-gauge files (counters stay, as they should)."""
    if multiprocess_dir():
        prometheus_multiprocess.mark_process_dead(pid or os.getpid())
