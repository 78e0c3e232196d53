"""The one weights file: a model's config and tensors, plus, in a training checkpoint, what
resuming needs (optimiser, RNG, epoch, history). Written with `torch.save`, read with
`weights_only=True` (tensors, numbers, strings and containers, never code).

The training checkpoint, the registered model's artifact, the champion's logged weights and the
evaluation classifier's cache are all this layout: {"model_config": dict, "model": state_dict, ...}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vae_model.atomic import atomic_path
from vae_model.model import VAE, Sampler, VAEConfig, build_decoder, build_prior

WEIGHTS_FILE = "weights.pt"


def save_weights(path: str | Path, config: dict[str, Any], tensors: dict[str, torch.Tensor], **state: Any) -> Path:
    with atomic_path(path) as tmp:
        torch.save({"model_config": config, "model": tensors, **state}, tmp)
    return Path(path)


def save_model(path: str | Path, model: VAE, **state: Any) -> Path:
    return save_weights(path, model.cfg.to_dict(), model.state_dict(), **state)


def read_weights(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=device, weights_only=True)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> VAE:
    return _model(read_weights(path, device), path, device)


def _model(state: dict[str, Any], path: str | Path, device: torch.device | str = "cpu") -> VAE:
    model = VAE(VAEConfig(**state["model_config"])).to(device)
    keys = model.load_state_dict(state["model"], strict=False)
    # Weights saved before the fitted prior have none, and sample from N(0, I) as they did.
    if keys.unexpected_keys or any(not k.startswith("prior.") for k in keys.missing_keys):
        raise RuntimeError(f"{path}: not the weights of this model ({keys})")
    return model.eval()


def load_sampler(path: str | Path) -> Sampler:
    """The prior and decoder of a weights file, or of a `sampler.pt` from versions registered
    before this layout (decoder and prior tensors only). Its `cfg` is the model's config."""
    state = read_weights(path)
    if "model" in state:
        return Sampler.of(_model(state, path))
    cfg = VAEConfig(**state["model_config"])
    decoder, prior = build_decoder(cfg), build_prior(cfg)
    decoder.load_state_dict(state["decoder"])
    if state.get("prior") is not None:
        prior.load_state_dict(state["prior"])
    return Sampler(decoder, prior, cfg).eval()
