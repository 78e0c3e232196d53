"""Step 3: the quality gate on the held-out split."""

from __future__ import annotations

from typing import Any

import mlflow

from flows import tracking
from flows.config import PipelineConfig
from flows.lazy_task import task
from flows.prefect_report import artifact
from flows.retry import network
from vae_model.data import read_snapshot
from vae_model.gate import quality_gate
from vae_model.likelihood import heldout_figures
from vae_model.weights import load_model


@task(name="validate", **network(timeout_s=1800))
def validate(cfg: PipelineConfig, data: dict[str, Any], trained: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Measure the held-out ELBO (and IW bound) and compare it with the thresholds."""
    _, val_data = read_snapshot(data["snapshot"])
    metrics = heldout_figures(load_model(trained["checkpoint"]), val_data, cfg.data.binarize, cfg.train.seed,
                              cfg.validate_.iw_samples)
    decision = quality_gate(metrics, cfg.validate_)
    with tracking.resumed(cfg.tracking, run_id):
        mlflow.log_metrics(metrics)
        mlflow.set_tag("validation_status", "passed" if decision["passed"] else "failed")
    artifact(decision["markdown"], key="validation", description="quality gate")
    return {**metrics, **decision}
