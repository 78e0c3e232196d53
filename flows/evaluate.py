"""The evaluate step: a synthetic sample set against the real splits, recorded in MLflow and Prefect.

In the pipeline it runs before registration, on samples drawn from the trained checkpoint with
the generate settings, so that its thresholds block registration as the ELBO gate does; the
`vae-pipeline evaluate` command runs it on any generated folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pyarrow.parquet as pq
from mlflow import MlflowClient
from prefect import flow, task

from flows import registered_model, tracking
from flows.config import PipelineConfig
from flows.prefect_report import artifact, log
from vae_model.data import read_snapshot
from vae_model.errors import UserError
from vae_model.gate import sample_gate
from vae_model.generate import evaluation_request, sample_model
from vae_model.metrics import evaluate_samples, read_samples
from vae_model.metrics.samples import samples_model_uri
from vae_model.weights import load_model


@task(name="draw-evaluation-samples")
def draw_samples(cfg: PipelineConfig, trained: dict[str, Any], run_id: str) -> str:
    """Sample the trained, not yet registered, model into Parquet shards; return their folder."""
    model = load_model(trained["checkpoint"])
    request = evaluation_request(model, cfg.generate, cfg.evaluate, f"models:/{trained['model_id']}", "unregistered", run_id)
    return str(sample_model(model, request, Path(cfg.evaluate.out_dir) / run_id))


@task(name="evaluate")
def evaluate(cfg: PipelineConfig, data: dict[str, Any], samples_dir: str, run_id: str) -> dict[str, Any]:
    """Score the samples' fidelity, utility and memorisation; log them and apply the sample gate."""
    train, held = read_snapshot(data["snapshot"])
    report = evaluate_samples(train, held, read_samples(samples_dir), cfg.evaluate,
                              data_key=data["sha256"], cache_dir=cfg.evaluate.cache_dir)
    decision = sample_gate(report.synthetic, cfg.validate_, report.real)
    with tracking.resumed(cfg.tracking, run_id):
        mlflow.log_metrics(report.metrics())
        mlflow.log_dict({**report.to_dict(), "samples": samples_dir, "gate": decision}, "evaluation/report.json")
        mlflow.log_image(report.picture.transpose(1, 2, 0), "evaluation/closest_to_training.png")
        if (preview := Path(samples_dir) / "preview.png").exists():
            mlflow.log_artifact(str(preview), "evaluation")
        mlflow.set_tag("sample_gate_status", "passed" if decision["passed"] else "failed")
    artifact(f"{report.markdown()}\n{decision['message']}\n", key="evaluation",
             description="synthetic-data quality and privacy")
    log("evaluated %d samples in %.1f s; %s", report.counts["synthetic"], report.seconds, decision["message"])
    return {"passed": decision["passed"], "message": decision["message"], "headline": report.headline(),
            "seconds": report.seconds,
            "synthetic": report.synthetic, "real": report.real, "counts": report.counts}


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


@flow(name="evaluate")
def evaluate_samples_flow(cfg: PipelineConfig, samples_dir: str, model_uri: str | None = None,
                          snapshot: str | None = None) -> dict[str, Any]:
    """Evaluate a generated folder against the data its model was trained on, as its own MLflow run."""
    tracking.use(cfg.tracking.uri)
    model_uri = model_uri or samples_model_uri(samples_dir)
    data = _snapshot_for(model_uri, snapshot, cfg.data.snapshot_dir)
    run_id = tracking.start_run(cfg.tracking, run_name=f"evaluate-{Path(samples_dir).name}")
    MlflowClient().set_tag(run_id, "evaluated_samples", str(Path(samples_dir).resolve()))
    MlflowClient().set_tag(run_id, "data_sha256", data["sha256"])
    if model_uri:
        MlflowClient().set_tag(run_id, "evaluated_model", model_uri)
    try:
        result = evaluate(cfg, data, samples_dir, run_id)
    except BaseException:
        tracking.end_run(run_id, "FAILED")
        raise
    tracking.end_run(run_id, "FINISHED")
    return {**result, "run_id": run_id}
