"""Generation throughput and memory: the project's `generate` flow against a naive reference.

The model is the classic MNIST-shaped MLP (20-400-784 decoder), trained for one epoch on MNIST
when `../shared/data/mnist/raw` holds it (else freshly initialised), logged and registered in a
temporary MLflow SQLite store. A temporary Prefect server is started for the run. Each case runs
in its own child process, so that its peak RSS is its own; the cases run one after the other and
see the same machine load. Cases:

- project parquet (1M) and project png (100k): the real `generate` flow (Prefect tasks, the
  registered version's sampler weights, shard records, sha256, manifest);
- naive parquet (1M): build the sampler from the version's `weights.pt` artifact, decode
  all N at once, one pyarrow table, one `pq.write_table`;
- naive png (100k): decode all N at once, then one Pillow `save` per image;
- project parquet (10M): memory must stay flat;
- floor: the same child process that only imports the stack, resolves the model and loads
  its sampler: the RSS every project case starts from (torch's CUDA build alone is ~500 MB).

Printed per case: samples/s over the generation call and over the whole child process (imports,
Prefect and MLflow start-up included), peak RSS of the child, and bytes written; then the floor's
seconds, which every whole-process rate pays.

    python benchmarks/generate_throughput.py                # the issue's sizes (~5 min on 2 cores)
    python benchmarks/generate_throughput.py --scale 0.01   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

MNIST = ROOT.parent / "shared" / "data" / "mnist" / "raw"


def register_model(store: str, artifacts: Path, epochs: int) -> str:
    import mlflow
    import torch
    from mlflow import MlflowClient

    from flows.train import log_sampler
    from vae_model.config import DataConfig, ModelConfig, TrainConfig
    from vae_model.data import load_source
    from vae_model.model import VAE, VAEConfig
    from vae_model.train import train, vae_config

    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    if epochs and (MNIST / "train-images-idx3-ubyte.gz").exists():
        train_data, val_data = load_source(DataConfig(kind="mnist", path=str(MNIST)))
        model_cfg = vae_config(ModelConfig(), train_data)
        model = train(model_cfg, TrainConfig(epochs=epochs, progress=False), train_data, val_data).model
        print(f"model: 784-400-20 MLP VAE trained {epochs} epoch(s) on MNIST")
    else:
        torch.manual_seed(0)
        model = VAE(VAEConfig())
        print("model: 784-400-20 MLP VAE, freshly initialised (no MNIST found)")
    experiment = MlflowClient().create_experiment("generate-throughput", artifact_location=str(artifacts))
    with mlflow.start_run(experiment_id=experiment):
        model_id = log_sampler(model.cpu().eval())
    version = mlflow.register_model(f"models:/{model_id}", "bench-mnist")
    return f"models:/bench-mnist/{version.version}"


def start_prefect(home: Path) -> tuple[subprocess.Popen, str]:
    port = 4500 + os.getpid() % 400
    env = {**os.environ, "PREFECT_HOME": str(home)}
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return server, url
        except OSError:
            time.sleep(1)
    server.terminate()
    raise RuntimeError("the Prefect server did not start within 180 s")


def bytes_written(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def case_project(args) -> float:
    from flows.generate import generate
    from vae_model.config import SampleRequest

    request = SampleRequest(num_samples=args.n, formats=["parquet"] if args.case.endswith("parquet") else ["png"])
    started = time.perf_counter()
    generate(args.model, request, args.out, tracking_uri=args.store)
    return time.perf_counter() - started


def case_naive(args) -> float:
    """What one writes first: decode everything, then write it in one go."""
    import io  # noqa: F401

    import mlflow
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from PIL import Image

    mlflow.set_tracking_uri(args.store)
    mlflow.set_registry_uri(args.store)
    from vae_model.weights import WEIGHTS_FILE, load_sampler

    sampler = load_sampler(mlflow.artifacts.download_artifacts(f"{args.model}/artifacts/{WEIGHTS_FILE}"))
    started = time.perf_counter()
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        inputs = torch.cat([torch.randn(args.n, 20, generator=generator), torch.rand(args.n, 1, generator=generator)], 1)
        pixels = (sampler(inputs) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    out = Path(args.out)
    out.mkdir(parents=True)
    if args.case.endswith("parquet"):
        column = pa.FixedSizeBinaryArray.from_buffers(pa.binary(784), args.n, [None, pa.py_buffer(pixels.reshape(-1))])
        table = pa.table({"sample_id": np.arange(args.n), "pixels": column})
        pq.write_table(table, out / "samples.parquet", compression="snappy")
    else:
        (out / "images").mkdir()
        for i, image in enumerate(pixels.reshape(-1, 28, 28)):
            Image.fromarray(image).save(out / "images" / f"{i:09d}.png")
    return time.perf_counter() - started


def case_floor(args) -> float:
    """What any process pays before generating: torch, MLflow, Prefect and the sampler loaded."""
    import flows.generate  # noqa: F401
    from flows import registered_model, tracking

    tracking.use(args.store)
    model = registered_model.resolve(args.model)
    registered_model.load_sampler(model["name"], model["version"])
    Path(args.out).mkdir(parents=True)
    return 0.0


def child(args) -> None:
    run = {"floor": case_floor}.get(args.case) or (case_project if args.case.startswith("project") else case_naive)
    seconds = run(args)
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak_rss_kib() / 1024, "bytes": bytes_written(Path(args.out))}))


def peak_rss_kib() -> int:
    # VmHWM is this process's own high-water mark. getrusage's ru_maxrss is not: after a
    # vfork + exec it starts from the parent's peak (Linux carries it over at exec).
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_case(case: str, n: int, model: str, store: str, scratch: Path, env: dict[str, str]) -> dict:
    out = scratch / case
    # The previous case's gigabyte is still being written back: flush it, so that no case pays
    # for the one before it.
    os.sync()
    command = [sys.executable, __file__, "--case", case, "-n", str(n), "--model", model, "--store", store, "--out", str(out)]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    process_seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{case} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    shutil.rmtree(out, ignore_errors=True)
    return {"case": case, "n": n, "process_seconds": process_seconds, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every sample count (quick checks)")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs for the model (0: untrained)")
    parser.add_argument("--skip-big", action="store_true", help="leave out the 10M case")
    parser.add_argument("--scratch", type=Path, default=None, help="where outputs go (default: a temp dir)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("-n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        child(args)
        return

    scratch = Path(tempfile.mkdtemp(prefix="generate-throughput-", dir=args.scratch))
    server = None
    try:
        store = f"sqlite:///{scratch / 'mlflow.db'}"
        model = register_model(store, scratch / "artifacts", args.epochs)
        server, api = start_prefect(scratch / "prefect")
        env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_HOME": str(scratch / "prefect")}
        scale = lambda n: max(1, int(n * args.scale))  # noqa: E731
        cases = [("floor", 0), ("naive-parquet", scale(1_000_000)), ("project-parquet", scale(1_000_000)),
                 ("naive-png", scale(100_000)), ("project-png", scale(100_000))]
        if not args.skip_big:
            cases.append(("project-parquet", scale(10_000_000)))
        print(f"{'case':<16} {'samples':>10} {'samples/s gen':>14} {'samples/s proc':>15} {'peak RSS MiB':>12} {'MB written':>11}")
        rows = []
        for case, n in cases:
            row = run_case(case, n, model, store, scratch, env)
            rows.append(row)
            print(f"{case:<16} {n:>10,} {n / max(row['seconds'], 1e-9):>14,.0f} {n / row['process_seconds']:>15,.0f} "
                  f"{row['peak_rss_mib']:>12,.0f} {row['bytes'] / 1e6:>11,.1f}", flush=True)
        floor = rows[0]["process_seconds"]
        print(f"floor: {floor:.1f} s per generating process before its first sample (Python start, imports, "
              f"model resolution and load); {scale(1_000_000):,} samples at 100,000/s whole-process leave "
              f"{scale(1_000_000) / 100_000 - floor:.1f} s for the samples")
        big = [r for r in rows if r["case"] == "project-parquet"]
        if len(big) == 2:
            print(f"peak RSS, {big[1]['n']:,} vs {big[0]['n']:,} Parquet samples: "
                  f"{big[1]['peak_rss_mib'] / big[0]['peak_rss_mib'] - 1:+.1%}")
        print(f"cores: {os.cpu_count()}; load average at the end: {os.getloadavg()[0]:.2f}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
