"""On-demand latency: cold `vae-pipeline generate` requests and the model served by MLflow, each
beside its reference, measured in one run.

Trains and registers a small conditional model of the 8x8 digits (3 epochs, latent 4, hidden 400)
in a temporary folder, then measures, each in a fresh child process (wall time, and
peak RSS as GNU time reports it):

- the import floor, `python -c "import torch, mlflow"`, and the same ending in `os._exit(0)`
  (no interpreter teardown, as the in-process command ends);
- a 1,000-sample request (Parquet and PNG) and a 100,000-sample one (Parquet), in process (no
  Prefect API configured) and through the Prefect flow (`--prefect`: its temporary server);
- `mlflow models serve` of the registered model: 50 requests of 1,000 samples over HTTP after 5
  to warm up, median and 95th percentile.

    python benchmarks/generate_latency.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process, which must succeed. GNU time starts
    it: a child forked from this (by now large) process would report this process's RSS as its
    own peak, which Linux carries across fork and exec."""
    with tempfile.NamedTemporaryFile("r") as report:
        started = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", report.name, *command], cwd=cwd, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        wall = time.perf_counter() - started
        if done.returncode:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr.decode()[-3000:]}")
        return wall, int(report.read().split()[-1]) / 1024


def register(root: Path) -> str:
    from tests.conftest import register_tiny_models

    return register_tiny_models(root, {"bench": True}, epochs=3, hidden_dim=400)


def cold(root: Path, env: dict[str, str], repeats: int) -> dict[str, list[tuple[float, float]]]:
    cli = [sys.executable, "-m", "flows.cli", "generate", "--model", "models:/bench@champion"]
    cases = {
        "import floor: python -c 'import torch, mlflow'": [sys.executable, "-c", "import torch, mlflow"],
        # The same without the interpreter's teardown, which the in-process command skips.
        "  the same, then os._exit(0)": [sys.executable, "-c", "import os, torch, mlflow; os._exit(0)"],
        "1,000 (parquet+png), in process": [*cli, "--num-samples", "1000", "--labels", "3"],
        "1,000 (parquet+png), Prefect flow": [*cli, "--num-samples", "1000", "--labels", "3", "--prefect"],
        "100,000 (parquet), in process": [*cli, "--num-samples", "100000", "--format", "parquet"],
        "100,000 (parquet), Prefect flow": [*cli, "--num-samples", "100000", "--format", "parquet", "--prefect"],
    }
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for i in range(repeats):
        for name, command in cases.items():  # interleaved, so that load on the machine hits both alike
            out = ["--out", str(root / f"out-{i}-{len(figures[name])}-{abs(hash(name))}")] if "flows.cli" in command else []
            figures[name].append(child([*command, *out], root, env))
    return figures


def served(root: Path, env: dict[str, str], requests: int = 50) -> tuple[float, list[float]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/bench@champion",
                                "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                               cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit("mlflow models serve exited")
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2):
                    break
            except OSError:
                time.sleep(0.1)
        ready = time.perf_counter() - started
        body = json.dumps({"dataframe_records": [{"num_samples": 1000, "seed": 0, "labels": "3"}]}).encode()
        latencies = []
        for i in range(5 + requests):
            request = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
            t = time.perf_counter()
            with urllib.request.urlopen(request, timeout=60) as response:
                assert len(json.loads(response.read())["predictions"]) == 1000
            if i >= 5:
                latencies.append(time.perf_counter() - t)
        return ready, latencies
    finally:
        os.killpg(process.pid, 15)
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="cold runs of each case (the best is printed too)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="generate-latency-") as folder:
        root = Path(folder)
        store = register(root)
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env.update({"MLFLOW_TRACKING_URI": store, "PREFECT_HOME": str(root / ".prefect"), "PYTHONPATH": str(ROOT),
                    "MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
        print(f"{os.cpu_count()} CPUs, {len(os.sched_getaffinity(0))} usable; model: conditional digits, latent 4, hidden 400")
        print("cold, each a fresh process: wall s / peak RSS MB per run; best")
        for name, runs in cold(root, env, args.repeats).items():
            each = ", ".join(f"{w:.2f} s / {m:.0f} MB" for w, m in runs)
            print(f"  {name:48s} {each}; best {min(w for w, _ in runs):.2f} s, {min(m for _, m in runs):.0f} MB")
        ready, latencies = served(root, env)
        p95 = statistics.quantiles(latencies, n=20)[-1]
        print(f"served (mlflow models serve, ready after {ready:.1f} s): 50 requests of 1,000 samples, "
              f"median {statistics.median(latencies) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms")


if __name__ == "__main__":
    main()
