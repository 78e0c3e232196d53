"""Training checkpoints: everything needed to resume, loaded without unpickling code."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from vae_model.atomic import atomic_path
from vae_model.config import ModelConfig, TrainConfig
from vae_model.model import VAE, VAEConfig


def save_checkpoint(
    path: str | Path,
    model: VAE,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    epoch: int,
    history: list[dict[str, float]],
    train_cfg: TrainConfig,
) -> None:
    state = {
        "model": model.state_dict(),
        "model_config": model.cfg.to_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "epoch": epoch,
        "history": history,
        "train_config": train_cfg.model_dump(mode="json"),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    # weights_only: tensors, numbers, strings and containers only, never arbitrary objects.
    return torch.load(path, map_location=device, weights_only=True)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> VAE:
    state = load_checkpoint(path, device)
    model = VAE(VAEConfig(**state["model_config"])).to(device)
    keys = model.load_state_dict(state["model"], strict=False)
    # Weights saved before the fitted prior have none, and sample from N(0, I) as they did.
    if keys.unexpected_keys or any(not k.startswith("prior.") for k in keys.missing_keys):
        raise RuntimeError(f"{path}: not the weights of this model ({keys})")
    return model.eval()


def checkpoint_path(data_sha256: str, binarize: str, model: ModelConfig, train: TrainConfig) -> Path:
    """Where a run's checkpoint lives: keyed by the data and every setting that shapes the
    weights, so rerunning a killed run with train.resume=true finds it (epochs may grow)."""
    # A decaying learning rate depends on the total epochs, so then they shape the weights too.
    free = {"resume", "progress", "checkpoint_dir"} | ({"epochs"} if train.lr_schedule == "constant" else set())
    shaping = {
        "data": data_sha256,
        "binarize": binarize,
        "model": model.model_dump(mode="json"),
        "train": train.model_dump(mode="json", exclude=free),
    }
    key = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]
    return Path(train.checkpoint_dir) / f"{key}.pt"
