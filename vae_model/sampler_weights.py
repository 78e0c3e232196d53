"""The sampler as plain weights: the prior's and decoder's tensors and the config in one `torch.save` file.

Generation and the served model build the prior and decoder from `vae_model` and load these
tensors (never unpickled code): the same modules that training used, and no model loader's imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vae_model.atomic import atomic_path
from vae_model.model import VAE, Sampler, VAEConfig, build_decoder, build_prior

SAMPLER_FILE = "sampler.pt"


def save_sampler(model: VAE, path: str | Path) -> Path:
    state = {"model_config": model.cfg.to_dict(), "decoder": model.decoder.state_dict(), "prior": model.prior.state_dict()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


@dataclass(frozen=True)
class SamplerWeights:
    """What `sampler.pt` holds: the model's config (what the sampler takes and gives), the
    decoder's tensors and the fitted prior's (none in files written before the prior: N(0, I))."""

    config: VAEConfig
    decoder: dict[str, torch.Tensor]
    prior: dict[str, torch.Tensor] | None = None

    def sampler(self) -> Sampler:
        decoder = build_decoder(self.config)
        decoder.load_state_dict(self.decoder)
        prior = build_prior(self.config)
        if self.prior is not None:
            prior.load_state_dict(self.prior)
        return Sampler(decoder, prior, self.config).eval()


def load_weights(path: str | Path) -> SamplerWeights:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return SamplerWeights(VAEConfig(**state["model_config"]), state["decoder"], state.get("prior"))
