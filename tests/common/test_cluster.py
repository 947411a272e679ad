"""Where Dask runs (plan from settings) and the process-tree peak memory figure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from common.cluster import AUTO_MEMORY_SHARE, dask_client, parse_bytes, plan_cluster
from common.machine import total_memory_bytes
from common.memory import PeakMemory
from common.settings import Settings


def test_plan_defaults_to_a_local_cluster_sized_to_the_machine(tmp_path: Path) -> None:
    plan = plan_cluster(settings=Settings(data_dir=tmp_path), n_workers=2)
    assert plan.scheduler is None
    assert plan.n_workers == 2
    assert plan.memory_limit == int(total_memory_bytes() * AUTO_MEMORY_SHARE / 2)
    assert plan.spill_dir == (tmp_path / "dask").resolve()
    assert "2 worker(s)" in plan.describe() and "spill to" in plan.describe()


def test_plan_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SURFACER_DASK_SCHEDULER", "tcp://10.0.0.5:8786")
    monkeypatch.setenv("SURFACER_DASK_MEMORY_LIMIT", "3GB")
    monkeypatch.setenv("SURFACER_DASK_SPILL_DIR", str(tmp_path / "spill"))
    plan = plan_cluster()
    assert plan.scheduler == "tcp://10.0.0.5:8786"
    assert plan.memory_limit == 3_000_000_000
    assert plan.spill_dir == (tmp_path / "spill").resolve()
    # an explicit --scheduler wins over the environment
    assert plan_cluster("tcp://127.0.0.1:9999").scheduler == "tcp://127.0.0.1:9999"


def test_bad_memory_limit_is_a_user_error() -> None:
    assert parse_bytes("2GiB") == 2 * 1024**3
    with pytest.raises(ValueError, match="memory limit"):
        parse_bytes("lots")
    with pytest.raises(ValueError, match="memory limit"):
        plan_cluster(settings=Settings(dask_memory_limit="0"))


def test_peak_memory_counts_child_processes() -> None:
    code = "import time; b = bytearray(300_000_000); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.0)"
    with PeakMemory(interval_s=0.05) as peak:
        subprocess.run([sys.executable, "-c", code], check=True)
    assert peak.peak_bytes >= 300_000_000
    assert peak.max_processes >= 2
    assert peak.line().startswith("peak memory: ")
    # the child's bytes are not this process's: the line tells the two apart
    assert 0 < peak.own_peak_bytes < peak.peak_bytes - 250_000_000
    assert f"this process alone at most {peak.own_peak_bytes / 1e6:.1f} MB" in peak.line()


def test_stage_peak_leaves_out_an_earlier_high_water_mark() -> None:
    # an earlier child reached 1 GB: the kernel remembers it for this process's children
    code = "b = bytearray(1_000_000_000); b[::4096] = b'x' * len(b[::4096])"
    subprocess.run([sys.executable, "-c", code], check=True)
    with PeakMemory(interval_s=0.05) as whole:
        pass
    with PeakMemory(interval_s=0.05, kernel_high_water=False) as stage:
        pass
    assert whole.peak_bytes >= 1_000_000_000  # the command's peak includes it
    assert stage.peak_bytes < 1_000_000_000  # a later stage's own peak does not
    assert stage.peak_bytes > 0


def test_cli_prints_peak_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from surfacer.cli import run

    assert run(["--peak-memory", "data", "validate", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "error: dataset folder" in err
    assert "peak memory: " in err


def _bad_input() -> None:
    raise ValueError("a user error raised in a task")


def test_a_failed_task_is_not_logged_by_the_worker_too(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the client re-raises the task's exception (the CLI prints a user error as one line);
    # the worker also logged it with a traceback ("Compute Failed") above that line
    monkeypatch.setenv("SURFACER_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SURFACER_DASK_SCHEDULER", raising=False)
    with dask_client(n_workers=1) as client:
        with pytest.raises(ValueError, match="a user error raised in a task"):
            client.submit(_bad_input, pure=False).result()
        client.run(lambda: None)  # a round trip to the worker after its failure was handled
    err = capfd.readouterr().err
    assert "Compute Failed" not in err and "Traceback" not in err, err


def _sleep(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


def test_work_the_cluster_lost_is_one_user_error_naming_the_memory_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker killed at its memory limit loses the data scattered to it: the futures come
    # back cancelled ("cancelled for reason: unknown") or KilledWorker, a traceback in the
    # CLI. Cancelling a future is the same failure, made on purpose.
    from common.cluster import gather_with_progress
    from common.errors import ClusterError
    from surfacer.cli import USER_ERRORS

    monkeypatch.setenv("SURFACER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SURFACER_DASK_MEMORY_LIMIT", "1GB")
    monkeypatch.delenv("SURFACER_DASK_SCHEDULER", raising=False)
    with dask_client(n_workers=1) as client:
        lost = client.submit(_sleep, 30, pure=False)
        lost.cancel()
        with pytest.raises(ClusterError, match=r"snapshots: .*lost a worker.*1\.0 GB per worker"):
            gather_with_progress(client, [lost], "snapshots")
    assert issubclass(ClusterError, USER_ERRORS)  # printed as one `error:` line, exit 2
