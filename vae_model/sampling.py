"""Drawing samples from a sampler: pure, deterministic, no files.

A request is split into fixed-size shards and each shard into blocks of `DECODE_BLOCK` rows.
Shard i draws its latent codes (and labels), block after block, from a generator seeded by
(seed, i) alone, and is decoded in batches of `DECODE_BATCH` rows by single-threaded matmuls,
so a shard's bytes depend only on the model, the seed and i: shards can be made in any order,
in any process, on any number of cores (of one CPU architecture: BLAS kernels differ between
instruction sets). `vae_model.generate` writes these draws to files; the served model returns them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from vae_model import __version__
from vae_model.config import SampleRequest
from vae_model.errors import UserError
from vae_model.model import VAEConfig, sampler_input
from vae_model.torch_state import torch_state

Decoder = Callable[[torch.Tensor], torch.Tensor]

# Rows per decoder call. Part of what defines the output: the batch shape picks the BLAS kernel,
# so another size may change the last bit of some pixels. Small enough that a call's float
# activations (a few MB for 784 pixels) stay in cache-sized, reused allocations.
DECODE_BATCH = 512
# Rows decoded at a time by a shard, and per Parquet row group.
DECODE_BLOCK = 4096


@dataclass(frozen=True)
class SamplerSpec:
    """What a registered sampler takes and gives: z (plus one-hot labels) in, pixels out."""

    latent_dim: int
    channels: int
    height: int
    width: int
    num_classes: int = 0
    class_names: tuple[str, ...] = ()  # empty: the labels are their own names

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(self.class_names))  # a list, once through JSON

    @classmethod
    def of(cls, cfg: VAEConfig) -> SamplerSpec:
        return cls(cfg.latent_dim, cfg.channels, cfg.height, cfg.width, cfg.num_classes, cfg.class_names)

    def to_dict(self) -> dict[str, Any]:
        """As JSON gives it back (what a task passes on, and the MLmodel metadata records)."""
        return {**asdict(self), "class_names": list(self.class_names)}


@dataclass(frozen=True)
class Request:
    """A `SampleRequest` resolved for one model: its labels parsed, the model that draws it named."""

    num_samples: int
    seed: int
    model_uri: str
    model_name: str
    model_version: str
    formats: tuple[str, ...]
    shard_size: int
    labels: tuple[float, ...] | None
    labels_are_proportions: bool
    temperature: float
    tool_version: str = field(default=__version__)

    @classmethod
    def of(cls, asked: SampleRequest, num_classes: int, model_uri: str = "", model_name: str = "",
           model_version: str = "", class_names: tuple[str, ...] = ()) -> Request:
        """`asked` of a model with `num_classes` classes (0: unconditional), labels given by number
        or by `class_names`; the model's names only label files, they play no part in the draws."""
        labels, proportions = parse_labels(asked.labels, num_classes, class_names=class_names)
        return cls(asked.num_samples, asked.seed, model_uri, model_name, model_version, tuple(asked.formats),
                   asked.shard_size, labels, proportions, asked.temperature)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Request:
        labels = data.get("labels")
        return cls(**{**data, "formats": tuple(data["formats"]), "labels": None if labels is None else tuple(labels)})


def parse_labels(text: str | None, num_classes: int, key: str = "labels",
                 class_names: tuple[str, ...] = ()) -> tuple[tuple[float, ...] | None, bool]:
    """`3` or `0,1,2` (cycled) or `0:0.5,1:0.5` (proportions over classes), each label a number or
    one of `class_names`; errors name `key`."""
    if text is None or text == "":
        if num_classes:
            return tuple(range(num_classes)), False
        return None, False
    if not num_classes:
        raise UserError(f"{key}: this model is not conditional, it takes no labels")
    try:
        if ":" in text:
            weights = [0.0] * num_classes
            for item in text.split(","):
                label, weight = item.split(":")
                weights[_label(label, num_classes, key, class_names)] = float(weight)
            if any(w < 0 for w in weights) or sum(weights) <= 0:
                raise ValueError
            return tuple(w / sum(weights) for w in weights), True
        return tuple(float(_label(item, num_classes, key, class_names)) for item in text.split(",")), False
    except ValueError:
        raise UserError(
            f"{key} {text!r}: expected a label, a list such as 0,1,2 or proportions such as 0:0.7,1:0.3"
            + (f" (labels by number or by name: {', '.join(class_names)})" if class_names else "")
        ) from None


def _label(text: str, num_classes: int, key: str, class_names: tuple[str, ...] = ()) -> int:
    # A name first: a class folder may well be called "3".
    if text.strip() in class_names:
        return class_names.index(text.strip())
    value = int(text)
    if not 0 <= value < num_classes:
        raise UserError(f"{key}: label {value} is outside 0..{num_classes - 1}")
    return value


def shard_generator(seed: int, shard: int) -> torch.Generator:
    # SeedSequence mixes (seed, shard) so nearby seeds and shards give unrelated streams.
    state = np.random.SeedSequence([seed, shard]).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def shard_rows(request: Request, shard: int) -> tuple[int, int]:
    start = shard * request.shard_size
    return start, min(request.shard_size, request.num_samples - start)


def num_shards(request: Request) -> int:
    return -(-request.num_samples // request.shard_size)


def shard_blocks(spec: SamplerSpec, request: Request, shard: int) -> Iterator[tuple[np.ndarray, torch.Tensor, np.ndarray | None]]:
    """(sample ids, sampler input, labels) of each block of one shard, drawn in order. The input
    is what `vae_model.model.Sampler` takes: noise times the temperature, the uniform number
    that picks the prior's component, and the one-hot label."""
    start, n = shard_rows(request, shard)
    generator = shard_generator(request.seed, shard)
    for offset in range(0, n, DECODE_BLOCK):
        rows = min(DECODE_BLOCK, n - offset)
        ids = np.arange(start + offset, start + offset + rows, dtype=np.int64)
        noise = torch.randn(rows, spec.latent_dim, generator=generator).mul_(request.temperature)
        labels = _draw_labels(request, ids, generator) if spec.num_classes else None
        uniform = torch.rand(rows, 1, generator=generator)
        yield ids, sampler_input(noise, uniform, labels, spec.num_classes), labels


def _draw_labels(request: Request, ids: np.ndarray, generator: torch.Generator) -> np.ndarray:
    assert request.labels is not None
    if request.labels_are_proportions:
        weights = torch.tensor(request.labels, dtype=torch.float64)
        return torch.multinomial(weights, len(ids), replacement=True, generator=generator).numpy()
    cycle = np.asarray(request.labels, dtype=np.int64)
    return cycle[ids % len(cycle)]


def decode_block(decode: Decoder, spec: SamplerSpec, z: torch.Tensor) -> np.ndarray:
    """uint8 images (n, C, H, W) of one block. Call it under `one_torch_thread`."""
    images = np.empty((len(z), spec.channels, spec.height, spec.width), np.uint8)
    flat = torch.from_numpy(images).view(len(z), -1)
    with torch.inference_mode():
        for start in range(0, len(z), DECODE_BATCH):
            pixels = decode(z[start : start + DECODE_BATCH].clone()).float()
            # Pixel means are in [0, 1], so 255·p rounds to 0..255 and the cast to uint8 is exact.
            flat[start : start + DECODE_BATCH].copy_(pixels.mul_(255).round_())
    return images


def one_torch_thread() -> contextlib.AbstractContextManager[None]:
    """torch on the calling thread alone, so that the bytes do not depend on the core count.
    The setting is the thread's own: shards made side by side, each on its thread, use one core each.
    Threads inherit their creator's denormal mode (training turns flushing on): fix it here."""
    return torch_state(threads=1, flush_denormal=True)


def draw_shard(decode: Decoder, spec: SamplerSpec, request: Request, shard: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """(sample ids, uint8 images (n, C, H, W), labels) of each block of one shard, in order: what
    `generate` writes and the served model returns. Call it under `one_torch_thread`."""
    for ids, z, labels in shard_blocks(spec, request, shard):
        yield ids, decode_block(decode, spec, z), labels
