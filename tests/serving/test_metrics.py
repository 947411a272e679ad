"""Service metrics in one process and across uvicorn worker processes (multiprocess mode).

In-process "workers" are simulated the way prometheus_client tells processes apart: a
multiprocess value class per worker whose process identifier is a real live pid (this
process, its parent), all writing into one PROMETHEUS_MULTIPROC_DIR.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from serving.cli import make_metrics_dir
from serving.metrics import MULTIPROC_DIR_ENV, SCORE_BUCKETS, ServiceMetrics
from tests.support.serving import ADMIN_KEY, SCORE_KEY, Registry, records, serve_process

ISSUES = ("low_quality", "harmful_interactions", "wrongful_enforcement")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Workers:
    """Switches prometheus_client between simulated worker processes sharing one directory.

    Metric children are created lazily with whatever value class is current, so each
    worker's metrics must be created and updated inside its own `with workers.as_pid(...)`.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
        self.monkeypatch, self.path = monkeypatch, path
        self._classes: list[type] = []
        monkeypatch.setenv(MULTIPROC_DIR_ENV, str(path))

    @contextlib.contextmanager
    def as_pid(self, pid: int) -> Iterator[None]:
        cls = values.MultiProcessValue(process_identifier=lambda: pid)
        self._classes.append(cls)
        self.monkeypatch.setattr(values, "ValueClass", cls)
        yield

    def close(self) -> None:
        for cls in self._classes:
            cls.close_all_files()  # type: ignore[attr-defined]


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Workers]:
    path = tmp_path / "prom"
    path.mkdir()
    w = Workers(monkeypatch, path)
    yield w
    w.close()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def samples(text: str, family: str) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        if fam.name != family:
            continue
        for s in fam.samples:
            if not s.name.endswith("_created"):
                out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def score_data(n: int = 900, seed: int = 3) -> np.ndarray:
    """Probabilities with NaN (issue not applicable) and values exactly on bucket bounds."""
    rng = np.random.default_rng(seed)
    probs = rng.random((n, len(ISSUES)))
    probs[rng.random((n, len(ISSUES))) < 0.3] = np.nan
    on_bounds = np.array([0.0, *SCORE_BUCKETS[:3], 0.5, 0.95, 1.0])
    probs[: len(on_bounds), 0] = on_bounds
    probs[: len(on_bounds), 1] = on_bounds[::-1]
    return probs


def as_rows(probs: np.ndarray) -> list[dict[str, float | None]]:
    return [
        {issue: (None if math.isnan(p) else float(p)) for issue, p in zip(ISSUES, row, strict=True)}
        for row in probs
    ]


def per_item_reference(probs: np.ndarray, registry: CollectorRegistry | None) -> Histogram:
    hist = Histogram(
        "surfacer_score",
        "Predicted probability per issue.",
        ["issue"],
        buckets=SCORE_BUCKETS,
        registry=registry,
    )
    for row in as_rows(probs):
        for issue, p in row.items():
            if p is not None:
                hist.labels(issue=issue).observe(p)
    return hist


def test_score_histogram_bulk_equals_per_item_observe_single_process() -> None:
    probs = score_data()
    metrics = ServiceMetrics()
    metrics.scores.observe_many(ISSUES, probs[:500])
    for row in as_rows(probs[500:700]):
        metrics.scores.observe_row(row)
    metrics.scores.observe_many(ISSUES, probs[700:])

    ref_registry = CollectorRegistry()
    per_item_reference(probs, ref_registry)
    got = samples(metrics.render().decode(), "surfacer_score")
    want = samples(generate_latest(ref_registry).decode(), "surfacer_score")
    assert len(want) == len(ISSUES) * (len(SCORE_BUCKETS) + 3)  # buckets, +Inf, count, sum
    assert got.keys() == want.keys()
    assert got == pytest.approx(want)
    # Not trivially equal: the values on bounds land in their "<=" bucket.
    first = ("surfacer_score_bucket", frozenset({("issue", "low_quality"), ("le", "0.05")}))
    assert want[first] >= 2  # 0.0 and 0.05


def test_score_histogram_bulk_equals_per_item_observe_across_workers(
    workers: Workers, tmp_path: Path
) -> None:
    probs = score_data()
    with workers.as_pid(os.getpid()):
        a = ServiceMetrics(multiprocess=True)
        a.scores.observe_many(ISSUES, probs[:400])
    with workers.as_pid(os.getppid()):
        b = ServiceMetrics(multiprocess=True)
        for row in as_rows(probs[400:600]):
            b.scores.observe_row(row)
        b.scores.observe_many(ISSUES, probs[600:])
        merged_b = samples(b.render().decode(), "surfacer_score")
    merged_a = samples(a.render().decode(), "surfacer_score")

    # Reference: one process observing item by item, merged the same way.
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    workers.monkeypatch.setenv(MULTIPROC_DIR_ENV, str(ref_dir))
    with workers.as_pid(os.getpid()):
        per_item_reference(probs, None)
    ref = CollectorRegistry()
    MultiProcessCollector(ref, path=str(ref_dir))
    want = samples(generate_latest(ref).decode(), "surfacer_score")

    assert len(want) == len(ISSUES) * (len(SCORE_BUCKETS) + 3)
    assert merged_a.keys() == want.keys()
    assert merged_a == pytest.approx(want)
    assert merged_b == merged_a  # whichever worker answers


def test_counters_and_gauges_merge_across_workers(workers: Workers) -> None:
    pending = {"a": 3, "b": 4}
    with workers.as_pid(os.getpid()):
        a = ServiceMetrics(multiprocess=True)
        a.watch("surfacer_flag_queue_depth", "q", lambda: pending["a"], "livesum")
        a.watch("surfacer_model_ready", "r", lambda: 1, "livemin")
        a.set_model("m", "1", "mlflow")
        a.set_model("m", "2", "mlflow")
        a.items_scored.inc(10)
        a.requests.labels("/v1/score", "POST", "200").inc(2)
        a.latency.labels("/v1/score", "POST").observe(0.003)
    with workers.as_pid(os.getppid()):
        b = ServiceMetrics(multiprocess=True)
        b.watch("surfacer_flag_queue_depth", "q", lambda: pending["b"], "livesum")
        b.watch("surfacer_model_ready", "r", lambda: 0, "livemin")
        b.set_model("m", "1", "mlflow")
        b.items_scored.inc(5)
        b.requests.labels("/v1/score", "POST", "200").inc(3)
        b.latency.labels("/v1/score", "POST").observe(0.2)
        text = b.render().decode()
    assert text == a.render().decode()
    score_200 = frozenset({("route", "/v1/score"), ("method", "POST"), ("status", "200")})
    assert samples(text, "surfacer_items_scored") == {
        ("surfacer_items_scored_total", frozenset()): 15
    }
    assert samples(text, "surfacer_http_requests") == {
        ("surfacer_http_requests_total", score_200): 5
    }
    latency = samples(text, "surfacer_http_request_duration_seconds")
    route = frozenset({("route", "/v1/score"), ("method", "POST")})
    assert latency[("surfacer_http_request_duration_seconds_count", route)] == 2
    assert samples(text, "surfacer_flag_queue_depth") == {
        ("surfacer_flag_queue_depth", frozenset()): 7
    }
    assert samples(text, "surfacer_model_ready") == {("surfacer_model_ready", frozenset()): 0}
    # Each worker's current model, by pid; worker a's previous version is gone.
    info = sorted(
        (dict(k[1])["pid"], dict(k[1])["version"], v)
        for k, v in samples(text, "surfacer_model_info").items()
    )
    assert info == sorted([(str(os.getpid()), "2", 1.0), (str(os.getppid()), "1", 1.0)])

    # Watched gauges follow their callbacks at the next render (or background refresh).
    pending["b"] = 0
    with workers.as_pid(os.getppid()):
        text = b.render().decode()
    assert samples(text, "surfacer_flag_queue_depth") == {
        ("surfacer_flag_queue_depth", frozenset()): 3
    }

    # Worker a exits: its live gauges go, what it counted stays.
    a.close()
    with workers.as_pid(os.getppid()):
        text = b.render().decode()
    assert samples(text, "surfacer_flag_queue_depth") == {
        ("surfacer_flag_queue_depth", frozenset()): 0
    }
    assert [dict(k[1])["pid"] for k in samples(text, "surfacer_model_info")] == [str(os.getppid())]
    assert samples(text, "surfacer_items_scored") == {
        ("surfacer_items_scored_total", frozenset()): 15
    }


def test_watched_totals_are_summed_counters_that_outlive_their_worker(workers: Workers) -> None:
    """`watch_totals` exports running totals kept outside prometheus (the online service's
    ingest counts) as a counter: summed over workers, each label there from the start, and
    what a worker counted before it exited still counted."""
    totals = {"a": {"applied": 0, "rejected": 0}, "b": {"applied": 0, "rejected": 0}}
    with workers.as_pid(os.getpid()):
        a = ServiceMetrics(multiprocess=True)
        a.watch_totals("surfacer_ingest_batches", "b", "outcome", lambda: totals["a"])
    with workers.as_pid(os.getppid()):
        b = ServiceMetrics(multiprocess=True)
        b.watch_totals("surfacer_ingest_batches", "b", "outcome", lambda: totals["b"])
        text = b.render().decode()

    def counts(text: str) -> dict[str, float]:
        got = samples(text, "surfacer_ingest_batches")
        return {dict(k[1])["outcome"]: v for k, v in got.items()}

    assert counts(text) == {"applied": 0, "rejected": 0}
    totals["a"].update(applied=3, rejected=1)
    totals["b"].update(applied=2)
    with workers.as_pid(os.getpid()):
        a.refresh()
    with workers.as_pid(os.getppid()):
        assert counts(b.render().decode()) == {"applied": 5, "rejected": 1}
        assert counts(b.render().decode()) == {"applied": 5, "rejected": 1}  # not added twice
    totals["a"]["applied"] = 7  # counted after a's last refresh, then a exits
    with workers.as_pid(os.getpid()):
        a.close()
    with workers.as_pid(os.getppid()):
        assert counts(b.render().decode()) == {"applied": 9, "rejected": 1}


def test_live_gauges_of_a_crashed_worker_are_swept(workers: Workers) -> None:
    gone = dead_pid()
    with workers.as_pid(gone):
        crashed = ServiceMetrics(multiprocess=True)
        crashed.watch("surfacer_flag_queue_depth", "q", lambda: 50, "livesum")
        crashed.set_model("m", "1", "mlflow")
        crashed.items_scored.inc(4)
    with workers.as_pid(os.getpid()):
        live = ServiceMetrics(multiprocess=True)
        live.watch("surfacer_flag_queue_depth", "q", lambda: 2, "livesum")
        live.set_model("m", "2", "mlflow")
        text = live.render().decode()
    assert not list(workers.path.glob(f"gauge_live*_{gone}.db"))
    assert samples(text, "surfacer_flag_queue_depth") == {
        ("surfacer_flag_queue_depth", frozenset()): 2
    }
    assert [dict(k[1])["version"] for k in samples(text, "surfacer_model_info")] == ["2"]
    assert samples(text, "surfacer_items_scored") == {
        ("surfacer_items_scored_total", frozenset()): 4
    }


def test_background_refresh_updates_this_workers_gauges(workers: Workers) -> None:
    depth = {"n": 1}
    with workers.as_pid(os.getpid()):
        m = ServiceMetrics(multiprocess=True, refresh_interval_s=0.01)
        m.watch("surfacer_flag_queue_depth", "q", lambda: depth["n"], "livesum")
        m.start()
        try:
            depth["n"] = 9
            deadline = time.monotonic() + 30
            # Read the files directly: render() would refresh by itself.
            while time.monotonic() < deadline:
                merged = {
                    s.name: s.value
                    for fam in MultiProcessCollector(None, path=str(workers.path)).collect()
                    for s in fam.samples
                }
                if merged.get("surfacer_flag_queue_depth") == 9:
                    break
                time.sleep(0.01)
            assert merged.get("surfacer_flag_queue_depth") == 9
        finally:
            m.close()


def test_multiprocess_mode_needs_the_directory_before_prometheus_client_import(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(MULTIPROC_DIR_ENV, raising=False)
    with pytest.raises(RuntimeError, match=MULTIPROC_DIR_ENV):
        ServiceMetrics(multiprocess=True)
    # The variable set after import: values would silently stay per process.
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MutexValue)
    with pytest.raises(RuntimeError, match="imported before"):
        ServiceMetrics(multiprocess=True)


def test_single_process_apps_do_not_share_metrics() -> None:
    a, b = ServiceMetrics(), ServiceMetrics()
    a.items_scored.inc(3)
    a.set_model("m", "1", "mlflow")
    a.set_model("m", "2", "mlflow")
    text = b.render().decode()
    assert "surfacer_items_scored_total 0.0" in text
    assert 'surfacer_model_info{name="m",source="mlflow",version="2"} 1.0' in a.render().decode()
    assert 'version="1"' not in a.render().decode()


def test_make_metrics_dir_is_fresh_and_removes_dead_runs(tmp_path: Path) -> None:
    parent = tmp_path / "prometheus"
    stale = parent / f"{dead_pid()}-abc"
    running = parent / f"{os.getppid()}-def"
    other = parent / "keep-me"
    for d in (stale, running, other):
        d.mkdir(parents=True)
        (d / "counter_1.db").write_bytes(b"x")
    made = make_metrics_dir(parent)
    assert made.parent == parent.resolve() and made.name.startswith(f"{os.getpid()}-")
    assert list(made.iterdir()) == []
    assert not stale.exists() and running.exists() and other.exists()
    assert make_metrics_dir(parent) != made


# -- a real `surfacer serve --workers 2` -------------------------------------------------------


def _scrape(base_url: str) -> str:
    # A new connection per scrape, so the kernel may hand it to either worker.
    r = httpx.get(f"{base_url}/metrics", headers={"X-API-Key": ADMIN_KEY}, timeout=30)
    assert r.status_code == 200, r.text
    return r.text


def _items_scored_by_pid(metrics_dir: Path) -> dict[str, float]:
    out = {}
    for f in metrics_dir.glob("counter_*.db"):
        merged = MultiProcessCollector.merge([str(f)])
        out[f.stem.split("_")[1]] = sum(
            s.value for m in merged for s in m.samples if s.name == "surfacer_items_scored_total"
        )
    return out


def _until(pred: Callable[[], bool], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


@pytest.mark.slow
def test_two_workers_report_summed_metrics(champion_v1: Registry, tmp_path: Path) -> None:
    recs = records(40, random_state=5)
    state = tmp_path / "state"
    with serve_process(champion_v1.serve_env(state), tmp_path, "--workers", "2") as server:
        (metrics_dir,) = list((state / "prometheus").iterdir())

        def both_ready() -> bool:
            text = _scrape(server.base_url)
            pids = {dict(k[1])["pid"] for k in samples(text, "surfacer_model_info")}
            ready = samples(text, "surfacer_model_ready")
            return len(pids) == 2 and ready == {("surfacer_model_ready", frozenset()): 1.0}

        _until(both_ready)

        sent = {"requests": 0, "items": 0, "post_items": 0}
        lock = threading.Lock()

        def send(k: int) -> None:
            batch = k % 3 == 0
            items = recs[: 1 + k % 7] if batch else [recs[k % len(recs)]]
            body = {"items": items} if batch else items[0]
            r = httpx.post(
                f"{server.base_url}/v1/score", json=body, headers={"X-API-Key": SCORE_KEY}
            )
            assert r.status_code == 200, r.text
            with lock:
                sent["requests"] += 1
                sent["items"] += len(items)
                sent["post_items"] += sum(it["anchor"] == "post" for it in items)

        # Rounds of concurrent requests on fresh connections until both workers have scored.
        k = 0
        for _ in range(30):
            threads = [threading.Thread(target=send, args=(k + i,)) for i in range(16)]
            k += len(threads)
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            by_pid = _items_scored_by_pid(metrics_dir)
            if len([v for v in by_pid.values() if v > 0]) == 2:
                break
        assert len([v for v in by_pid.values() if v > 0]) == 2, by_pid
        assert sum(by_pid.values()) == sent["items"]

        score_200 = frozenset({("route", "/v1/score"), ("method", "POST"), ("status", "200")})
        texts = [_scrape(server.base_url) for _ in range(8)]
        for text in texts:
            assert samples(text, "surfacer_items_scored") == {
                ("surfacer_items_scored_total", frozenset()): sent["items"]
            }
            requests = samples(text, "surfacer_http_requests")
            assert requests[("surfacer_http_requests_total", score_200)] == sent["requests"]
            latency = samples(text, "surfacer_http_request_duration_seconds")
            route = frozenset({("route", "/v1/score"), ("method", "POST")})
            assert (
                latency[("surfacer_http_request_duration_seconds_count", route)] == sent["requests"]
            )
            lq = ("surfacer_score_count", frozenset({("issue", "low_quality")}))
            assert samples(text, "surfacer_score")[lq] == sent["post_items"]
            versions = {dict(k[1])["version"] for k in samples(text, "surfacer_model_info")}
            assert versions == {champion_v1.versions[0]}
        (tmp_path / "metrics-sample.txt").write_text(texts[-1])
    # `surfacer serve` removes its metrics folder when it stops.
    assert not metrics_dir.exists()
