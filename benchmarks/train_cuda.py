"""The trainer's CUDA path on MNIST: seconds per epoch of the eager step beside the graphed one
(`train.compile`: forward and backward replayed as CUDA graphs, torch.compile mode
"reduce-overhead"), in fp32 and with bf16 autocast, for the classic 784-400-20 VAE and the
likelihood preset's model. The dataset is on the device in every mode.

    python benchmarks/train_cuda.py                  # 6 epochs per mode
    python benchmarks/train_cuda.py --data DIR --epochs 3

The first epoch of each mode holds CUDA start-up and compilation; seconds per epoch are the
mean of the later epochs, and the first epoch is printed apart.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vae_model.config import DataConfig, ModelConfig, TrainConfig  # noqa: E402
from vae_model.data.sources import load_source  # noqa: E402
from vae_model.train import train, vae_config  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mnist" / "raw"
MODELS = {
    "784-400-20 relu": (ModelConfig(latent_dim=20, hidden_dim=400), "none"),
    "784-500-500-50 elu, dynamic": (
        ModelConfig(latent_dim=50, hidden_dim=500, hidden_layers=2, activation="elu"), "dynamic"),
}
MODES = {"fp32 eager": dict(bf16=False), "fp32 graphed": dict(bf16=False, compile=True),
         "bf16 eager": dict(bf16=True), "bf16 graphed": dict(bf16=True, compile=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with the four MNIST gz files")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("error: this benchmark needs a CUDA device, and torch sees none")
    train_data, test_data = load_source(DataConfig(kind="mnist", path=str(args.data)))
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, {args.epochs} epochs per mode")
    for model_name, (model_cfg, binarize) in MODELS.items():
        for mode, flags in MODES.items():
            cfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=1e-3, seed=0, device="cuda", progress=False, **flags)
            started = time.perf_counter()
            try:
                result = train(vae_config(model_cfg, train_data), cfg, train_data, test_data, binarize)
            except Exception as exc:  # one failing mode must not hide the others' figures
                print(f"{model_name:30s} {mode:13s}: failed: {type(exc).__name__}: {str(exc).splitlines()[0]}", flush=True)
                continue
            wall = time.perf_counter() - started
            seconds = [m["epoch_seconds"] for m in result.history]
            later = sum(seconds[1:]) / max(1, len(seconds) - 1)
            print(f"{model_name:30s} {mode:13s}: {later:6.3f} s/epoch (first {seconds[0]:6.2f} s)  "
                  f"held-out -ELBO {-result.history[-1]['val_elbo']:7.2f}  wall {wall:5.1f} s", flush=True)
    print(f"command: python {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
