"""Step 1: load and check the dataset, write its canonical snapshot, log it as the run's input."""

from __future__ import annotations

import warnings
from typing import Any

import mlflow
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset

from flows import tracking
from flows.config import PipelineConfig
from flows.lazy_task import task
from flows.retry import network
from vae_model.data import load_source, write_snapshot
from vae_model.sampling import parse_labels
from vae_model.train import vae_config


@task(name="ingest", **network(timeout_s=1800))
def ingest(cfg: PipelineConfig, run_id: str) -> dict[str, Any]:
    """Load, check and snapshot the configured dataset."""
    train, val = load_source(cfg.data)
    # Refuses, before anything is written, a model the data cannot feed, and labels that model
    # will not take (which would fail only after it is registered).
    model_cfg = vae_config(cfg.model, train)
    parse_labels(cfg.generate.labels, model_cfg.num_classes, "generate.labels", model_cfg.class_names)
    path, sha = write_snapshot(train, val, cfg.data.snapshot_dir)
    with tracking.resumed(cfg.tracking, run_id):
        with warnings.catch_warnings():
            # MLflow registers the local-file source twice ('' and 'file' schemes) and warns
            # that a path is ambiguous between the two identical classes.
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(path.resolve().as_uri())
        dataset = MetaDataset(source, name=train.source, digest=sha[:16])
        mlflow.log_input(dataset, context="training")
        mlflow.set_tags({"data_sha256": sha, "data_source": train.source})
        if train.notes:
            # Not refusals: the content passed its checks, and data_sha256 names what was used.
            mlflow.set_tag("data_note", "; ".join(train.notes))
        mlflow.log_metrics({"data_train_examples": len(train), "data_val_examples": len(val)})
    c, h, w = train.shape
    return {"snapshot": str(path), "sha256": sha, "n_train": len(train), "n_val": len(val),
            "shape": [c, h, w], "num_classes": train.num_classes}
