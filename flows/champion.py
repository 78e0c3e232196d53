"""Champion/challenger: the VAE's weights beside each registered version, and scoring any version
on one held-out split, so that two models are compared on the same examples and the same noise."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import torch
from mlflow import MlflowClient

from vae_model.checkpoint import load_checkpoint, load_model
from vae_model.config import PipelineConfig
from vae_model.data import read_snapshot
from vae_model.evaluate import evaluate_elbo, held_out
from vae_model.model import VAE

WEIGHTS_DIR = "vae"


def log_weights(checkpoint: str, run_id: str) -> str:
    """Log the whole VAE (the registered model is only the decoder, and the ELBO needs the encoder)
    as a run artifact holding tensors and plain config only; return its `runs:/` URI."""
    state = load_checkpoint(checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.pt"
        torch.save({"model": state["model"], "model_config": state["model_config"]}, path)
        MlflowClient().log_artifact(run_id, str(path), WEIGHTS_DIR)
    return f"runs:/{run_id}/{WEIGHTS_DIR}/weights.pt"


def load_weights(uri: str) -> VAE:
    """The VAE behind a `weights_uri` tag, loaded with weights_only (no unpickled code)."""
    with tempfile.TemporaryDirectory() as tmp:
        return load_model(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))


def incompatibility(model: VAE, snapshot: str) -> str | None:
    """Why `model` cannot be scored on this snapshot's held-out split, or None."""
    _, val = read_snapshot(snapshot)
    cfg = model.cfg
    if (cfg.channels, cfg.height, cfg.width) != tuple(val.shape):
        return f"it models {cfg.channels}x{cfg.height}x{cfg.width} images, the data is {'x'.join(map(str, val.shape))}"
    if cfg.conditional and (val.labels is None or val.num_classes > cfg.num_classes):
        return f"it is conditional on {cfg.num_classes} classes, the data has {val.num_classes or 'no'} labels"
    return None


def score(model: VAE, snapshot: str, config: PipelineConfig) -> float:
    """Held-out ELBO (nats per example) the way the gate measures it: the snapshot's held-out split,
    binarised and sampled with seeds from the current config, so every model sees the same draws."""
    _, val = read_snapshot(snapshot)
    data = held_out(val, torch.device("cpu"), config.data.binarize, seed=config.train.seed + 1)
    return evaluate_elbo(model, data, 1024, seed=config.train.seed)["elbo"]
