"""Training speed on MNIST: the project's trainer against its matrix products and the textbook loop.

All train the classic 784-400-20 MLP VAE (ReLU, batch 128, Adam 1e-3, summed BCE on grey
levels) in this one process, one after the other. Printed: seconds per training epoch
(evaluation excluded), the held-out negative ELBO per example on the 10k test images after the
last epoch, and the floor: the same epoch's fp32 matrix products alone (`matmul_floor`). The
floor is timed again after every epoch of the trainer, so each epoch is compared with a floor
taken under the same machine load; the ratio printed is the median of those per-epoch ratios.

    python benchmarks/train_speed.py --threads 1             # 10 epochs, the issue's setting
    python benchmarks/train_speed.py --epochs 2 --skip-reference   # a quick check
    python benchmarks/train_speed.py --bf16 --skip-reference       # fp32 and bf16 autocast
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vae_model.config import DataConfig, ModelConfig, TrainConfig  # noqa: E402
from vae_model.data.sources import load_source  # noqa: E402
from vae_model.likelihood import evaluate_elbo, held_out  # noqa: E402
from vae_model.train import cpu_has_native_bf16, train, vae_config  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mnist" / "raw"


class TextbookVAE(nn.Module):
    """pytorch/examples vae/main.py, verbatim in substance."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        return mu + torch.randn_like(std) * std

    def decode(self, z):
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z))))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar


def textbook_loss(recon_x, x, mu, logvar):
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def reference(data_dir: Path, epochs: int, seed: int) -> tuple[float, float]:
    """The textbook loop: torchvision dataset, DataLoader with ToTensor, per-batch Python loop."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory(prefix="train-speed-") as root:
        # torchvision finds the gz files in root/MNIST/raw, checks their md5 and extracts them.
        raw = Path(root, "MNIST", "raw")
        raw.mkdir(parents=True)
        for name in os.listdir(data_dir):
            if name.endswith(".gz"):
                os.symlink((data_dir / name).resolve(), raw / name)
        train_set = datasets.MNIST(root, train=True, download=True, transform=transforms.ToTensor())
        test_set = datasets.MNIST(root, train=False, download=True, transform=transforms.ToTensor())
        train_loader = DataLoader(train_set, batch_size=128, shuffle=True)
        test_loader = DataLoader(test_set, batch_size=128, shuffle=False)
        model = TextbookVAE()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        seconds = 0.0
        for _ in range(epochs):
            model.train()
            started = time.perf_counter()
            train_loss = 0.0
            for data, _ in train_loader:
                optimizer.zero_grad()
                recon, mu, logvar = model(data)
                loss = textbook_loss(recon, data, mu, logvar)
                loss.backward()
                train_loss += loss.item()
                optimizer.step()
            seconds += time.perf_counter() - started
        model.eval()
        test_loss = 0.0
        with torch.no_grad():
            for data, _ in test_loader:
                recon, mu, logvar = model(data)
                test_loss += textbook_loss(recon, data, mu, logvar).item()
    return seconds / epochs, test_loss / len(test_set)


def project(data_dir: Path, epochs: int, seed: int, bf16: bool = False) -> tuple[float, float, float, float]:
    """s/epoch, held-out -ELBO, mean floor s/epoch, median per-epoch ratio to the floor."""
    train_data, test_data = load_source(DataConfig(kind="mnist", path=str(data_dir)))
    cfg = TrainConfig(epochs=epochs, batch_size=128, lr=1e-3, seed=seed, device="cpu", progress=False, bf16=bf16)
    floors: list[float] = []
    result = train(vae_config(ModelConfig(latent_dim=20, hidden_dim=400), train_data), cfg, train_data, test_data,
                   on_epoch=lambda epoch, metrics: floors.append(matmul_floor()))
    seconds = [m["epoch_seconds"] for m in result.history]
    test = held_out(test_data, torch.device("cpu"), "none", seed=seed)
    nll = -evaluate_elbo(result.model, test, 1024, seed=seed)["elbo"]
    ratio = statistics.median(s / f for s, f in zip(seconds, floors, strict=True))
    return sum(seconds) / epochs, nll, sum(floors) / epochs, ratio


def matmul_floor(batches: int = 469, batch: int = 128) -> float:
    """Seconds per epoch that the step's fp32 matrix products alone take, measured here now: for
    each of the four linear maps (784-400, 400-40, 20-400, 400-784) the forward product, the
    gradient with respect to its input and the one with respect to its weight, laid out as
    autograd lays them out (x W^T, g W, g^T x)."""
    operands = []
    for fan_in, fan_out in [(784, 400), (400, 40), (20, 400), (400, 784)]:
        x, w, g = torch.rand(batch, fan_in), torch.rand(fan_out, fan_in), torch.rand(batch, fan_out)
        operands += [(x, w.t()), (g, w), (g.t(), x)]
    for a, b in operands:
        a @ b
    started = time.perf_counter()
    for _ in range(batches):
        for a, b in operands:
            a @ b
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with the four MNIST gz files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-reference", action="store_true", help="leave out the textbook loop")
    parser.add_argument("--bf16", action="store_true", help="also train with train.bf16 (CPU autocast)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for all (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.epochs} epochs, data {args.data}")
    if args.bf16 and not cpu_has_native_bf16():
        print("this CPU has no native bf16: train.bf16 is ignored, the bf16 line repeats fp32")
    for name, bf16 in [("vae_model fp32", False), ("vae_model bf16", True)][: 2 if args.bf16 else 1]:
        proj_s, proj_nll, floor_s, ratio = project(args.data, args.epochs, args.seed, bf16)
        print(f"{name:15s}: {proj_s:6.3f} s/epoch   held-out -ELBO {proj_nll:7.2f} nats   "
              f"fp32 GEMM floor {floor_s:6.3f} s/epoch   ratio {ratio:.2f} (target <= 1.5)", flush=True)
    if not args.skip_reference:
        ref_s, ref_nll = reference(args.data, args.epochs, args.seed)
        print(f"textbook loop  : {ref_s:6.3f} s/epoch   held-out -ELBO {ref_nll:7.2f} nats (target for vae_model <= 105.5)")
    print(f"command: python {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
