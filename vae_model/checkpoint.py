"""Training checkpoints: the weights file (vae_model.weights) with everything needed to resume, and
where a run keeps it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from vae_model.config import ModelConfig, TrainConfig
from vae_model.model import VAE
from vae_model.weights import read_weights, save_model


def save_checkpoint(
    path: str | Path,
    model: VAE,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    epoch: int,
    history: list[dict[str, float]],
    train_cfg: TrainConfig,
) -> None:
    save_model(path, model, optimizer=optimizer.state_dict(), generator=generator.get_state(), epoch=epoch,
               history=history, train_config=train_cfg.model_dump(mode="json"))


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    return read_weights(path, device)


def checkpoint_path(data_sha256: str, binarize: str, model: ModelConfig, train: TrainConfig) -> Path:
    """Where a run's checkpoint lives: keyed by the data and every setting that shapes the
    weights, so rerunning a killed run with train.resume=true finds it (epochs may grow)."""
    # A decaying learning rate depends on the total epochs, so then they shape the weights too.
    free = {"resume", "progress", "checkpoint_dir", "checkpoint_every_s"} | ({"epochs"} if train.lr_schedule == "constant" else set())
    shaping = {
        "data": data_sha256,
        "binarize": binarize,
        "model": model.model_dump(mode="json"),
        "train": train.model_dump(mode="json", exclude=free),
    }
    key = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]
    return Path(train.checkpoint_dir) / f"{key}.pt"
