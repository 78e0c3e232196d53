"""Step 2: train the VAE, tracking every epoch, and log the sampler as an MLflow model."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from flows import stopping, tracking
from flows.config import PipelineConfig
from flows.lazy_task import task
from flows.retry import network
from vae_model.checkpoint import checkpoint_path
from vae_model.data import read_snapshot
from vae_model.images import reconstruction_grid, sample_grid
from vae_model.likelihood import held_out
from vae_model.model import VAE
from vae_model.train import train as fit
from vae_model.train import vae_config
from vae_model.weights import WEIGHTS_FILE, save_model


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
        client = MlflowClient()
        logged = {m.step for m in client.get_metric_history(run_id, "val_elbo")}
        train_cfg = cfg.train.model_copy(update={"resume": True}) if logged else cfg.train
        pending: list[Metric] = []

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            if epoch not in logged:  # a resumed epoch this run already logged
                now = int(time.time() * 1000)
                pending.extend(Metric(k, v, now, epoch) for k, v in metrics.items() if k != "epoch")

        def on_checkpoint(epoch: int) -> None:
            # One write per checkpoint, not per epoch: each costs ~10 ms in a SQLite store.
            if pending:
                client.log_batch(run_id, metrics=pending)
            pending.clear()

        result = fit(vae_config(cfg.model, train_data), train_cfg, train_data, val_data, cfg.data.binarize, ckpt,
                     on_epoch, on_checkpoint, should_stop=stopping.requested)
        mlflow.set_tag("resumed_from_epoch", str(result.resumed_from_epoch))
        model = result.model.cpu().eval()
        examples = held_out(val_data, torch.device("cpu"), cfg.data.binarize, seed=cfg.train.seed)
        y = None if examples.y is None or not model.cfg.conditional else examples.y[:32]
        mlflow.log_image(sample_grid(model, seed=cfg.train.seed).transpose(1, 2, 0), "images/samples.png")
        mlflow.log_image(reconstruction_grid(model, examples.x[:32], y).transpose(1, 2, 0), "images/reconstructions.png")
        model_id = log_sampler(model)
    return {"checkpoint": str(ckpt), "model_id": model_id, "epochs": len(result.history),
            "resumed_from_epoch": result.resumed_from_epoch}


SERVED_MODEL = Path(__file__).with_name("served_sampler.py")
REQUEST = Schema([
    ColSpec("long", "num_samples"),
    ColSpec("long", "seed", required=False),
    ColSpec("string", "labels", required=False),
    ColSpec("double", "temperature", required=False),
    ColSpec("long", "shard_size", required=False),
])


def log_sampler(model: VAE) -> str:
    """Log the model as `flows/served_sampler.py` (a request in, samples out; models from code, no
    pickle) with its weights file (vae_model.weights) as the artifact `weights.pt`, which
    `generate` reads too."""
    with tempfile.TemporaryDirectory() as folder:
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(SERVED_MODEL),
            artifacts={"weights": str(save_model(Path(folder) / WEIGHTS_FILE, model))},
            signature=ModelSignature(inputs=REQUEST),
            # Shown in the MLflow UI and checked through the serving path when logged.
            input_example=pd.DataFrame([{"num_samples": 2, "seed": 0}]),
            # Explicit: inferring them would load the model in a subprocess. `vae_model` is this
            # project's package, installed where the model is served (as on Dask workers).
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy", "pandas"],
            metadata={**model.cfg.to_dict(), "input": "a request per row: num_samples, seed, labels, temperature, shard_size",
                      "output": "a row per sample: request, sample_id, label, label_name, pixels (uint8, C*H*W)"},
        )
    return info.model_id
