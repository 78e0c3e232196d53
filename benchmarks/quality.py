"""Sample quality of the presets, before and after: the evaluate step's figures beside the real floor.

    .venv/bin/python benchmarks/quality.py [--only digits|mnist] [--raw ../shared/data/mnist/raw]
    .venv/bin/python benchmarks/quality.py --data PATH [--kind imagefolder|parquet]
    .venv/bin/python benchmarks/quality.py --seed 1     # another training seed: is a figure robust?
    python3 benchmarks/quality.py --only mnist --device cuda   # the presets trained on a GPU

For each dataset, trains the seed's recipe ("before": an MLP VAE sampled from N(0, I), as the
project shipped it) and the preset, draws samples exactly as the pipeline's evaluate
step does (`vae_model.generate.sample_model`, seed 0, labels cycled for conditional models) and
prints the evaluate table (1,000 samples for digits, 10,000 for MNIST) with the real column (held-out against training, the floor a perfect
generator reaches) and the training minutes. The preset's model is also sampled from N(0, I)
instead of its fitted prior: the difference is what the prior bought; the rest, what capacity,
training and the KL weight bought. MNIST rows are skipped when its gz files are absent.

--data runs the MNIST recipes alone on another 28x28 grey-level dataset of 10 classes (an image
folder or a Parquet file, e.g. from benchmarks/glyphs.py), with only data.kind and data.path
changed: the loader holds out data.val_fraction of it by content hash, the real column's images.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import numpy as np
import torch

from flows.config import PipelineConfig, load_config
from vae_model.config import DataConfig, EvaluateConfig
from vae_model.data import load_source
from vae_model.generate import evaluation_request, sample_model
from vae_model.metrics import evaluate_samples, features, privacy, read_samples
from vae_model.metrics.report import FIGURES, dcr_reference
from vae_model.model import build_prior
from vae_model.train import train, vae_config

ROOT = Path(__file__).resolve().parents[1]
# The seed's recipes: configs as the project shipped them before the fitted prior.
BEFORE = {
    "digits": (None, ["model.latent_dim=8", "model.hidden_dim=256", "model.hidden_layers=1", "train.epochs=40",
                      "train.beta=1.0", "model.prior_components=0",
                      "train.lr=0.001", "train.lr_schedule=constant"]),
    "mnist": ("configs/mnist.yaml", ["model.prior_components=0", "model.conditional=true"]),
}
AFTER = {"digits": (None, []), "mnist": ("configs/mnist-quality.yaml", [])}


def run(name: str, path: str | None, overrides: list[str], raw: str | None, scratch: Path,
        kind: str | None = None, device: str = "cpu") -> tuple[list[dict], dict, float]:
    """Train one recipe; evaluate its samples, and for a fitted prior also the same model's
    samples from N(0, I) (what the prior bought). Returns the figures (N(0, I) first), the real
    column and the training minutes. `raw` (and `kind`) replace the recipe's data source."""
    cfg: PipelineConfig = load_config(ROOT / (path or "configs/default.yaml"), overrides + ["train.progress=false", f"train.device={device}"])
    if kind is not None:
        cfg.data.kind = kind
    if raw is not None:
        cfg.data.path = raw
    train_data, held = load_source(cfg.data)
    if kind is not None:
        print(f"{name}: {cfg.data.kind} {cfg.data.path}: {len(train_data)} training and {len(held)} held-out images "
              f"{'x'.join(map(str, train_data.shape))}, {train_data.num_classes} classes", flush=True)
    started = time.perf_counter()
    model = train(vae_config(cfg.model, train_data), cfg.train, train_data, held, cfg.data.binarize).model.cpu().eval()
    minutes = (time.perf_counter() - started) / 60
    # What the pipeline's evaluate step draws: 1,000 samples for digits, 10,000 for MNIST.
    request = evaluation_request(model, cfg.generate, cfg.evaluate, name, name, "0")
    reports = []
    priors = [build_prior(model.cfg), model.prior] if model.prior.fitted else [model.prior]
    for i, prior in enumerate(priors):
        model.prior = prior
        out = sample_model(model, request, scratch / f"{name}-{i}")
        reports.append(evaluate_samples(train_data, held, read_samples(out), cfg.evaluate, cache_dir=scratch / "cache"))
    return [r.synthetic for r in reports], reports[0].real, minutes


def unseen_training_dcr(raw: str) -> float:
    """dcr_train_share of training images outside the DCR reference draw: what a perfect model of
    the training distribution scores. On MNIST it differs from the real column (held-out images),
    because the official test split was written by other people."""
    train_data, held = load_source(DataConfig(kind="mnist", path=raw))
    cfg = EvaluateConfig()
    reference, held_reference = dcr_reference(train_data, held, cfg)
    seen = {row.tobytes() for row in reference.images.reshape(len(reference), -1)}
    unseen = [i for i, row in enumerate(train_data.images.reshape(len(train_data), -1)) if row.tobytes() not in seen]
    queries = train_data.subset(np.array(unseen[: cfg.max_samples]))
    figures, _, _ = privacy.dcr_metrics(*(features.as_inputs(d.images) for d in (queries, reference, held_reference)))
    return figures["dcr_train_share"]


def table(title: str, real: dict, columns: dict[str, tuple[dict, float]]) -> None:
    print(f"\n## {title}\n")
    print("| figure | real (floor) | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for key, meaning, better in FIGURES:
        if key not in real and not any(key in c for c, _ in columns.values()):
            continue
        cells = [f"{c[key]:.3f}" if key in c else "n/a" for c, _ in columns.values()]
        print(f"| {meaning} ({better}) | {real[key]:.3f} | " + " | ".join(cells) + " |" if key in real
              else f"| {meaning} ({better}) | n/a | " + " | ".join(cells) + " |")
    print("| training minutes | | " + " | ".join(f"{m:.1f}" for _, m in columns.values()) + " |")


def main() -> None:
    parser = argparse.ArgumentParser()
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--only", choices=["digits", "mnist"])
    source.add_argument("--data", help="another 28x28 grey-level 10-class dataset: an image folder or a Parquet file; "
                                       "runs the MNIST recipes on it alone")
    parser.add_argument("--kind", choices=["imagefolder", "parquet"],
                        help="data.kind for --data (default: imagefolder for a folder, parquet for a file)")
    parser.add_argument("--raw", default=str(ROOT.parent / "shared" / "data" / "mnist" / "raw"))
    parser.add_argument("--seed", type=int, default=None, help="train.seed for every recipe (default: each config's)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="train.device for every recipe")
    args = parser.parse_args()
    if args.kind and not args.data:
        parser.error("--kind goes with --data")
    if args.data and not Path(args.data).exists():
        parser.error(f"--data {args.data}: no such folder or file")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, training on {args.device}; samples per column as the pipeline's evaluate step draws"
          + (f"; train.seed={args.seed}" if args.seed is not None else ""))
    seed = [] if args.seed is None else [f"train.seed={args.seed}"]
    cases = [
        ("digits, unconditional (`vae-pipeline run`)", "digits", []),
        ("digits, conditional", "digits", ["model.conditional=true", "data.num_classes=10"]),
        ("MNIST, conditional", "mnist", []),
    ]
    kind = None
    if args.data:
        kind = args.kind or ("imagefolder" if Path(args.data).is_dir() else "parquet")
        # The MNIST recipes as they are; only the data source differs.
        cases = [(f"{kind} {args.data}, conditional (the MNIST recipes)", "mnist", [])]
    with tempfile.TemporaryDirectory() as scratch:
        for title, data, extra in cases:
            if args.only and data != args.only:
                continue
            raw = (args.data or args.raw) if data == "mnist" else None
            if kind is None and raw is not None and not Path(raw, "train-images-idx3-ubyte.gz").is_file():
                print(f"\n## {title}: skipped, no MNIST gz files in {raw}")
                continue
            columns = {}
            real = {}
            for label, recipes in (("before", BEFORE), ("after", AFTER)):
                path, overrides = recipes[data]
                figures, real, minutes = run(f"{data if kind is None else 'data'}-{label}", path, overrides + extra + seed, raw,
                                             Path(scratch), kind, args.device)
                if label == "after":
                    columns["preset, z from N(0, I)"] = (figures[0], minutes)
                columns[label if label == "before" else "preset (fitted prior)"] = (figures[-1], minutes)
            table(title, real, columns)
            if data == "mnist" and kind is None:
                print(f"\nDCR share of {EvaluateConfig().max_samples} training images outside the DCR reference "
                      f"(a perfect model of the training distribution): {unseen_training_dcr(raw):.3f}")


if __name__ == "__main__":
    main()
