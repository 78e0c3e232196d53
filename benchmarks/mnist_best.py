"""Train the likelihood preset (configs/mnist-best.yaml) with vae_model alone and report the
importance-weighted NLL on the MNIST test set, the wall times and the command.

    python benchmarks/mnist_best.py                       # the preset, k = 5000
    python benchmarks/mnist_best.py --epochs 2 --k 100    # a quick check of the plumbing

The checkpoint (resumed when the preset says train.resume, so a killed run continues where it
stopped) is keyed by the data and every setting that shapes the weights, as the train step's is:
a quick check or an older preset never resumes into this run. No MLflow or Prefect is involved.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.config import load_config  # noqa: E402
from vae_model.checkpoint import checkpoint_path  # noqa: E402
from vae_model.data.snapshot import content_hash  # noqa: E402
from vae_model.data.sources import load_source  # noqa: E402
from vae_model.likelihood import evaluate_elbo, evaluate_iw, held_out  # noqa: E402
from vae_model.train import resolve_device, train, vae_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "mnist-best.yaml")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--k", type=int, default=5000, help="importance samples per test image")
    parser.add_argument("--iw-batch", type=int, default=100, help="test images per IW batch")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: keyed under train.checkpoint_dir")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args()

    overrides = list(args.set) + ([f"train.epochs={args.epochs}"] if args.epochs else [])
    # Relative data paths in the preset are relative to the repository root.
    cfg = load_config(args.config, overrides)
    if cfg.data.path and not Path(cfg.data.path).is_absolute():
        cfg.data.path = str((ROOT / cfg.data.path).resolve())
    train_data, test_data = load_source(cfg.data)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {cfg.model}; {cfg.train}", flush=True)

    def report(epoch: int, m: dict[str, float]) -> None:
        if epoch == 1 or epoch % 10 == 0 or epoch == cfg.train.epochs:
            print(f"epoch {epoch:4d}  val ELBO {m['val_elbo']:8.2f}  {m['epoch_seconds']:.2f} s", flush=True)

    # The snapshot's content hash: the key the train step gives the same data.
    data_sha256 = content_hash(train_data, test_data)
    checkpoint = args.checkpoint or checkpoint_path(data_sha256, cfg.data.binarize, cfg.model, cfg.train)
    print(f"checkpoint: {checkpoint}", flush=True)
    started = time.perf_counter()
    result = train(vae_config(cfg.model, train_data), cfg.train, train_data, test_data, cfg.data.binarize,
                   checkpoint, on_epoch=report)
    train_wall = time.perf_counter() - started
    epoch_seconds = sum(m["epoch_seconds"] for m in result.history)

    device = resolve_device(cfg.train.device)
    test = held_out(test_data, device, cfg.data.binarize, seed=cfg.train.seed + 1)
    started = time.perf_counter()
    elbo = evaluate_elbo(result.model, test, 1024, seed=cfg.train.seed)["elbo"]
    iw = evaluate_iw(result.model, test, args.k, seed=cfg.train.seed, batch_size=args.iw_batch)
    eval_wall = time.perf_counter() - started

    print(f"test -ELBO            : {-elbo:.2f} nats")
    print(f"test IW-NLL (k={args.k}) : {-iw:.2f} nats   (target <= 84.5)")
    print(f"training              : {len(result.history)} epochs, {epoch_seconds / 60:.1f} min in epochs, "
          f"{train_wall / 60:.1f} min wall this process (resumed from epoch {result.resumed_from_epoch or 1})")
    print(f"evaluation            : {eval_wall / 60:.1f} min")
    print(f"command: python {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
