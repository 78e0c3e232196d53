"""The evaluation report: every figure for the synthetic set beside the same figure for real data.

The real column is the floor a perfect generator reaches: the held-out split against the training
split for fidelity and memorisation, a classifier trained on real images for utility. Every set is
capped at `evaluate.max_samples` by a seeded draw, which bounds the cost of the distance passes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vae_model.config import EvaluateConfig
from vae_model.data.dataset import ImageData
from vae_model.errors import UserError
from vae_model.sample_files import grid
from vae_model.metrics import features, fidelity, privacy, utility

# (key, what it is, which way is better) in the order the report shows them.
FIGURES = [
    ("fcd", "Fréchet classifier distance", "lower"),
    ("precision", "precision (k-NN manifold)", "higher"),
    ("recall", "recall (k-NN manifold)", "higher"),
    ("density", "density", "about 1"),
    ("coverage", "coverage", "higher"),
    ("label_agreement", "label agreement (predicted = requested; real: classifier accuracy)", "higher"),
    ("tstr_accuracy", "accuracy on real held-out, trained on this data", "higher"),
    ("class_tv", "class-mix total variation vs training labels", "lower"),
    ("exact_copy_rate", "exact copies of training images", "lower"),
    ("duplicate_rate", "duplicates within the set", "lower"),
    ("dcr_train_share", "share closer to training than held-out (DCR)", "about 0.5"),
    ("dcr_train_median", "median distance to closest training image", "not lower"),
    ("dcr_train_p05", "5th percentile distance to closest training image", "not lower"),
    ("nndr_median", "median nearest/second-nearest training distance ratio", "not lower"),
]


@dataclass
class EvaluationReport:
    synthetic: dict[str, float]
    real: dict[str, float]
    counts: dict[str, int]
    seconds: float
    picture: np.ndarray = field(repr=False)  # uint8 (C, H, W): closest synthetic row above training row

    def to_dict(self) -> dict[str, Any]:
        return {"synthetic": self.synthetic, "real": self.real, "counts": self.counts, "seconds": self.seconds,
                "figures": {k: {"meaning": m, "better": b} for k, m, b in FIGURES}}

    def metrics(self) -> dict[str, float]:
        """Flat figures for a tracker: eval_<figure> and eval_real_<figure>."""
        out = {f"eval_{k}": v for k, v in self.synthetic.items()}
        out.update({f"eval_real_{k}": v for k, v in self.real.items()})
        out.update({f"eval_n_{k}": float(v) for k, v in self.counts.items()})
        out["eval_seconds"] = self.seconds
        return out

    def headline(self) -> str:
        """One line of the figures a user judges samples by, each beside its real floor."""
        shown = [("fcd", "FCD"), ("precision", "precision"), ("recall", "recall"), ("coverage", "coverage"),
                 ("label_agreement", "label agreement"), ("tstr_accuracy", "TSTR")]
        cells = [f"{name} {self.synthetic[k]:.3f} ({self.real[k]:.3f})" for k, name in shown
                 if k in self.synthetic and k in self.real]
        return f"samples (real floor in brackets, {self.counts['synthetic']} samples): " + ", ".join(cells)

    def markdown(self, title: str = "Synthetic data: quality and privacy") -> str:
        def cell(table: dict[str, float], key: str) -> str:
            return f"{table[key]:.4f}" if key in table else "n/a"

        rows = "\n".join(
            f"| {meaning} | {cell(self.synthetic, k)} | {cell(self.real, k)} | {better} |"
            for k, meaning, better in FIGURES if k in self.synthetic or k in self.real
        )
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        return (f"# {title}\n\n| figure | synthetic | real (floor) | better |\n|---|---|---|---|\n{rows}\n\n"
                f"Samples: {counts}. Computed in {self.seconds:.1f} s.\n")


def _cap(data: ImageData, n: int, seed: int) -> ImageData:
    if len(data) <= n:
        return data
    return data.subset(np.sort(np.random.default_rng(seed).permutation(len(data))[:n]))


def _pixels(data: ImageData) -> torch.Tensor:
    return features.as_inputs(data.images)


def evaluate_samples(train: ImageData, held: ImageData, synthetic: ImageData, cfg: EvaluateConfig,
                     data_key: str | None = None, cache_dir: str | Path | None = None) -> EvaluationReport:
    """All figures of `synthetic` against the real splits, and the same figures for real data."""
    started = time.perf_counter()
    if synthetic.shape != train.shape:
        raise UserError(f"{synthetic.source}: samples are {synthetic.shape} (C, H, W) but the training data is {train.shape}")
    key = data_key or features.data_key(train.images, train.labels)
    num_classes = train.num_classes
    if synthetic.labels is not None and num_classes and synthetic.labels.max() >= num_classes:
        raise UserError(f"{synthetic.source}: label {synthetic.labels.max()} is outside the data's classes 0..{num_classes - 1}")
    n = cfg.max_samples
    syn, train_ref, held_ref = _cap(synthetic, n, cfg.seed), _cap(train, n, cfg.seed + 1), _cap(held, n, cfg.seed + 2)

    spec = features.ClassifierSpec(int(np.prod(train.shape)), num_classes, cfg.classifier_steps, cfg.seed)
    classifier = features.cached_classifier(spec, train.images, train.labels, key, cache_dir)
    f_train, _ = features.embed(classifier, train_ref.images)
    f_held, p_held = features.embed(classifier, held_ref.images)
    f_syn, p_syn = features.embed(classifier, syn.images)
    s: dict[str, float] = {"fcd": fidelity.frechet_distance(f_syn, f_train)}
    r: dict[str, float] = {"fcd": fidelity.frechet_distance(f_held, f_train)}
    knn = fidelity.knn_distances(f_train, max(cfg.k_precision, cfg.k_density))
    s.update(fidelity.manifold_metrics(f_train, f_syn, cfg.k_precision, cfg.k_density, knn))
    r.update(fidelity.manifold_metrics(f_train, f_held, cfg.k_precision, cfg.k_density, knn))

    if train.labels is not None and held.labels is not None:
        r["label_agreement"] = utility.label_agreement(p_held, held_ref.labels)
        s["class_tv"] = utility.class_tv(p_syn, train.labels, num_classes)
        r["class_tv"] = utility.class_tv(p_held, train.labels, num_classes)
        if syn.labels is not None:
            s["label_agreement"] = utility.label_agreement(p_syn, syn.labels)
            acc = utility.train_on_synthetic(spec, (syn.images, syn.labels), (train.images, train.labels),
                                             (held_ref.images, held_ref.labels), key, cache_dir)
            s["tstr_accuracy"], r["tstr_accuracy"] = acc["tstr_accuracy"], acc["trtr_accuracy"]

    s["exact_copy_rate"] = privacy.exact_copy_rate(syn.images, train.images)
    r["exact_copy_rate"] = privacy.exact_copy_rate(held_ref.images, train.images)
    s["duplicate_rate"], r["duplicate_rate"] = privacy.duplicate_rate(syn.images), privacy.duplicate_rate(held_ref.images)
    # DCR needs training and held-out references of one size; both are seeded draws.
    train_dcr, held_dcr = dcr_reference(train, held, cfg)
    t_px, h_px = _pixels(train_dcr), _pixels(held_dcr)
    figures, dcr, nearest = privacy.dcr_metrics(_pixels(syn), t_px, h_px)
    s.update(figures)
    r.update(_real_dcr(t_px, h_px, cfg.seed))
    picture = _closest_pairs(syn.images, train_dcr.images, dcr, nearest)
    counts = {"synthetic": len(syn), "train": len(train_ref), "heldout": len(held_ref), "dcr_reference": len(t_px)}
    return EvaluationReport(s, r, counts, time.perf_counter() - started, picture)


def dcr_reference(train: ImageData, held: ImageData, cfg: EvaluateConfig) -> tuple[ImageData, ImageData]:
    """The equally sized seeded draws from training and held-out that DCR compares against. A
    copy of a training image outside this draw is caught by the exact-copy rate, not by DCR."""
    m = min(len(train), len(held), cfg.max_samples)
    return _cap(train, m, cfg.seed + 3), _cap(held, m, cfg.seed + 4)


def _real_dcr(t_px: torch.Tensor, h_px: torch.Tensor, seed: int) -> dict[str, float]:
    """The same DCR figures for real held-out images: distances of every held-out image to the
    training reference, and the closer-to-training share of one held-out half against the other
    half and as many training images (0.5 by exchangeability, up to sampling noise)."""
    to_train, _ = privacy.nearest_two(h_px, t_px)
    out = {
        "dcr_train_median": float(to_train[:, 0].median()),
        "dcr_train_p05": float(to_train[:, 0].quantile(0.05)),
        "nndr_median": float((to_train[:, 0] / to_train[:, -1].clamp(min=1e-12)).median()),
    }
    if len(h_px) >= 4:
        order = torch.randperm(len(h_px), generator=torch.Generator().manual_seed(seed))
        half = len(h_px) // 2
        queries, held_half = h_px[order[:half]], h_px[order[half:]]
        train_half = t_px[torch.randperm(len(t_px), generator=torch.Generator().manual_seed(seed + 1))[: len(held_half)]]
        figures, _, _ = privacy.dcr_metrics(queries, train_half, held_half)
        out["dcr_train_share"] = figures["dcr_train_share"]
    return out


def _closest_pairs(synthetic: np.ndarray, train: np.ndarray, dcr: torch.Tensor, nearest: torch.Tensor, n: int = 8) -> np.ndarray:
    """Grid: the n synthetic images nearest any training image (top row), their training match below."""
    order = dcr.argsort()[: min(n, len(dcr))].numpy()
    return grid(np.concatenate([synthetic[order], train[nearest[order].numpy()]]), nrow=len(order))
