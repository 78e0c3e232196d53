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
    # mlflow.set_registry_uri exports MLFLOW_REGISTRY_URI: set here, it is removed after the test.
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
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


def gated(*extra: str) -> tuple:
    """Ingest, train and validate a TINY model through the step functions themselves (as Prefect
    would call them, without a flow run); it passed the gate. Returns the register step's arguments:
    (config, data, trained, report)."""
    from flows import tracking
    from flows.config import load_config
    from flows.ingest import ingest
    from flows.train import train
    from flows.validate import validate

    cfg = load_config(None, [*TINY, *extra])
    run_id = tracking.start_run(cfg.tracking)
    data = ingest.fn(cfg, run_id)
    trained = train.fn(cfg, data, run_id)
    report = validate.fn(cfg, data, trained, run_id)
    assert report["passed"]
    return cfg, data, trained, report


def register_tiny_models(root: Path, specs: dict[str, bool], epochs: int = 2, hidden_dim: int = 32) -> str:
    """Train tiny digits models (name -> conditional) and register each as version 1 with the
    alias `champion` in a new SQLite store under `root`; returns the store URI."""
    import mlflow
    from mlflow import MlflowClient

    from flows.train import log_sampler
    from vae_model.config import DataConfig, ModelConfig, TrainConfig
    from vae_model.data import load_source
    from vae_model.train import train, vae_config

    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = MlflowClient().create_experiment("tiny-models", artifact_location=str(root / "artifacts"))
    train_data, val_data = load_source(DataConfig())
    for name, conditional in specs.items():
        model_cfg = vae_config(ModelConfig(latent_dim=4, hidden_dim=hidden_dim, conditional=conditional), train_data)
        model = train(model_cfg, TrainConfig(epochs=epochs, progress=False), train_data, val_data).model.eval()
        with mlflow.start_run(experiment_id=experiment):
            version = mlflow.register_model(f"models:/{log_sampler(model)}", name)
        MlflowClient().set_registered_model_alias(name, "champion", version.version)
    return uri
