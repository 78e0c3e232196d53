"""The small domain classifier whose penultimate layer gives the features the fidelity figures use.

It is trained on the real training split inside the pipeline (no Inception weights can be
fetched here), seeded, and cached by the data's hash so a rerun on the same data reuses it.
Unlabelled data has nothing to classify: an untrained, seeded network of the same shape then
gives random features, which still separate distributions but less sharply.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vae_model.torch_state import seeded, torch_state
from vae_model.train import make_optimizer
from vae_model.weights import WEIGHTS_FILE, read_weights, save_weights

FEATURE_DIM = 128


class DomainClassifier(nn.Module):
    def __init__(self, input_dim: int, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(input_dim, 256), nn.ReLU(), nn.Linear(256, FEATURE_DIM), nn.ReLU())
        self.head = nn.Linear(FEATURE_DIM, max(num_classes, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return features, self.head(features)


@dataclass(frozen=True)
class ClassifierSpec:
    input_dim: int
    num_classes: int
    steps: int
    seed: int
    batch_size: int = 128
    lr: float = 1e-3

    def key(self, data_key: str) -> str:
        blob = json.dumps({"data": data_key, **self.__dict__}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def as_inputs(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float (N, C*H*W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).flatten(1).float().div_(255)


def data_key(images: np.ndarray, labels: np.ndarray | None) -> str:
    digest = hashlib.sha256(repr(images.shape).encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    if labels is not None:
        digest.update(labels.astype("<i8").tobytes())
    return digest.hexdigest()


def train_classifier(spec: ClassifierSpec, images: np.ndarray, labels: np.ndarray | None) -> DomainClassifier:
    """Seeded Adam on minibatches drawn with replacement; a fixed step count bounds the cost."""
    with seeded(spec.seed):  # weight initialisation only
        model = DomainClassifier(spec.input_dim, spec.num_classes)
    if labels is None:
        return model.eval()
    x, y = as_inputs(images), torch.from_numpy(labels)
    generator = torch.Generator().manual_seed(spec.seed)
    optimizer = make_optimizer(model, spec.lr)  # fused: one kernel per step, and the steps are small
    # Adam's running averages fill with subnormal floats on images with many always-zero pixels,
    # which slows each step a hundredfold on CPU unless they are flushed to zero. Steps this small
    # do not split well across threads; on a busy machine two threads waiting for each other made
    # each step 20x slower than one.
    with torch_state(threads=1, flush_denormal=True):
        for _ in range(spec.steps):
            index = torch.randint(len(x), (spec.batch_size,), generator=generator)
            loss = nn.functional.cross_entropy(model(x.index_select(0, index))[1], y.index_select(0, index))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


def cached_classifier(spec: ClassifierSpec, images: np.ndarray, labels: np.ndarray | None,
                      key: str, cache_dir: str | Path | None) -> DomainClassifier:
    """Load the classifier for (data, spec) from `cache_dir`, or train and store it there."""
    # In the one weights layout (vae_model.weights); the name changed with it, so a cache written
    # before is not read as this layout.
    path = None if cache_dir is None else Path(cache_dir) / f"classifier-{spec.key(key)}.{WEIGHTS_FILE}"
    if path is not None and path.exists():
        model = DomainClassifier(spec.input_dim, spec.num_classes)
        model.load_state_dict(read_weights(path)["model"])
        return model.eval()
    model = train_classifier(spec, images, labels)
    if path is not None:
        save_weights(path, dict(spec.__dict__), model.state_dict())
    return model


@torch.no_grad()
def embed(model: DomainClassifier, images: np.ndarray, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features and predicted classes of uint8 images."""
    x = as_inputs(images)
    feats, preds = [], []
    for start in range(0, len(x), batch_size):
        f, logits = model(x[start : start + batch_size])
        feats.append(f)
        preds.append(logits.argmax(1))
    return torch.cat(feats), torch.cat(preds)
