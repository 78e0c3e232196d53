"""MLflow plumbing shared by the steps: where to track, and reopening the pipeline's run."""

from __future__ import annotations

import contextlib
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
from filelock import FileLock
from mlflow import MlflowClient

from flows.config import TrackingConfig
from vae_model.errors import UserError

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Our models are logged from code (older ones as torch.export programs): refuse anything that would need unpickling.
os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
# MLflow's own HTTP retries back off for minutes; Prefect's task retries are the outer loop.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")

_answered: set[str] = set()
_created: set[str] = set()


def use(uri: str | None) -> None:
    """Point MLflow at this store; None keeps MLflow's own default (or the env var)."""
    if uri:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    check_server(mlflow.get_tracking_uri())
    create_store(mlflow.get_tracking_uri())


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def create_store(uri: str) -> None:
    """Open a SQLite store once under a file lock: MLflow creates a new store's tables without one,
    and two processes starting together in a fresh folder both try (`duplicate column name`)."""
    path = sqlite_path(uri)
    if path is None or uri in _created:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        client = MlflowClient(uri, uri)
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)
    _created.add(uri)


def check_server(uri: str, timeout: float = 5.0) -> None:
    """Fail within seconds, naming the URI, when a tracking server does not answer."""
    if not uri.startswith(("http://", "https://")) or uri in _answered:
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            response.read()
    except (OSError, urllib.error.URLError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"tracking.uri {uri}: the MLflow server does not answer ({reason})") from None
    _answered.add(uri)


def start_run(cfg: TrackingConfig, run_name: str | None = None) -> str:
    """Create the run every step of one pipeline execution logs to; return its id."""
    use(cfg.uri)
    experiment = mlflow.set_experiment(cfg.experiment)
    run = MlflowClient().create_run(experiment.experiment_id, run_name=run_name)
    return run.info.run_id


@contextlib.contextmanager
def resumed(cfg: TrackingConfig, run_id: str) -> Iterator[mlflow.ActiveRun]:
    use(cfg.uri)
    with mlflow.start_run(run_id=run_id) as run:
        yield run


def end_run(run_id: str, status: str) -> None:
    MlflowClient().set_terminated(run_id, status)


def status_after(exc: BaseException) -> str:
    """How a run that raised `exc` ended: KILLED when the process was told to stop (Ctrl-C,
    SIGTERM, Prefect's cancellation: not an `Exception`), FAILED when a step failed."""
    return "FAILED" if isinstance(exc, Exception) else "KILLED"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None
