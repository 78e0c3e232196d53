"""Shared fixtures: a real Prefect test server for the session, a real MLflow SQLite store per test."""

from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The tests' models are tiny: one thread is faster, and on a busy machine two threads per
# process oversubscribe the cores and run several times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MNIST_RAW = ROOT.parent / "shared" / "data" / "mnist" / "raw"

# Small enough for seconds per run on 2 cores, big enough to learn the digits a little.
TINY = [
    "model.latent_dim=4", "model.hidden_dim=32", "train.epochs=3", "train.batch_size=128",
    "train.progress=false", "generate.num_samples=40", "validate.min_elbo=-1000",
    # The evaluate step trains its own classifier; tests/test_evaluate_flow.py runs it.
    "evaluate.enabled=false",
]


@pytest.fixture(scope="session")
def prefect_server():
    """Prefect's own test harness: a temporary API server and database for the session.
    Yields its API URL, so that subprocesses report to it instead of starting their own."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A scratch working directory with its own MLflow SQLite store, like a fresh checkout."""
    import mlflow

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield tmp_path


@pytest.fixture
def cli(prefect_server, workdir):
    """Run the real `vae-pipeline` command in a subprocess; returns (exit code, stdout + stderr)."""

    def invoke(*args: str, timeout: float = 300) -> tuple[int, str]:
        env = {**os.environ, "PREFECT_API_URL": prefect_server}
        done = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=workdir, env=env,
                              capture_output=True, text=True, timeout=timeout)
        return done.returncode, done.stdout + done.stderr

    return invoke


def mnist_available() -> bool:
    return all((MNIST_RAW / f).is_file() for f in (
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
    ))


needs_mnist = pytest.mark.skipif(not mnist_available(), reason=f"MNIST gz files not found in {MNIST_RAW}")
