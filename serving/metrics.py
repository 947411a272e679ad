"""Prometheus metrics of the service, single-process or across uvicorn worker processes.

Two modes, chosen by whoever builds the app (`ServiceMetrics(multiprocess=...)`):

- single-process (the default; tests, `surfacer serve --workers 1`): every metric lives on a
  registry of its own per app, so tests that build many apps in one process share nothing;
- multiprocess (`surfacer serve --workers N>1`): prometheus_client's multiprocess mode. Each
  worker writes its values to mmapped files in `PROMETHEUS_MULTIPROC_DIR`, and `/metrics`
  merges every worker's files, whichever worker answers. prometheus_client picks its value
  class from that variable when it is first imported, so it must be set before the worker
  process imports it (`surfacer serve` sets it before uvicorn spawns the workers).

Score histograms are updated in bulk: a 1,000-item batch costs one `searchsorted` and one
`bincount` per issue, then one add per non-empty bucket, instead of 3,000 `observe()` calls.
"""

from __future__ import annotations

import bisect
import contextlib
import glob
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from serving.procs import pid_alive

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The variable prometheus_client reads to enable its multiprocess mode.
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
SCORE_BUCKETS = tuple(round(x, 2) for x in np.linspace(0.05, 1.0, 20))
MODEL_INFO = "surfacer_model_info"


class ScoreHistogram:
    """Histogram of predicted probabilities per issue, updated in bulk from score arrays.

    Backed by a standard prometheus `Histogram` (so it works in multiprocess mode too): bulk
    counts go straight into each child's per-bucket values, which prometheus_client keeps
    non-cumulative (`_buckets[i]` counts observations with bound[i-1] < p <= bound[i], the
    last one is +Inf) and accumulates only when it exports. That is the same state
    `Histogram.observe` leaves, one add per bucket instead of one call per item.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry | None,
    ) -> None:
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self._bounds_list = [float(b) for b in buckets]
        self._hist = Histogram(name, documentation, ["issue"], buckets=buckets, registry=registry)
        self._children: dict[str, Any] = {}

    def _child(self, issue: str) -> Any:
        child = self._children.get(issue)
        if child is None:
            child = self._hist.labels(issue=issue)
            # Private prometheus_client state: fail loudly if a release changes its layout.
            if len(getattr(child, "_buckets", ())) != len(self._bounds_list) + 1 or not hasattr(
                child, "_sum"
            ):
                raise RuntimeError("prometheus_client Histogram layout changed: no _buckets/_sum")
            self._children[issue] = child
        return child

    def observe_row(self, probs: Mapping[str, float | None]) -> None:
        """One item's probabilities (None and NaN skipped)."""
        for issue, p in probs.items():
            if p is None or p != p:
                continue
            child = self._child(issue)
            # Prometheus buckets are "less or equal": the first bound >= p (+Inf past the end).
            child._buckets[bisect.bisect_left(self._bounds_list, p)].inc(1.0)
            child._sum.inc(float(p))

    def observe_many(self, issues: Sequence[str], probs: np.ndarray) -> None:
        """A batch: `probs` is (n, len(issues)) with NaN where an issue does not apply."""
        for j, issue in enumerate(issues):
            col = probs[:, j]
            col = col[~np.isnan(col)]
            if col.size == 0:
                continue
            idx = np.searchsorted(self.bounds, col, side="left")
            add = np.bincount(idx, minlength=len(self.bounds) + 1)
            child = self._child(issue)
            for i in np.flatnonzero(add):
                child._buckets[int(i)].inc(float(add[i]))
            child._sum.inc(float(col.sum()))


class _Callback(Collector):
    """A gauge read at scrape time (queue depth, readiness), single-process mode only."""

    def __init__(self, name: str, documentation: str, fn: Callable[[], float]) -> None:
        self.name, self.documentation, self.fn = name, documentation, fn

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(self.name, self.documentation, value=float(self.fn()))


def sweep_dead_processes(path: str) -> list[int]:
    """`mark_process_dead` for every pid with live-gauge files that no longer runs.

    A worker that exits cleanly marks itself dead (`ServiceMetrics.close`); one that crashed
    or was killed by uvicorn's supervisor could not, so its live gauges (queue depth,
    readiness, model version) would otherwise stay in the sums forever. Returns the pids swept.
    """
    swept = []
    for f in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid_text = os.path.basename(f)[: -len(".db")].rsplit("_", 1)[-1]
        if pid_text.isdigit() and int(pid_text) not in swept and not pid_alive(int(pid_text)):
            mark_process_dead(int(pid_text), path)
            swept.append(int(pid_text))
    return swept


class _MergedWorkers(Collector):
    """Every worker's values merged from the multiprocess files (MultiProcessCollector), with
    the model_info series a worker has switched off (value 0, see `set_model`) left out."""

    def __init__(self, path: str) -> None:
        self._collector = MultiProcessCollector(None, path=path)

    def collect(self) -> Iterable[Metric]:
        for metric in self._collector.collect():
            if metric.name == MODEL_INFO:
                metric.samples = [s for s in metric.samples if s.value != 0]
            yield metric


class ServiceMetrics:
    """All metrics of one app instance.

    `multiprocess=False`: a registry of its own, rendered as is. `multiprocess=True`: values
    are written to the per-process files of prometheus_client's multiprocess mode
    (`PROMETHEUS_MULTIPROC_DIR` must have been set before prometheus_client was imported),
    and `render` merges the files of all workers: counters and histograms are summed.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        multiprocess: bool = False,
        refresh_interval_s: float = 1.0,
    ) -> None:
        self.multiprocess = multiprocess
        self.multiprocess_dir: str | None = None
        if multiprocess:
            self.multiprocess_dir = os.environ.get(MULTIPROC_DIR_ENV) or None
            if self.multiprocess_dir is None or not os.path.isdir(self.multiprocess_dir):
                raise RuntimeError(f"multiprocess metrics need {MULTIPROC_DIR_ENV}: a directory")
            if not getattr(values.ValueClass, "_multiprocess", False):
                raise RuntimeError(
                    f"prometheus_client was imported before {MULTIPROC_DIR_ENV} was set, so "
                    "its values are per process: set it before the worker starts"
                )
        self.refresh_interval_s = refresh_interval_s
        self._shared: list[Collector] = []
        self._watched: list[tuple[Gauge, Callable[[], float]]] = []
        self._totals: list[tuple[Counter, Callable[[], Mapping[str, float]], dict[str, float]]] = []
        self._totals_lock = threading.Lock()
        self._model_labels: tuple[str, str, str] | None = None
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "surfacer_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "surfacer_http_request_duration_seconds",
            "Time from request start to the end of the response, by route template.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.items_scored = Counter(
            "surfacer_items_scored", "Items scored by /v1/score.", registry=r
        )
        self.flags = Counter("surfacer_flags", "Items flagged, per issue.", ["issue"], registry=r)
        self.flags_accepted = Counter(
            "surfacer_flags_accepted",
            "Flagged and sampled items spooled by /v1/score before it answered (each one is "
            "later stored or dead-lettered).",
            registry=r,
        )
        self.shed = Counter(
            "surfacer_http_shed",
            "Requests answered 503 at once because the worker was overloaded.",
            registry=r,
        )
        # Multiprocess: one series per live worker (a `pid` label is added), so a rollout
        # shows which worker serves which version.
        self.model_info = Gauge(
            MODEL_INFO,
            "The model serving now (value 1): registered name, version and where it came from.",
            ["name", "version", "source"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.reloads = Counter(
            "surfacer_model_reloads",
            "Alias checks by outcome (swapped, unchanged, failed).",
            ["outcome"],
            registry=r,
        )
        self.scores = ScoreHistogram(
            "surfacer_score", "Predicted probability per issue.", SCORE_BUCKETS, registry=r
        )

    def add_shared(self, collector: Collector) -> None:
        """A collector whose values are the server's, not one worker's (e.g. read from the
        flag writer's status file): registered once, never summed over workers."""
        self._shared.append(collector)
        if not self.multiprocess:
            self.registry.register(collector)

    def watch(
        self,
        name: str,
        documentation: str,
        fn: Callable[[], float],
        multiprocess_mode: str = "livesum",
    ) -> None:
        """A gauge whose value is `fn()`.

        Single-process: `fn` is called at scrape time. Multiprocess: another worker's `fn`
        cannot be called, so each worker stores `fn()` in a Gauge that the merge combines by
        `multiprocess_mode` ("livesum": total over live workers; "livemin": e.g. readiness,
        1 only when every worker is ready). Each worker refreshes its value every
        `refresh_interval_s` (after `start()`) and the answering worker right before
        rendering, so another worker's value is as fresh as its last refresh (up to about
        `refresh_interval_s` old).
        """
        if not self.multiprocess:
            self.registry.register(_Callback(name, documentation, fn))
            return
        gauge = Gauge(
            name,
            documentation,
            registry=self.registry,
            multiprocess_mode=multiprocess_mode,  # type: ignore[arg-type]  # a Literal
        )
        gauge.set(float(fn()))
        self._watched.append((gauge, fn))

    def watch_totals(
        self, name: str, documentation: str, label: str, fn: Callable[[], Mapping[str, float]]
    ) -> None:
        """A counter with one label whose values are the running totals `fn()` returns
        (label value -> total so far), kept by code that knows nothing of metrics (e.g. the
        online service's ingest counts). Each refresh, and each render, adds what each total
        grew by since the last, so in multiprocess mode the counter is summed over workers
        and what a worker counted still counts after it exits, like any other counter."""
        counter = Counter(name, documentation, [label], registry=self.registry)
        seen: dict[str, float] = {}
        for key in fn():
            counter.labels(key)  # every label value is exported from the start, at 0
        self._totals.append((counter, fn, seen))

    def _add_totals(self) -> None:
        with self._totals_lock:
            for counter, fn, seen in self._totals:
                with contextlib.suppress(Exception):  # a failing callback must not break metrics
                    for key, total in fn().items():
                        grew = float(total) - seen.get(key, 0.0)
                        if grew > 0:
                            counter.labels(key).inc(grew)
                            seen[key] = float(total)

    def refresh(self) -> None:
        """Store the current value of every watched gauge (multiprocess mode) and add what
        every watched total grew by."""
        for gauge, fn in self._watched:
            with contextlib.suppress(Exception):  # a failing callback must not break metrics
                gauge.set(float(fn()))
        self._add_totals()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_interval_s):
            self.refresh()

    def start(self) -> None:
        """Begin refreshing watched gauges in the background (multiprocess mode; else no-op)."""
        if self.multiprocess and self._refresher is None and self.refresh_interval_s > 0:
            self._stop.clear()
            self._refresher = threading.Thread(
                target=self._refresh_loop, name="metrics-refresh", daemon=True
            )
            self._refresher.start()

    def close(self) -> None:
        """Stop refreshing; in multiprocess mode drop this worker's live gauges (it is exiting).

        Its counters and histograms stay in the directory: what it counted still counts.
        """
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join(timeout=5)
            self._refresher = None
        self._add_totals()  # what this worker counted since the last refresh
        if self.multiprocess and self.multiprocess_dir is not None:
            mark_process_dead(os.getpid(), self.multiprocess_dir)

    def set_model(self, name: str, version: str, source: str) -> None:
        labels = (name, version, source)
        if self.multiprocess:
            # Multiprocess files cannot drop a series (`clear()` only forgets the in-process
            # child): switch the previous model's series to 0, which `render` leaves out.
            if self._model_labels is not None and self._model_labels != labels:
                self.model_info.labels(*self._model_labels).set(0)
        else:
            self.model_info.clear()
        self.model_info.labels(*labels).set(1)
        self._model_labels = labels

    def count_flags(self, counts: Mapping[str, int]) -> None:
        for issue, n in counts.items():
            if n:
                self.flags.labels(issue=issue).inc(n)

    def render(self) -> bytes:
        if not self.multiprocess:
            self._add_totals()
            return generate_latest(self.registry)
        assert self.multiprocess_dir is not None
        self.refresh()
        sweep_dead_processes(self.multiprocess_dir)
        # A fresh registry with only the merged files: this process's own registry would
        # count its values twice.
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_MergedWorkers(self.multiprocess_dir))
        for collector in self._shared:
            registry.register(collector)
        return generate_latest(registry)


class FlagWriterCollector(Collector):
    """The flag writer's counters and health, read from its status file at scrape time.

    The writer is its own process (or a thread of one worker), so its numbers come from the
    spool's status.json, not from a worker's registry: stored, dead-lettered and lost items
    (lost must stay 0), torn writes, writer restarts, the spool depth, and whether the writer
    and its sink are up."""

    def __init__(self, status: Callable[[], dict[str, Any] | None]) -> None:
        self.status = status

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.core import CounterMetricFamily

        st = self.status() or {}
        totals = st.get("totals") or {}
        for name, key, doc in (
            ("surfacer_flags_stored", "stored", "Spooled items the flag writer stored."),
            (
                "surfacer_flags_dead_lettered",
                "dead_lettered",
                "Spooled items the sink refused, kept in the spool's dead-letters.jsonl.",
            ),
            (
                "surfacer_flags_lost",
                "lost",
                "Spool frames damaged on disk (their items could not be read); must stay 0.",
            ),
            (
                "surfacer_flag_spool_torn_writes",
                "torn",
                "Unfinished writes of crashed workers dropped from the spool (never answered).",
            ),
            (
                "surfacer_flag_writer_restarts",
                "restarts",
                "Flag writer starts after the previous one stopped without a clean exit.",
            ),
        ):
            yield CounterMetricFamily(name, doc, value=float(totals.get(key, 0)))
        alive = bool(st.get("alive"))
        yield GaugeMetricFamily(
            "surfacer_flag_spool_depth",
            "Items in the spool not stored yet.",
            value=float(st.get("pending_items", 0)),
        )
        yield GaugeMetricFamily(
            "surfacer_flag_spool_bytes",
            "Bytes in the spool not stored yet.",
            value=float(st.get("pending_bytes", 0)),
        )
        yield GaugeMetricFamily(
            "surfacer_flag_writer_up",
            "1 while the flag writer runs (its heartbeat is fresh).",
            value=1.0 if alive else 0.0,
        )
        yield GaugeMetricFamily(
            "surfacer_flag_sink_up",
            "1 while the flag writer's sink (the review store) takes writes.",
            value=1.0 if alive and st.get("sink_ok") else 0.0,
        )


class IncidentCollector(Collector):
    """Incident operations per issue type, read from the review store at scrape time.

    Counts by status, alert precision (1 - false alarms / triaged) and the median times to
    detect, acknowledge and resolve, in hours. The store is shared by every worker, so this
    is registered once (`add_shared`). A store that cannot be read yields nothing rather
    than failing the scrape."""

    def __init__(self, metrics: Callable[[], Sequence[Any]]) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        # Registering must not query the database (it may not exist yet).
        return []

    def collect(self) -> Iterable[Metric]:
        try:
            rows = list(self.metrics())
        except Exception:  # the database is down: the other metrics still answer
            return
        count = GaugeMetricFamily(
            "surfacer_incidents",
            "Incidents in the store by issue and status.",
            labels=["issue", "status"],
        )
        precision = GaugeMetricFamily(
            "surfacer_incident_alert_precision",
            "1 - false alarms / incidents an analyst triaged, per issue.",
            labels=["issue"],
        )
        times = GaugeMetricFamily(
            "surfacer_incident_hours",
            "Median hours per issue: detect (true or estimated start -> detected), "
            "acknowledge and resolve (from first recorded).",
            labels=["issue", "stage"],
        )
        for r in rows:
            for status, n in r.by_status.items():
                count.add_metric([r.issue, status], float(n))
            if r.precision is not None:
                precision.add_metric([r.issue], float(r.precision))
            for stage, value in (
                ("detect", r.time_to_detect_h),
                ("acknowledge", r.time_to_acknowledge_h),
                ("resolve", r.time_to_resolve_h),
            ):
                if value is not None:
                    times.add_metric([r.issue, stage], float(value))
        yield count
        yield precision
        yield times
