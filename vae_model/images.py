"""Image grids of samples and reconstructions, as uint8 arrays."""

from __future__ import annotations

import numpy as np
import torch

from vae_model.model import VAE, Sampler, sampler_input
from vae_model.sample_files import grid, preview


def to_uint8(probabilities: torch.Tensor, shape: tuple[int, int, int]) -> np.ndarray:
    return probabilities.float().mul(255).round().clamp(0, 255).to(torch.uint8).reshape(-1, *shape).cpu().numpy()


@torch.no_grad()
def sample_grid(model: VAE, n: int = 80, seed: int = 0) -> np.ndarray:
    """The preview of n samples drawn from the model's prior (cycling through the classes if
    conditional), as `generate` draws them."""
    cfg = model.cfg
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    noise, uniform = torch.randn(n, cfg.latent_dim, generator=generator), torch.rand(n, 1, generator=generator)
    labels = np.arange(n) % cfg.num_classes if cfg.conditional else None
    pixels = Sampler.of(model)(sampler_input(noise, uniform, labels, cfg.num_classes).to(device))
    return preview(to_uint8(pixels, (cfg.channels, cfg.height, cfg.width)), labels, cfg.class_names)[0]


@torch.no_grad()
def reconstruction_grid(model: VAE, x: torch.Tensor, y: torch.Tensor | None = None) -> np.ndarray:
    """Rows of originals above their reconstructions (posterior means decoded)."""
    cfg = model.cfg
    mu, _ = model.encode(x, y)
    recon = torch.sigmoid(model.decode(mu, y))
    shape = (cfg.channels, cfg.height, cfg.width)
    originals, recons = to_uint8(x.flatten(1), shape), to_uint8(recon, shape)
    rows = [block for i in range(0, len(x), 8) for block in (originals[i : i + 8], recons[i : i + 8])]
    return grid(np.concatenate(rows))
