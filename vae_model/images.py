"""Image grids of samples and reconstructions, as uint8 arrays."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.utils import make_grid

from vae_model.model import VAE


def grid(images: np.ndarray, nrow: int = 8) -> np.ndarray:
    """uint8 (n, C, H, W) -> one uint8 (C, H', W') grid with a 2-pixel border."""
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    if tensor.shape[1] == 1:
        tensor = tensor.expand(-1, 3, -1, -1)
    return make_grid(tensor, nrow=nrow, padding=2, pad_value=128).numpy()


def to_uint8(probabilities: torch.Tensor, shape: tuple[int, int, int]) -> np.ndarray:
    return probabilities.float().mul(255).round().clamp(0, 255).to(torch.uint8).reshape(-1, *shape).cpu().numpy()


@torch.no_grad()
def sample_grid(model: VAE, n: int = 64, seed: int = 0) -> np.ndarray:
    """Pixel means decoded from n prior samples (cycling through the classes if conditional)."""
    cfg = model.cfg
    device = next(model.parameters()).device
    z = torch.randn(n, cfg.latent_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    y = torch.arange(n, device=device) % cfg.num_classes if cfg.conditional else None
    probs = torch.sigmoid(model.decode(z, y))
    return grid(to_uint8(probs, (cfg.channels, cfg.height, cfg.width)))


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
