"""Step 3: the quality gate on the held-out split."""

from __future__ import annotations

from typing import Any

import mlflow
import torch
from prefect import task
from prefect.artifacts import create_markdown_artifact

from flows import tracking
from flows.retry import network
from vae_model.checkpoint import load_model
from vae_model.config import PipelineConfig
from vae_model.data import read_snapshot
from vae_model.evaluate import bits_per_dim, evaluate_elbo, evaluate_iw, held_out
from vae_model.gate import gate_decision


@task(name="validate", **network(timeout_s=1800))
def validate(config: dict[str, Any], data: dict[str, Any], trained: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Measure the held-out ELBO (and IW bound) and compare it with the thresholds."""
    cfg = PipelineConfig.model_validate(config)
    _, val_data = read_snapshot(data["snapshot"])
    model = load_model(trained["checkpoint"])
    val = held_out(val_data, torch.device("cpu"), cfg.data.binarize, seed=cfg.train.seed + 1)
    metrics = {"heldout_elbo": evaluate_elbo(model, val, 1024, seed=cfg.train.seed)["elbo"]}
    metrics["heldout_bits_per_dim"] = bits_per_dim(metrics["heldout_elbo"], model.cfg.input_dim)
    if cfg.validate_.iw_samples:
        metrics["val_iw_nll"] = -evaluate_iw(model, val, cfg.validate_.iw_samples, seed=cfg.train.seed)
    decision = gate_decision(metrics, cfg.validate_)
    with tracking.resumed(config["tracking"], run_id):
        mlflow.log_metrics(metrics)
        mlflow.set_tag("validation_status", "passed" if decision["passed"] else "failed")
    create_markdown_artifact(decision["markdown"], key="validation", description="quality gate")
    return {**metrics, **decision}
