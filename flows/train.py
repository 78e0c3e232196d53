"""Step 2: train the VAE, tracking every epoch, and log the sampler as an MLflow model."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec
from prefect import task

from flows import tracking
from flows.config import PipelineConfig
from flows.retry import network
from vae_model.checkpoint import checkpoint_path
from vae_model.data import read_snapshot
from vae_model.evaluate import held_out
from vae_model.images import reconstruction_grid, sample_grid
from vae_model.model import VAE, Sampler, sampler_input_dim
from vae_model.sampler_weights import SAMPLER_FILE, save_sampler
from vae_model.train import train as fit
from vae_model.train import vae_config


@task(name="train", **network(timeout_s=6 * 3600, retries=1))
def train(cfg: PipelineConfig, data: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Train on the snapshot; log metrics per epoch, image grids and the model."""
    train_data, val_data = read_snapshot(data["snapshot"])
    ckpt = checkpoint_path(data["sha256"], cfg.data.binarize, cfg.model, cfg.train)
    with tracking.resumed(cfg.tracking, run_id):
        mlflow.log_params(tracking.flatten(cfg.to_dict()))
        mlflow.log_dict(cfg.to_dict(), "config.yaml")
        # An epoch's metrics are logged after its checkpoint is saved: a run that has them is a
        # retry, and resumes from the checkpoint it wrote itself whatever train.resume says.
        logged = {m.step for m in MlflowClient().get_metric_history(run_id, "val_elbo")}
        train_cfg = cfg.train.model_copy(update={"resume": True}) if logged else cfg.train

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            if epoch not in logged:  # a resumed epoch this run already logged
                mlflow.log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step=epoch)

        result = fit(vae_config(cfg.model, train_data), train_cfg, train_data, val_data, cfg.data.binarize, ckpt, on_epoch)
        mlflow.set_tag("resumed_from_epoch", str(result.resumed_from_epoch))
        model = result.model.cpu().eval()
        examples = held_out(val_data, torch.device("cpu"), cfg.data.binarize, seed=cfg.train.seed)
        y = None if examples.y is None or not model.cfg.conditional else examples.y[:32]
        mlflow.log_image(sample_grid(model, seed=cfg.train.seed).transpose(1, 2, 0), "images/samples.png")
        mlflow.log_image(reconstruction_grid(model, examples.x[:32], y).transpose(1, 2, 0), "images/reconstructions.png")
        model_id = log_sampler(model)
    return {"checkpoint": str(ckpt), "model_id": model_id, "epochs": len(result.history),
            "resumed_from_epoch": result.resumed_from_epoch}


def log_sampler(model: VAE) -> str:
    """Log the prior and decoder (`Sampler`) as a torch.export (pt2) model: no pickle, loads with
    plain MLflow. Their weights ride along as `extra_files/sampler.pt`, which generation loads instead."""
    cfg = model.cfg
    width = sampler_input_dim(cfg)
    example = np.random.default_rng(0).uniform(size=(2, width)).astype(np.float32)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, width))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, cfg.input_dim))]),
    )
    # MLflow checks the input example through its JSON serving path, which the pytorch flavor
    # does not accept (lists), and logs a long warning; the pt2 export itself checks the example.
    logging.getLogger("mlflow.models.model").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as folder:
        # Explicit: the default depends on the MLflow version and on Databricks, and may be pickle.
        info = mlflow.pytorch.log_model(
            Sampler.of(model), name="model", input_example=example, signature=signature, serialization_format="pt2",
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            extra_files=[str(save_sampler(model, Path(folder) / SAMPLER_FILE))],
            metadata={**cfg.to_dict(), "input": "standard-normal noise (latent_dim, times the temperature), "
                      "one uniform in [0, 1) picking the prior's component, one-hot labels (num_classes)",
                      "output": "pixel means in [0, 1], flattened C*H*W"},
        )
    return info.model_id
