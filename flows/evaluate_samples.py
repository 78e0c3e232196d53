"""`vae-pipeline evaluate`: a generated folder against the data its model was trained on, as its
own MLflow run (the evaluate step, flows/evaluate.py, does the scoring). Run in the command's
process without a Prefect API, as `run` and `generate` are; as the Prefect flow `evaluate` with one.
Importing this module never imports Prefect."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from mlflow import MlflowClient

from flows import registered_model, tracking
from flows.config import PipelineConfig
from flows.evaluate import evaluate
from vae_model.errors import UserError
from vae_model.metrics.samples import samples_model_uri


def _snapshot_for(model_uri: str | None, snapshot: str | None, snapshot_dir: str) -> dict[str, Any]:
    """The real data to compare with: --data, else the snapshot the model's version was trained on."""
    if snapshot is not None:
        path = Path(snapshot)
        if not path.is_file():
            raise UserError(f"--data {path}: no such snapshot file (expected .vae-pipeline/data/<hash>.parquet)")
        meta = pq.read_schema(path).metadata or {}
        if b"sha256" not in meta:
            raise UserError(f"--data {path}: not a vae-pipeline snapshot (no sha256 in its metadata)")
        return {"snapshot": str(path), "sha256": meta[b"sha256"].decode()}
    if model_uri is None:
        raise UserError("--model: the samples record no model URI; pass --model or --data")
    model = registered_model.resolve(model_uri)
    sha = MlflowClient().get_model_version(model["name"], model["version"]).tags.get("data_sha256")
    if not sha:
        raise UserError(f"{model_uri}: the model version has no data_sha256 tag; pass --data SNAPSHOT")
    path = Path(snapshot_dir) / f"{sha[:16]}.parquet"
    if not path.is_file():
        raise UserError(f"{path}: the snapshot {model_uri} was trained on is not here; pass --data SNAPSHOT")
    return {"snapshot": str(path), "sha256": sha}


def evaluate_folder(cfg: PipelineConfig, samples_dir: str, model_uri: str | None = None,
                    snapshot: str | None = None, as_task: bool = False) -> dict[str, Any]:
    """Evaluate a generated folder against the data its model was trained on, as its own MLflow
    run; the scoring runs as a Prefect task of the current flow run where `as_task`."""
    tracking.use(cfg.tracking.uri)
    model_uri = model_uri or samples_model_uri(samples_dir)
    data = _snapshot_for(model_uri, snapshot, cfg.data.snapshot_dir)
    run_id = tracking.start_run(cfg.tracking, run_name=f"evaluate-{Path(samples_dir).name}")
    MlflowClient().set_tag(run_id, "evaluated_samples", str(Path(samples_dir).resolve()))
    MlflowClient().set_tag(run_id, "data_sha256", data["sha256"])
    if model_uri:
        MlflowClient().set_tag(run_id, "evaluated_model", model_uri)
    try:
        result = (evaluate if as_task else evaluate.fn)(cfg, data, samples_dir, run_id)
    except BaseException as exc:
        tracking.end_run(run_id, tracking.status_after(exc))
        raise
    tracking.end_run(run_id, "FINISHED")
    return {**result, "run_id": run_id}


@functools.cache
def evaluate_flow() -> Any:
    """`evaluate_folder` as the Prefect flow `evaluate` (a flow run in the UI), built on first use."""
    from prefect import flow

    @flow(name="evaluate")
    def evaluate_samples(cfg: PipelineConfig, samples_dir: str, model_uri: str | None = None,
                         snapshot: str | None = None) -> dict[str, Any]:
        """Evaluate a generated folder against the data its model was trained on, as its own MLflow run."""
        return evaluate_folder(cfg, samples_dir, model_uri, snapshot, as_task=True)

    return evaluate_samples
