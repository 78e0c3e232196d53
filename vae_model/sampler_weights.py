"""The sampler as plain weights: the decoder's tensors and config in one `torch.save` file.

Generation builds the decoder from `vae_model` and loads these tensors (never unpickled code).
That skips torch.export's loader, which costs a generating process seconds of imports and
about 170 MB, and runs the same modules that training used.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vae_model.atomic import atomic_path
from vae_model.model import VAE, Sampler, VAEConfig, build_decoder

SAMPLER_FILE = "sampler.pt"


def save_sampler(model: VAE, path: str | Path) -> Path:
    state = {"model_config": model.cfg.to_dict(), "decoder": model.decoder.state_dict()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_config(path: str | Path) -> VAEConfig:
    """The model's configuration, which says what the sampler takes and gives."""
    return VAEConfig(**torch.load(path, map_location="cpu", weights_only=True)["model_config"])


def load_sampler(path: str | Path) -> Sampler:
    state = torch.load(path, map_location="cpu", weights_only=True)
    decoder = build_decoder(VAEConfig(**state["model_config"]))
    decoder.load_state_dict(state["decoder"])
    return Sampler(decoder).eval()
