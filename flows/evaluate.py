"""The evaluate step: a synthetic sample set against the real splits, recorded in MLflow and Prefect.

In the pipeline it runs before registration, on samples drawn from the trained checkpoint with
the generate settings, so that its thresholds block registration as the ELBO gate does; the
`vae-pipeline evaluate` command runs it on any generated folder (flows/evaluate_samples.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow

from flows import tracking
from flows.config import PipelineConfig
from flows.lazy_task import task
from flows.prefect_report import artifact, log
from vae_model.data import read_snapshot
from vae_model.gate import sample_gate
from vae_model.generate import evaluation_request, sample_model
from vae_model.metrics import evaluate_samples, read_samples
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
