"""The latent prior a trained model samples from: a Gaussian mixture fitted to the training set's
posterior means, one mixture per class for a conditional model.

A VAE's aggregate posterior is not N(0, I): with a KL weight below one (sharper decoders) it
drifts further, and codes drawn from N(0, I) land where no training image was encoded, which
decodes to off-manifold images. Fitting a mixture to the posterior means after training
(Ghosh et al. 2020, "From Variational to Deterministic Autoencoders") samples where the data is.

The mixture is part of the model: its tensors are buffers of fixed shape (groups x components),
unused components have weight zero, so checkpoints, the weights file and the exported program
all carry it. Sampling takes standard-normal noise and one uniform number per sample, so every
random draw stays with the caller's `torch.Generator`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

# A full covariance needs data: each component gets at least this many codes per latent dimension.
ROWS_PER_COMPONENT_PER_DIM = 2


class MixturePrior(nn.Module):
    """p(z | y) as a mixture of `components` Gaussians for each of `groups` classes (1: unconditional)."""

    def __init__(self, groups: int, components: int, latent_dim: int):
        super().__init__()
        self.register_buffer("cum_weights", torch.ones(groups, components))
        self.register_buffer("means", torch.zeros(groups, components, latent_dim))
        self.register_buffer("scale_tril", torch.eye(latent_dim).expand(groups, components, -1, -1).clone())

    @property
    def fitted(self) -> bool:
        """False until `fit_prior` ran: then every weight sits on the first component, N(0, I)."""
        return bool((self.cum_weights[:, 0] < 1).any() or self.means.abs().sum() > 0)

    def forward(self, noise: torch.Tensor, uniform: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """z for standard-normal `noise` (B, D), `uniform` (B, 1) in [0, 1) picking the component,
        and one-hot `group` (B, G). Temperature is the caller's scaling of `noise`."""
        cum = group @ self.cum_weights  # (B, K): the sample's class's cumulative weights
        # The component is the number of cumulative weights below u: a pure tensor expression
        # that torch.export traces, with no data-dependent control flow.
        component = (cum <= uniform).sum(1).clamp(max=self.means.shape[1] - 1)
        chosen = torch.nn.functional.one_hot(component, self.means.shape[1]).to(noise.dtype)
        pick = group.unsqueeze(2) * chosen.unsqueeze(1)  # (B, G, K)
        mean = torch.einsum("bgk,gkd->bd", pick, self.means)
        tril = torch.einsum("bgk,gkde->bde", pick, self.scale_tril)
        return mean + (tril @ noise.unsqueeze(2)).squeeze(2)


def fit_prior(prior: MixturePrior, codes: np.ndarray, labels: np.ndarray | None, seed: int) -> None:
    """Fit each class's mixture to its posterior means (scikit-learn's EM, seeded), in place.
    A class gets min(components, rows / (2 * latent_dim)) components, at least one."""
    from sklearn.mixture import GaussianMixture

    groups, capacity, dim = prior.means.shape
    cum = torch.ones(groups, capacity)
    means = torch.zeros(groups, capacity, dim)
    tril = torch.eye(dim).expand(groups, capacity, -1, -1).clone()
    codes = codes.astype(np.float64)
    for g in range(groups):
        rows = codes if groups == 1 else codes[labels == g]
        if len(rows) < 2:
            continue  # a class absent from training keeps N(0, I)
        k = max(1, min(capacity, len(rows) // (ROWS_PER_COMPONENT_PER_DIM * dim)))
        gm = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=seed).fit(rows)
        cum[g, :k] = torch.from_numpy(np.cumsum(gm.weights_ / gm.weights_.sum()))
        cum[g, k - 1 :] = 1.0
        means[g, :k] = torch.from_numpy(gm.means_)
        tril[g, :k] = torch.from_numpy(np.linalg.cholesky(gm.covariances_))
    with torch.no_grad():
        prior.cum_weights.copy_(cum)
        prior.means.copy_(means)
        prior.scale_tril.copy_(tril)
