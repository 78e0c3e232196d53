"""Utility: is the synthetic data a usable stand-in for the real data when training a classifier?"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vae_model.metrics.features import ClassifierSpec, cached_classifier, embed, train_classifier


def label_agreement(predicted: torch.Tensor, requested: np.ndarray) -> float:
    """Share of images whose predicted class is the class they were asked to show."""
    return float((predicted == torch.from_numpy(requested)).float().mean())


def class_tv(predicted: torch.Tensor, reference: np.ndarray, num_classes: int) -> float:
    """Total variation between the predicted-class histogram and the real label histogram."""
    p = torch.bincount(predicted, minlength=num_classes).double()
    q = torch.bincount(torch.from_numpy(reference), minlength=num_classes).double()
    return float(0.5 * (p / p.sum() - q / q.sum()).abs().sum())


def _accuracy(model, images: np.ndarray, labels: np.ndarray) -> float:
    return label_agreement(embed(model, images)[1], labels)


def train_on_synthetic(spec: ClassifierSpec, synthetic: tuple[np.ndarray, np.ndarray], train: tuple[np.ndarray, np.ndarray],
                       test: tuple[np.ndarray, np.ndarray], key: str, cache_dir: str | Path | None) -> dict[str, float]:
    """Test-set accuracy of one classifier trained on the synthetic images and of one trained on
    as many real training images (seeded subset), with the same architecture and step budget."""
    tstr = _accuracy(train_classifier(spec, *synthetic), *test)
    n = min(len(synthetic[0]), len(train[0]))
    index = np.sort(np.random.default_rng(spec.seed).permutation(len(train[0]))[:n])
    real = cached_classifier(spec, train[0][index], train[1][index], f"{key}-subset{n}", cache_dir)
    return {"tstr_accuracy": tstr, "trtr_accuracy": _accuracy(real, *test)}
