"""Benchmark: the same registered model served by `mlflow models serve` and by `surfacer serve`.

Trains one ScoringBundle (default: the tiktok_claims flat spec), registers it as
`<name>@champion` in a SQLite MLflow store in a temporary folder, starts both servers on
loopback, and drives them side by side with single-item requests:

- closed loop at concurrency 8 and 64 for --duration seconds each (wrk with a Lua script if
  installed, else the built-in asyncio client): throughput, p50, p99, errors, ratio;
- open loop at a fixed --rate (default 500 req/s) against surfacer: p50/p99 measured from
  each request's scheduled send time (no coordinated omission);
- a 1,000-item batch: latency over --batch-reps requests (and mlflow's, for the ratio).

The load client runs in its own process. Loopback only; every loop is bounded by time or count.

    uv run python bench/serve.py [--data SPEC|DIR] [--duration 20] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, Python puts bench/ first on the path, where bench/features.py would shadow
# the features package: look up the project's packages from the repository root instead.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(ROOT)
DEFAULT_DATA = ROOT / "features" / "specs" / "tiktok_claims.toml"
MODEL_NAME = "surfacer-bench"
API_KEY = "bench-" + "k" * 24
HOST = "127.0.0.1"


# --------------------------------------------------------------------------- load client


# the nearest-rank percentile of every bench, kept in the standard-library-only load generator
from bench.loadgen import percentile as _percentile  # noqa: E402


def _request_bytes(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = [f"POST {path} HTTP/1.1", f"Host: {HOST}", "Content-Type: application/json"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _roundtrip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes
) -> int:
    writer.write(payload)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length = 0
    chunked = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readline()).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(length)
    return status


class _Connection:
    """One keep-alive connection of the load client; renewed after a failed request."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def open(self) -> _Connection:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        return self

    async def request(self, payload: bytes) -> int | None:
        """The response status, or None if the request failed (the connection is renewed)."""
        try:
            return await _roundtrip(self.reader, self.writer, payload)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            self.writer.close()
            await self.open()
            return None

    def close(self) -> None:
        self.writer.close()


def _load_result(latencies: list[float], elapsed: float, errors: int) -> dict[str, Any]:
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": _percentile(latencies, 50) * 1000,
        "p99_ms": _percentile(latencies, 99) * 1000,
        "max_ms": max(latencies, default=math.nan) * 1000,
        "errors": errors,
    }


async def _closed_loop(
    port: int, path: str, bodies: list[bytes], headers: dict[str, str], conc: int, duration: float
) -> dict[str, Any]:
    payloads = [_request_bytes(path, b, headers) for b in bodies]
    latencies: list[float] = []
    errors = 0
    end = time.perf_counter() + duration

    async def worker(k: int) -> None:
        nonlocal errors
        conn = await _Connection(port).open()
        i = k
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            status = await conn.request(payloads[i % len(payloads)])
            if status is not None:
                latencies.append(time.perf_counter() - t0)
                i += conc
            errors += status != 200
        conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(conc)))
    return _load_result(latencies, time.perf_counter() - t0, errors)


async def _open_loop(
    port: int,
    path: str,
    bodies: list[bytes],
    headers: dict[str, str],
    rate: float,
    duration: float,
    connections: int,
) -> dict[str, Any]:
    payloads = [_request_bytes(path, b, headers) for b in bodies]
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        conn = await _Connection(port).open()
        while (item := await queue.get()) is not None:
            scheduled, payload = item
            status = await conn.request(payload)
            if status is not None:
                # From the scheduled send time: waiting for a free connection counts as latency.
                latencies.append(time.perf_counter() - scheduled)
            errors += status != 200
        conn.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    await asyncio.sleep(0.2)  # connections open
    n = int(rate * duration)
    t0 = time.perf_counter()
    for i in range(n):
        at = t0 + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((at, payloads[i % len(payloads)]))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return _load_result(latencies, time.perf_counter() - t0, errors)


async def _sequential(
    port: int, path: str, body: bytes, headers: dict[str, str], reps: int
) -> dict[str, Any]:
    payload = _request_bytes(path, body, headers)
    reader, writer = await asyncio.open_connection(HOST, port)
    latencies = []
    statuses = set()
    for _ in range(reps + 2):
        t0 = time.perf_counter()
        statuses.add(await _roundtrip(reader, writer, payload))
        latencies.append(time.perf_counter() - t0)
    writer.close()
    latencies = latencies[2:]  # first two warm caches
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": _percentile(latencies, 99) * 1000,
        "min_ms": min(latencies) * 1000,
        "statuses": sorted(statuses),
    }


def client_main(spec_path: str) -> None:
    """Entry point of the load-client process: read a JSON job, print a JSON result."""
    job = json.loads(Path(spec_path).read_text())
    bodies = [line.encode() for line in Path(job["bodies"]).read_text().splitlines() if line]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    kind = job["kind"]
    if kind == "closed":
        coro = _closed_loop(
            job["port"], job["path"], bodies, job["headers"], job["conc"], job["duration"]
        )
    elif kind == "open":
        coro = _open_loop(
            job["port"],
            job["path"],
            bodies,
            job["headers"],
            job["rate"],
            job["duration"],
            job["connections"],
        )
    else:
        coro = _sequential(job["port"], job["path"], bodies[0], job["headers"], job["reps"])
    print(json.dumps(asyncio.run(coro)))


# --------------------------------------------------------------------------- orchestration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _wait_http(
    port: int, path: str, proc: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"server exited ({proc.returncode}); log:\n{log.read_text()[-3000:]}"
            )
        try:
            if httpx.get(f"http://{HOST}:{port}{path}", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(
        f"server on port {port} not ready after {timeout}s:\n{log.read_text()[-3000:]}"
    )


@contextmanager
def _server(cmd: list[str], env: dict[str, str], port: int, ready: str, log: Path, timeout: float):
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_http(port, ready, proc, log, timeout)
        yield proc
    finally:
        if proc.poll() is None:
            # The server's own process group: uvicorn workers and mlflow's child go with it.
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _run_client(job: dict[str, Any], workdir: Path) -> dict[str, Any]:
    spec = workdir / "job.json"
    spec.write_text(json.dumps(job))
    out = subprocess.run(
        [sys.executable, __file__, "--client", str(spec)],
        capture_output=True,
        text=True,
        check=True,
        timeout=job.get("duration", 60) + 120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


_WRK_LUA = """
local bodies = {}
for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
%(headers)s
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, "%(path)s", nil, bodies[i])
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%f %%f %%f %%d %%d\\n", summary.requests,
    summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    summary.errors.status, summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout))
end
"""


def _wrk(
    port: int,
    path: str,
    bodies: Path,
    headers: dict[str, str],
    conc: int,
    duration: int,
    workdir: Path,
) -> dict[str, Any]:
    script = workdir / "post.lua"
    hdrs = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    script.write_text(_WRK_LUA % {"bodies": bodies, "headers": hdrs, "path": path})
    out = subprocess.run(
        [
            "wrk",
            f"-t{min(2, conc)}",
            f"-c{conc}",
            f"-d{duration}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            f"http://{HOST}:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 120,
    )
    m = re.search(r"RESULT (\d+) ([\d.]+) ([\d.]+) ([\d.]+) (\d+) (\d+)", out.stdout)
    if m is None:
        raise RuntimeError(f"could not parse wrk output:\n{out.stdout}\n{out.stderr}")
    n, secs, p50, p99, bad_status, sock_err = m.groups()
    return {
        "requests": int(n),
        "rps": int(n) / float(secs),
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "errors": int(bad_status) + int(sock_err),
    }


def _records(data: Path, n: int, random_state: int) -> list[dict[str, Any]]:
    """Real snapshot rows of the training data, as JSON-ready dicts (labels dropped)."""
    import numpy as np
    import orjson

    from training.data import load_training_data

    td = load_training_data(data)
    frame = td.frame[[c for c in td.frame.columns if not c.startswith("label_")]]
    rng = np.random.default_rng(random_state)
    rows = frame.iloc[rng.choice(len(frame), size=min(n, len(frame)), replace=False)]
    rows = rows.astype(object).where(rows.notna(), None)  # NaN/NaT -> null

    def default(v: Any) -> Any:
        return v.isoformat() if hasattr(v, "isoformat") else str(v)

    return [orjson.loads(orjson.dumps(r, default=default)) for r in rows.to_dict("records")]


def _train_and_register(data: Path, state: Path, random_state: int) -> tuple[Any, str]:
    from mlflow.tracking import MlflowClient

    from common.settings import Settings
    from training.pipeline import train

    settings = Settings(data_dir=state, model_name=MODEL_NAME)
    result = train(data, settings=settings, random_state=random_state, progress=True)
    if result.model_version is None:
        raise RuntimeError("training did not register a model version")
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    # The bench needs a champion whatever the promotion gate said about this first version.
    client.set_registered_model_alias(MODEL_NAME, "champion", result.model_version)
    return settings, result.model_version


def _fmt(r: dict[str, Any] | None, key: str, spec: str = ".1f") -> str:
    if (
        r is None
        or key not in r
        or r[key] is None
        or (isinstance(r[key], float) and math.isnan(r[key]))
    ):
        return "-"
    return format(r[key], spec)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="Dataset folder or flat spec to train on."
    )
    ap.add_argument(
        "--duration", type=int, default=20, help="Seconds per closed-loop and fixed-rate run."
    )
    ap.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[8, 64],
        help="requests in flight at once, one run each",
    )
    ap.add_argument(
        "--rate", type=float, default=500.0, help="Fixed request rate for the open-loop run."
    )
    ap.add_argument("--workers", type=int, default=2, help="uvicorn workers for surfacer serve.")
    ap.add_argument("--batch-reps", type=int, default=30, help="Requests of the 1,000-item batch.")
    ap.add_argument("--client", help=argparse.SUPPRESS)
    ap.add_argument(
        "--no-wrk", action="store_true", help="Use the asyncio client even if wrk exists."
    )
    ap.add_argument(
        "--random-state",
        type=int,
        default=0,
        help="seed of the model's training and of the sampled records",
    )
    args = ap.parse_args()
    if args.client:
        client_main(args.client)
        return

    work = Path(tempfile.mkdtemp(prefix="surfacer-bench-"))
    try:
        _bench(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _bench(args: argparse.Namespace, work: Path) -> None:
    import orjson

    print(f"training on {args.data} ...", file=sys.stderr)
    settings, version = _train_and_register(args.data, work / "state", args.random_state)
    records = _records(args.data, 1000, args.random_state)
    for i, r in enumerate(records):
        # The contract's item_id is a string; flat CSVs may have read it as a number.
        r["item_id"] = str(r.get("item_id", f"bench_{i}"))
    single = work / "single.jsonl"
    single.write_bytes(b"\n".join(orjson.dumps(r) for r in records[:500]) + b"\n")
    mlflow_single = work / "mlflow_single.jsonl"
    mlflow_single.write_bytes(
        b"\n".join(orjson.dumps({"dataframe_records": [r]}) for r in records[:500]) + b"\n"
    )
    batch = work / "batch.jsonl"
    batch.write_bytes(orjson.dumps({"items": records}) + b"\n")
    mlflow_batch = work / "mlflow_batch.jsonl"
    mlflow_batch.write_bytes(orjson.dumps({"dataframe_records": records}) + b"\n")

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("SURFACER_")}
    base_env["MLFLOW_TRACKING_URI"] = settings.tracking_uri
    # `mlflow models serve` execs `uvicorn` by name: the venv's bin must be on PATH even when
    # this script runs as .venv/bin/python rather than under `uv run`.
    venv_bin = str(Path(sys.executable).parent)
    base_env["PATH"] = venv_bin + os.pathsep + base_env.get("PATH", "")
    mlflow_port, surfacer_port = _free_port(), _free_port()
    bin_dir = Path(sys.executable).parent
    mlflow_cmd = [
        str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{MODEL_NAME}@champion",
        "--env-manager", "local", "-h", HOST, "-p", str(mlflow_port),
    ]  # fmt: skip
    surfacer_env = {
        **base_env,
        "SURFACER_DATA_DIR": str(work / "state"),
        "SURFACER_MODEL_NAME": MODEL_NAME,
        "SURFACER_API_KEYS": json.dumps({API_KEY: ["score"]}),
        "SURFACER_RELOAD_INTERVAL_S": "0",
        "SURFACER_MAX_BATCH_SIZE": "1000",
    }
    surfacer_cmd = [
        str(bin_dir / "surfacer"), "serve", "--host", HOST, "--port", str(surfacer_port),
        "--workers", str(args.workers), "--log-level", "warning",
        "--flags-jsonl", str(work / "flags.jsonl"),
    ]  # fmt: skip
    use_wrk = shutil.which("wrk") is not None and not args.no_wrk
    auth = {"X-API-Key": API_KEY}
    results: dict[str, dict[str, Any]] = {}

    def closed(
        port: int, path: str, bodies: Path, headers: dict[str, str], conc: int
    ) -> dict[str, Any]:
        if use_wrk:
            return _wrk(port, path, bodies, headers, conc, args.duration, work)
        job = {"kind": "closed", "port": port, "path": path, "bodies": str(bodies), "headers": headers, "conc": conc, "duration": args.duration}  # fmt: skip
        return _run_client(job, work)

    print("starting mlflow models serve and surfacer serve ...", file=sys.stderr)
    with (
        _server(mlflow_cmd, base_env, mlflow_port, "/ping", work / "mlflow.log", 300),
        _server(surfacer_cmd, surfacer_env, surfacer_port, "/readyz", work / "surfacer.log", 300),
    ):
        for conc in args.concurrency:
            # Side by side: the same load, one server after the other, no overlap.
            print(f"closed loop c={conc} ...", file=sys.stderr)
            results[f"mlflow c={conc}"] = closed(
                mlflow_port, "/invocations", mlflow_single, {}, conc
            )
            results[f"surfacer c={conc}"] = closed(surfacer_port, "/v1/score", single, auth, conc)
        print(f"fixed rate {args.rate:.0f} req/s ...", file=sys.stderr)
        results[f"surfacer {args.rate:.0f} rps"] = _run_client(
            {
                "kind": "open",
                "port": surfacer_port,
                "path": "/v1/score",
                "bodies": str(single),
                "headers": auth,
                "rate": args.rate,
                "duration": args.duration,
                "connections": 64,
            },
            work,
        )
        print("1,000-item batch ...", file=sys.stderr)
        results["surfacer batch 1000"] = _run_client(
            {
                "kind": "seq",
                "port": surfacer_port,
                "path": "/v1/score",
                "bodies": str(batch),
                "headers": auth,
                "reps": args.batch_reps,
            },
            work,
        )
        results["mlflow batch 1000"] = _run_client(
            {
                "kind": "seq",
                "port": mlflow_port,
                "path": "/invocations",
                "bodies": str(mlflow_batch),
                "headers": {},
                "reps": max(5, args.batch_reps // 3),
            },
            work,
        )

    print()
    print(
        f"model {MODEL_NAME} v{version} trained on {args.data.name}; surfacer workers={args.workers}; "
        f"client={'wrk' if use_wrk else 'asyncio'}; cpus={os.cpu_count()}"
    )
    print(f"{'run':<24}{'requests':>10}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, r in results.items():
        if "rps" in r:
            print(
                f"{name:<24}{r['requests']:>10}{_fmt(r, 'rps', '.0f'):>10}{_fmt(r, 'p50_ms', '.2f'):>9}"
                f"{_fmt(r, 'p99_ms', '.2f'):>9}{r['errors']:>8}"
            )
        else:
            print(
                f"{name:<24}{'':>10}{'':>10}{_fmt(r, 'p50_ms', '.2f'):>9}{_fmt(r, 'p99_ms', '.2f'):>9}  statuses={r['statuses']}"
            )
    print()
    for conc in args.concurrency:
        m, s = results[f"mlflow c={conc}"], results[f"surfacer c={conc}"]
        ratio = s["rps"] / m["rps"] if m["rps"] else math.inf
        verdict = "meets" if ratio >= 20 else "misses"
        print(
            f"throughput ratio surfacer/mlflow at c={conc}: {ratio:.1f}x ({verdict} the 20x target)"
        )
    fixed = results[f"surfacer {args.rate:.0f} rps"]
    print(
        f"p99 at {args.rate:.0f} req/s: {fixed['p99_ms']:.2f} ms "
        f"({'meets' if fixed['p99_ms'] < 10 else 'misses'} the 10 ms target; achieved {fixed['rps']:.0f} req/s, {fixed['errors']} errors)"
    )
    b = results["surfacer batch 1000"]
    mb = results["mlflow batch 1000"]
    print(
        f"1,000-item batch: median {b['p50_ms']:.1f} ms, p99 {b['p99_ms']:.1f} ms "
        f"({'meets' if b['p50_ms'] < 50 else 'misses'} the 50 ms target); mlflow median {mb['p50_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()
