"""Fidelity on classifier features: Fréchet distance, precision/recall and density/coverage.

Precision and recall follow Kynkäänniemi et al. (2019): each point of a set gets a ball whose
radius is the distance to its k-th nearest neighbour in its own set; precision is the share of
synthetic points inside some real ball, recall the share of real points inside some synthetic
ball. Density and coverage follow Naeem et al. (2020): density counts, per synthetic point, the
real balls it falls in (divided by k; about 1 when the two sets match), coverage is the share of
real points whose ball holds at least one synthetic point.
"""

from __future__ import annotations

import torch

BATCH = 2048


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of Gaussians fitted to two sets."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T), torch.cov(b.T)
    # tr((S_a S_b)^(1/2)) = sum of sqrt eigenvalues of S_a^(1/2) S_b S_a^(1/2), which is symmetric,
    # so eigh keeps it real where a general matrix square root would not.
    w, v = torch.linalg.eigh(s_a)
    root_a = (v * w.clamp(min=0).sqrt()) @ v.T
    cross = torch.linalg.eigvalsh(root_a @ s_b @ root_a).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + s_a.trace() + s_b.trace() - 2 * cross)


def knn_distances(x: torch.Tensor, k: int) -> torch.Tensor:
    """(n, k) distances from each point to its 1st..k-th nearest other point of the same set."""
    k = min(k, len(x) - 1)
    out = []
    for start in range(0, len(x), BATCH):
        d = torch.cdist(x[start : start + BATCH], x)
        # The point itself is at distance 0 and comes first: neighbours start at column 1.
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, 1:])
    return torch.cat(out)


def _radius(knn: torch.Tensor, k: int) -> torch.Tensor:
    return knn[:, min(k, knn.shape[1]) - 1]


def manifold_metrics(real: torch.Tensor, fake: torch.Tensor, k_pr: int = 3, k_dc: int = 5,
                     real_knn: torch.Tensor | None = None) -> dict[str, float]:
    """Precision, recall, density and coverage of `fake` against `real`, in one pass over distances;
    `real_knn` (from knn_distances with max(k_pr, k_dc)) saves a pass when one real set serves twice."""
    if real_knn is None:
        real_knn = knn_distances(real, max(k_pr, k_dc))
    real_pr, real_dc, fake_pr = _radius(real_knn, k_pr), _radius(real_knn, k_dc), _radius(knn_distances(fake, k_pr), k_pr)
    in_real_ball = torch.zeros(len(fake), dtype=torch.bool)
    balls_hit = torch.zeros(len(fake))
    covered_by_fake = torch.zeros(len(real), dtype=torch.bool)
    nearest_fake = torch.full((len(real),), float("inf"))
    for start in range(0, len(fake), BATCH):
        d = torch.cdist(fake[start : start + BATCH], real)
        stop = start + len(d)
        in_real_ball[start:stop] = (d <= real_pr).any(1)
        balls_hit[start:stop] = (d <= real_dc).sum(1).float()
        covered_by_fake |= (d <= fake_pr[start:stop, None]).any(0)
        nearest_fake = torch.minimum(nearest_fake, d.min(0).values)
    return {
        "precision": float(in_real_ball.float().mean()),
        "recall": float(covered_by_fake.float().mean()),
        "density": float(balls_hit.sum() / (k_dc * len(fake))),
        "coverage": float((nearest_fake <= real_dc).float().mean()),
    }
