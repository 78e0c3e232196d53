"""The synthetic-data report on MNIST: real held-out, a verbatim copy, a noised copy and a VAE.

    .venv/bin/python benchmarks/evaluate_mnist.py [--epochs 5] [--raw ../shared/data/mnist/raw]

Prints every figure for each row and the time of each evaluation (10,000 samples against 10,000
training and 10,000 held-out images) beside one plain 10k x 10k pixel-space cdist measured in the
same run, for scale. The VAE is the 784-400-20 MLP, conditional so that the utility rows apply.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import numpy as np
import torch

from vae_model.config import DataConfig, EvaluateConfig, ModelConfig, TrainConfig
from vae_model.data import load_source
from vae_model.data.dataset import ImageData
from vae_model.images import to_uint8
from vae_model.metrics import evaluate_samples
from vae_model.metrics.report import FIGURES, dcr_reference
from vae_model.train import train, vae_config


def vae_samples(train_data: ImageData, held: ImageData, epochs: int, n: int) -> tuple[ImageData, float]:
    model_cfg = ModelConfig(latent_dim=20, hidden_dim=400, conditional=True)
    started = time.perf_counter()
    result = train(vae_config(model_cfg, train_data), TrainConfig(epochs=epochs, progress=False, device="cpu"), train_data, held)
    seconds = time.perf_counter() - started
    model = result.model.eval()
    labels = np.arange(n) % 10
    with torch.no_grad():
        z = torch.randn(n, 20, generator=torch.Generator().manual_seed(0))
        pixels = torch.sigmoid(model.decode(z, torch.from_numpy(labels)))
    return ImageData(to_uint8(pixels, train_data.shape), labels.astype(np.int64), f"vae-{epochs}-epochs"), seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--raw", default="../shared/data/mnist/raw")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--noise", type=float, default=32.0, help="noise sd in grey levels (0..255)")
    args = parser.parse_args()
    torch.manual_seed(0)
    train_data, held = load_source(DataConfig(kind="mnist", path=args.raw))
    cfg = EvaluateConfig()
    copy, _ = dcr_reference(train_data, held, cfg)
    noise = np.random.default_rng(0).normal(0, args.noise, copy.images.shape)
    noised = ImageData(np.clip(copy.images + noise, 0, 255).round().astype(np.uint8), copy.labels, "noised")
    vae, train_seconds = vae_samples(train_data, held, args.epochs, 10000)

    x = torch.from_numpy(copy.images).flatten(1).float()
    started = time.perf_counter()
    torch.cdist(x, x).min(1)
    cdist_seconds = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as cache:
        reports = {name: evaluate_samples(train_data, held, data, cfg, cache_dir=cache)
                   for name, data in (("verbatim copy", copy), ("noised copy", noised), ("VAE samples", vae))}
    columns = {"real held-out": next(iter(reports.values())).real, **{k: r.synthetic for k, r in reports.items()}}
    print(f"MNIST: train {len(train_data)}, held-out {len(held)}; 10,000 samples per row; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"VAE: 784-400-20 conditional MLP, {args.epochs} epochs in {train_seconds:.1f} s; noised copy: sd {args.noise:g} grey levels\n")
    print("| figure | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for key, meaning, better in FIGURES:
        cells = [f"{c[key]:.3f}" if key in c else "n/a" for c in columns.values()]
        print(f"| {meaning} ({better}) | " + " | ".join(cells) + " |")
    print("\n| row | evaluate seconds |\n|---|---|")
    for name, report in reports.items():
        print(f"| {name} | {report.seconds:.1f} |")
    print(f"| reference: one 10k x 10k cdist over 784 pixels + min | {cdist_seconds:.1f} |")
    print("(the first row trains the domain classifier and the equally sized train-on-real classifier; later rows reuse them)")


if __name__ == "__main__":
    main()
