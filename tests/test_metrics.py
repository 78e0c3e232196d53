"""Each synthetic-data figure on real digits where the answer is known in advance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vae_model.config import DataConfig, EvaluateConfig
from vae_model.data import split_by_seed
from vae_model.data.dataset import ImageData
from vae_model.data.sources import _digits
from vae_model.metrics import evaluate_samples, fidelity


@pytest.fixture(scope="module")
def splits():
    """Digits in three real thirds: training, held-out, and a third one that stands for a perfect generator."""
    # Shuffled thirds, not load_source's hash split: the tolerances below were set on these rows.
    train, rest = split_by_seed(_digits(DataConfig()), 2 / 3, 0)
    held, other = split_by_seed(rest, 0.5, 1)
    return train, held, other


@pytest.fixture(scope="module")
def evaluate(splits, tmp_path_factory):
    cache = tmp_path_factory.mktemp("classifier-cache")
    cfg = EvaluateConfig(classifier_steps=400)
    train, held, _ = splits
    return lambda synthetic: evaluate_samples(train, held, synthetic, cfg, cache_dir=cache)


def _noised(data: ImageData, sigma: float) -> ImageData:
    noise = np.random.default_rng(0).normal(0, sigma, data.images.shape)
    return ImageData(np.clip(data.images + noise, 0, 255).round().astype(np.uint8), data.labels, f"noise{sigma}")


def test_frechet_distance_of_shifted_gaussians_is_the_squared_shift():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(20000, 4, generator=g), torch.randn(20000, 4, generator=g) + torch.tensor([3.0, 0, 0, 4.0])
    assert fidelity.frechet_distance(a, b) == pytest.approx(25.0, abs=0.3)
    assert fidelity.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_verbatim_copy_of_training_is_all_exact_copies_and_closer_to_training(splits, evaluate):
    train, _, _ = splits
    report = evaluate(train)
    s = report.synthetic
    # The split is even, so the DCR training reference is the whole training split.
    assert report.counts["dcr_reference"] == len(train)
    assert s["exact_copy_rate"] == 1.0
    assert s["dcr_train_share"] == 1.0
    assert s["dcr_train_median"] < 1e-3 and s["nndr_median"] < 1e-3
    assert s["fcd"] == pytest.approx(0.0, abs=1e-6)
    assert s["precision"] == s["recall"] == s["coverage"] == 1.0
    assert report.real["exact_copy_rate"] == 0.0
    # The picture pairs each closest sample with its training twin: both rows are identical.
    c, h, w = report.picture.shape
    top, bottom = report.picture[:, 2 : 2 + 8], report.picture[:, 12 : 12 + 8]
    assert c == 3 and np.array_equal(top, bottom)


def test_unseen_real_data_lands_at_the_calibration_floor(splits, evaluate):
    _, _, other = splits
    report = evaluate(other)
    s, r = report.synthetic, report.real
    assert s["fcd"] < 1.5 * r["fcd"] and r["fcd"] < 1.5 * s["fcd"]
    for key in ("precision", "recall", "density", "coverage", "label_agreement", "tstr_accuracy"):
        assert abs(s[key] - r[key]) < 0.1, key
    assert s["exact_copy_rate"] == 0.0
    assert 0.4 < s["dcr_train_share"] < 0.6 and 0.4 < r["dcr_train_share"] < 0.6
    assert s["label_agreement"] > 0.8 and s["tstr_accuracy"] > 0.8


def test_noise_makes_the_frechet_distance_worse(splits, evaluate):
    _, _, other = splits
    fcd = [evaluate(data).synthetic["fcd"] for data in (other, _noised(other, 30), _noised(other, 80))]
    assert fcd[0] < fcd[1] < fcd[2], fcd
    assert fcd[2] > 5 * fcd[0]


def test_generator_ignoring_the_requested_label_scores_near_chance(splits, evaluate):
    _, _, other = splits
    ignored = ImageData(other.images, np.random.default_rng(0).permutation(other.labels), "ignores labels")
    s = evaluate(ignored).synthetic
    assert 0.03 < s["label_agreement"] < 0.2
    assert s["tstr_accuracy"] < 0.3
    # The images themselves are still real digits: fidelity does not look at the labels.
    assert s["precision"] > 0.8


def test_sample_gate_divides_fcd_by_its_real_floor_and_names_each_check():
    from vae_model.config import ValidateConfig
    from vae_model.gate import sample_gate

    synthetic = {"fcd": 3.0, "precision": 0.9, "recall": 0.6, "coverage": 0.8}
    real = {"fcd": 2.0}
    passed = sample_gate(synthetic, ValidateConfig(max_fcd_ratio=2.0, min_precision=0.85), real)
    assert passed["passed"] and passed["checks"] == 2
    assert "FCD over its real floor 1.5000 <= 2" in passed["message"]
    failed = sample_gate(synthetic, ValidateConfig(max_fcd_ratio=1.4, min_recall=0.5, min_coverage=0.9), real)
    assert not failed["passed"]
    assert "FCD over its real floor 1.5000 is not <= 1.4 (validate.max_fcd_ratio)" in failed["message"]
    assert "coverage 0.8000 is not >= 0.9 (validate.min_coverage)" in failed["message"]
    assert "recall" not in failed["message"]  # that check passed
    # Without the real column the ratio is not measured, and an unmeasured figure cannot pass.
    assert "not measured" in sample_gate(synthetic, ValidateConfig(max_fcd_ratio=10.0))["message"]
    assert "no thresholds set" in sample_gate(synthetic, ValidateConfig(), real)["message"]
