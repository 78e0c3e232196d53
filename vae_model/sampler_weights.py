"""The sampler as plain weights: the decoder's tensors and config in one `torch.save` file.

Generation builds the decoder from `vae_model` and loads these tensors (never unpickled code).
That skips torch.export's loader, which costs a generating process seconds of imports and
about 170 MB, and runs the same modules that training used.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class SamplerWeights:
    """What `sampler.pt` holds: the model's config (what the sampler takes and gives) and the
    decoder's tensors."""

    config: VAEConfig
    decoder: dict[str, torch.Tensor]

    def sampler(self) -> Sampler:
        decoder = build_decoder(self.config)
        decoder.load_state_dict(self.decoder)
        return Sampler(decoder).eval()


def load_weights(path: str | Path) -> SamplerWeights:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return SamplerWeights(VAEConfig(**state["model_config"]), state["decoder"])
