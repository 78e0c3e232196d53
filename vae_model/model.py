"""VAE modules and their config: pure torch, no I/O.

The encoder maps an image (and, for a conditional model, its one-hot label) to the mean and
log-variance of a diagonal Gaussian q(z|x); the decoder maps z (and the label) to the logits of
p(x|z): Bernoulli logits, or the pre-sigmoid mean of a Gaussian whose log-scale is a parameter.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vae_model.prior import MixturePrior

# exp(logvar) stays finite and its gradient useful; beyond these bounds training has diverged.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0

_ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh}


@dataclass
class VAEConfig:
    channels: int = 1
    height: int = 28
    width: int = 28
    latent_dim: int = 20
    hidden_dim: int = 400
    hidden_layers: int = 1
    activation: str = "relu"
    arch: str = "mlp"
    num_classes: int = 0
    likelihood: str = "bernoulli"
    learn_scale: bool = True
    # Components of the latent mixture fitted after training, per class (vae_model.prior); 0: N(0, I).
    prior_components: int = 50
    # The name of each class (an image folder's class folders); empty: the labels are their own names.
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.class_names = tuple(self.class_names)  # a list, once read back from JSON or YAML

    @property
    def input_dim(self) -> int:
        return self.channels * self.height * self.width

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def to_dict(self) -> dict:
        return {**asdict(self), "class_names": list(self.class_names)}


def _mlp(sizes: list[int], activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(_ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        hidden = [cfg.hidden_dim] * cfg.hidden_layers
        self.body = _mlp([cfg.input_dim + cfg.num_classes, *hidden], cfg.activation)
        self.act = _ACTIVATIONS[cfg.activation]()
        self.head = nn.Linear(cfg.hidden_dim, 2 * cfg.latent_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = x.flatten(1)
        if y is not None:
            h = torch.cat([h, y], dim=1)
        return self.head(self.act(self.body(h)))


class MLPDecoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        hidden = [cfg.hidden_dim] * cfg.hidden_layers
        self.net = _mlp([cfg.latent_dim + cfg.num_classes, *hidden, cfg.input_dim], cfg.activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class ConvEncoder(nn.Module):
    """Two stride-2 convolutions, then an MLP head; height and width must divide by 4."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        act = _ACTIVATIONS[cfg.activation]
        self.conv = nn.Sequential(
            nn.Conv2d(cfg.channels, 32, 4, 2, 1), act(), nn.Conv2d(32, 64, 4, 2, 1), act(), nn.Flatten()
        )
        features = 64 * (cfg.height // 4) * (cfg.width // 4)
        self.head = nn.Sequential(
            nn.Linear(features + cfg.num_classes, cfg.hidden_dim), act(), nn.Linear(cfg.hidden_dim, 2 * cfg.latent_dim)
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = self.conv(x)
        if y is not None:
            h = torch.cat([h, y], dim=1)
        return self.head(h)


class ConvDecoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        act = _ACTIVATIONS[cfg.activation]
        self.grid = (64, cfg.height // 4, cfg.width // 4)
        self.fc = nn.Sequential(
            nn.Linear(cfg.latent_dim + cfg.num_classes, cfg.hidden_dim), act(),
            nn.Linear(cfg.hidden_dim, math.prod(self.grid)), act(),
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 4, 2, 1), act(), nn.ConvTranspose2d(32, cfg.channels, 4, 2, 1), nn.Flatten()
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.fc(z).view(-1, *self.grid))


def build_decoder(cfg: VAEConfig) -> nn.Module:
    return (MLPDecoder if cfg.arch == "mlp" else ConvDecoder)(cfg)


def build_prior(cfg: VAEConfig) -> MixturePrior:
    """The model's prior, N(0, I) until fitted after training (vae_model.prior.fit_prior)."""
    return MixturePrior(max(1, cfg.num_classes), max(1, cfg.prior_components), cfg.latent_dim)


class VAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        if cfg.arch == "conv" and (cfg.height % 4 or cfg.width % 4):
            raise ValueError(f"model.arch=conv needs height and width divisible by 4, got {cfg.height}x{cfg.width}")
        self.cfg = cfg
        self.encoder = (MLPEncoder if cfg.arch == "mlp" else ConvEncoder)(cfg)
        self.decoder = build_decoder(cfg)
        # Gaussian likelihood: one log standard deviation shared by all pixels.
        self.log_scale = nn.Parameter(torch.tensor(math.log(0.1)), requires_grad=cfg.learn_scale)
        self.prior = build_prior(cfg)

    @torch.no_grad()
    def init_output_bias(self, pixel_mean: torch.Tensor) -> None:
        """Start the decoder at the data's mean image: the first steps then learn structure
        instead of the overall ink level. `pixel_mean` is in [0, 1], shaped (C, H, W)."""
        last = self.decoder.net[-1] if self.cfg.arch == "mlp" else self.decoder.deconv[-2]
        mean = pixel_mean.flatten() if self.cfg.arch == "mlp" else pixel_mean.flatten(1).mean(1)
        last.bias.copy_(torch.logit(mean.clamp(1e-3, 1 - 1e-3)))

    def one_hot(self, y: torch.Tensor | None) -> torch.Tensor | None:
        if not self.cfg.conditional:
            return None
        if y is None:
            raise ValueError("a conditional model needs labels")
        return F.one_hot(y, self.cfg.num_classes).to(self.log_scale.dtype)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x, self.one_hot(y)).chunk(2, dim=1)
        return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of p(x|z), flattened to (B, C*H*W)."""
        onehot = self.one_hot(y)
        return self.decoder(z if onehot is None else torch.cat([z, onehot], dim=1))

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`noise`, standard normal (B, latent_dim), replaces the draw from `generator`."""
        mu, logvar = self.encode(x, y)
        z = reparameterize(mu, logvar, generator, noise)
        return self.decode(z, y), mu, logvar


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None,
                   noise: torch.Tensor | None = None) -> torch.Tensor:
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype) if noise is None else noise
    return mu + eps * torch.exp(0.5 * logvar)


def sampler_input_dim(cfg: VAEConfig) -> int:
    """Columns of a sampler's input: noise (latent_dim), one uniform, one-hot label (num_classes)."""
    return cfg.latent_dim + 1 + cfg.num_classes


def sampler_input(noise: torch.Tensor, uniform: torch.Tensor, labels: np.ndarray | None, num_classes: int) -> torch.Tensor:
    """The one tensor `Sampler` takes: noise (times the temperature), the uniform, the one-hot label."""
    onehot = torch.empty(len(noise), 0) if labels is None else F.one_hot(torch.from_numpy(labels), num_classes).float()
    return torch.cat([noise, uniform, onehot], 1)


class Sampler(nn.Module):
    """The prior and the decoder as one module, what generation runs. In: standard-normal
    noise (latent_dim columns, times the temperature), one uniform number in [0, 1) that picks
    the prior's mixture component, and the one-hot label (num_classes columns; none for an
    unconditional model). Out: pixel means in [0, 1], shaped (B, C*H*W). One tensor in and out
    kept the torch.export signature of older registered versions simple."""

    def __init__(self, decoder: nn.Module, prior: MixturePrior, cfg: VAEConfig):
        super().__init__()
        self.decoder, self.prior = decoder, prior
        self.cfg = cfg  # what it takes and gives: the model's config
        self.latent_dim, self.num_classes = cfg.latent_dim, cfg.num_classes

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        noise, uniform, onehot = inputs.split([self.latent_dim, 1, self.num_classes], dim=1)
        group = onehot if self.num_classes else torch.ones_like(uniform)
        z = self.prior(noise, uniform, group)
        return torch.sigmoid(self.decoder(torch.cat([z, onehot], dim=1)))

    @classmethod
    def of(cls, model: VAE) -> Sampler:
        return cls(model.decoder, model.prior, model.cfg).eval()
