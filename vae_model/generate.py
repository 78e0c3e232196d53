"""Sampling from the prior into shards: deterministic, streamed to disk, resumable.

A request is split into fixed-size shards. Shard i draws its latent codes (and labels) from a
generator seeded by (seed, i) alone, so its bytes depend only on the model, the seed and i, and
shards can be made in any order, in any process. Each finished shard leaves a record under
`.shards/`; a rerun of the same request skips recorded shards, and `manifest.json` is written
last, when every shard is recorded.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vae_model import __version__
from vae_model.atomic import sha256_file, write_json
from vae_model.errors import UserError
from vae_model.sample_files import save_grid, write_parquet_shard, write_png_shard

Decoder = Callable[[torch.Tensor], torch.Tensor]
UNLABELLED = "unlabelled"


@dataclass(frozen=True)
class SamplerSpec:
    """What a registered sampler takes and gives: z (plus one-hot labels) in, pixels out."""

    latent_dim: int
    channels: int
    height: int
    width: int
    num_classes: int = 0


@dataclass(frozen=True)
class Request:
    num_samples: int
    seed: int
    model_uri: str
    model_name: str
    model_version: str
    formats: tuple[str, ...] = ("parquet", "png")
    shard_size: int = 65536
    labels: tuple[float, ...] | None = None
    labels_are_proportions: bool = False
    tool_version: str = field(default=__version__)

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise UserError(f"--num-samples: expected a positive number of samples, got {self.num_samples}")
        if self.shard_size < 1:
            raise UserError(f"generate.shard_size: expected a positive number, got {self.shard_size}")
        unknown = set(self.formats) - {"parquet", "png"}
        if unknown or not self.formats:
            raise UserError(f"--format: expected parquet and/or png, got {','.join(self.formats) or 'nothing'}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_labels(text: str | None, num_classes: int) -> tuple[tuple[float, ...] | None, bool]:
    """`3` or `0,1,2` (cycled) or `0:0.5,1:0.5` (proportions over classes)."""
    if text is None or text == "":
        if num_classes:
            return tuple(range(num_classes)), False
        return None, False
    if not num_classes:
        raise UserError("--labels: this model is not conditional, it takes no labels")
    try:
        if ":" in text:
            weights = [0.0] * num_classes
            for item in text.split(","):
                label, weight = item.split(":")
                weights[_label(label, num_classes)] = float(weight)
            if any(w < 0 for w in weights) or sum(weights) <= 0:
                raise ValueError
            return tuple(w / sum(weights) for w in weights), True
        return tuple(float(_label(item, num_classes)) for item in text.split(",")), False
    except ValueError:
        raise UserError(
            f"--labels {text!r}: expected a label, a list such as 0,1,2 or proportions such as 0:0.7,1:0.3"
        ) from None


def _label(text: str, num_classes: int) -> int:
    value = int(text)
    if not 0 <= value < num_classes:
        raise UserError(f"--labels: label {value} is outside 0..{num_classes - 1}")
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


@torch.no_grad()
def sample_shard(decode: Decoder, spec: SamplerSpec, request: Request, shard: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The uint8 images (n, C, H, W) and labels of one shard."""
    _, n = shard_rows(request, shard)
    generator = shard_generator(request.seed, shard)
    z = torch.randn(n, spec.latent_dim, generator=generator)
    labels = None
    if spec.num_classes:
        labels = _draw_labels(request, shard, n, generator)
        z = torch.cat([z, torch.nn.functional.one_hot(torch.from_numpy(labels), spec.num_classes).float()], 1)
    pixels = decode(z).float().mul_(255).round_().clamp_(0, 255).to(torch.uint8)
    return pixels.reshape(n, spec.channels, spec.height, spec.width).numpy(), labels


def _draw_labels(request: Request, shard: int, n: int, generator: torch.Generator) -> np.ndarray:
    assert request.labels is not None
    if request.labels_are_proportions:
        weights = torch.tensor(request.labels, dtype=torch.float64)
        return torch.multinomial(weights, n, replacement=True, generator=generator).numpy()
    start, _ = shard_rows(request, shard)
    cycle = np.asarray(request.labels, dtype=np.int64)
    return cycle[(start + np.arange(n)) % len(cycle)]


def prepare_output(out_dir: str | Path, request: Request, overwrite: bool) -> Path:
    """Create or reuse `out_dir`: the same request resumes, another one is refused unless overwrite."""
    out = Path(out_dir)
    record = out / ".shards" / "request.json"
    if out.exists() and any(out.iterdir()):
        same = record.exists() and json.loads(record.read_text()) == json.loads(json.dumps(request.to_dict()))
        if not same and not overwrite:
            raise UserError(f"{out}: not empty and holds another request's output; pass --overwrite to replace it")
        if not same:
            shutil.rmtree(out)
    try:
        (out / ".shards").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot write the output directory ({exc.strerror})") from None
    if not record.exists():
        write_json(record, request.to_dict())
    return out


def make_shard(decode: Decoder, spec: SamplerSpec, request: Request, shard: int, out: Path) -> dict[str, Any]:
    """Write one shard's files unless its record exists; return the record."""
    record_path = out / ".shards" / f"part-{shard:05d}.json"
    if record_path.exists():
        return json.loads(record_path.read_text())
    images, labels = sample_shard(decode, spec, request, shard)
    start, n = shard_rows(request, shard)
    ids = np.arange(start, start + n, dtype=np.int64)
    files: list[dict[str, Any]] = []
    if "parquet" in request.formats:
        path = write_parquet_shard(out / f"part-{shard:05d}.parquet", images, labels, ids, request)
        files.append({"path": path.relative_to(out).as_posix(), "rows": n, "sha256": sha256_file(path)})
    if "png" in request.formats:
        folders = [UNLABELLED] * n if labels is None else [str(v) for v in labels]
        for path, digest in write_png_shard(out / "images", images, folders, ids):
            files.append({"path": path.relative_to(out).as_posix(), "rows": 1, "sha256": digest})
    if shard == 0:
        preview = save_grid(out / "preview.png", images[:64])
        files.append({"path": preview.name, "rows": min(n, 64), "sha256": sha256_file(preview)})
    record = {"shard": shard, "rows": n, "files": files}
    write_json(record_path, record)
    return record


def write_manifest(out: Path, request: Request, records: list[dict[str, Any]]) -> Path:
    """Written last: its presence says the request is complete."""
    missing = sorted(set(range(num_shards(request))) - {r["shard"] for r in records})
    if missing:
        raise RuntimeError(f"shards {missing[:5]} are not finished")
    files = [f for r in sorted(records, key=lambda r: r["shard"]) for f in r["files"]]
    manifest = {
        **request.to_dict(),
        "rows": request.num_samples,
        "shards": len(records),
        "files": files,
    }
    write_json(out / "manifest.json", manifest)
    return out / "manifest.json"
