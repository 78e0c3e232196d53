"""Memorisation: exact copies by hashing the uint8 bytes, and distances to the closest record.

Float distances cannot tell an exact copy from a very near one, so exact copies are found by
comparing the raw bytes of each image with every training image. DCR (distance to the closest
record, L2 in pixel space scaled to [0, 1]) compares each synthetic image's nearest training image
with its nearest held-out image, both sets of equal size: a generator that learnt the distribution
and not the examples is as close to one as to the other, so about half its samples are closer to
training. NNDR is the distance to the nearest training image over that to the second nearest:
near 0 when a sample sits on one particular training image.
"""

from __future__ import annotations

import numpy as np
import torch

BATCH = 2048


def _rows(images: np.ndarray) -> list[bytes]:
    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    return [row.tobytes() for row in flat]


def exact_copy_rate(synthetic: np.ndarray, train: np.ndarray) -> float:
    """Share of synthetic images byte-identical to some training image."""
    seen = set(_rows(train))
    return float(np.mean([row in seen for row in _rows(synthetic)])) if len(synthetic) else 0.0


def duplicate_rate(synthetic: np.ndarray) -> float:
    """Share of synthetic images byte-identical to an earlier synthetic image (mode collapse)."""
    rows = _rows(synthetic)
    return 1.0 - len(set(rows)) / len(rows) if rows else 0.0


def nearest_two(query: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances to the two nearest reference points, and the index of the nearest."""
    dists, index = [], []
    for start in range(0, len(query), BATCH):
        values, idx = torch.cdist(query[start : start + BATCH], ref).topk(min(2, len(ref)), dim=1, largest=False)
        dists.append(values)
        index.append(idx[:, 0])
    return torch.cat(dists), torch.cat(index)


def closer_share(d_train: torch.Tensor, d_held: torch.Tensor) -> float:
    """Share of points nearer training than held-out; a tie counts one half."""
    return float(((d_train < d_held).float() + 0.5 * (d_train == d_held).float()).mean())


def dcr_metrics(synthetic: torch.Tensor, train: torch.Tensor, held: torch.Tensor) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """DCR share, medians and NNDR of synthetic pixels against equally sized train and held-out
    sets; also each sample's distance to, and index of, its nearest training image."""
    to_train, nearest = nearest_two(synthetic, train)
    to_held, _ = nearest_two(synthetic, held)
    d1 = to_train[:, 0]
    nndr = d1 / to_train[:, -1].clamp(min=1e-12)
    figures = {
        "dcr_train_share": closer_share(d1, to_held[:, 0]),
        "dcr_train_median": float(d1.median()),
        "dcr_heldout_median": float(to_held[:, 0].median()),
        "dcr_train_p05": float(d1.quantile(0.05)),
        "nndr_median": float(nndr.median()),
    }
    return figures, d1, nearest
