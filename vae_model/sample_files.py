"""File formats of generated samples: Parquet shards and ImageFolder-style PNGs.

Parquet schema (one row per sample): `sample_id` int64 (0..N-1 across all shards), `label`
int64 (null for an unconditional model), `pixels` fixed_size_binary(C*H*W) uint8 in C, H, W
order, `height` int32, `width` int32, `channels` int32, `model_name` string, `model_version`
string, `seed` int64. The file metadata repeats the model URI, version, seed and shard.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from vae_model.atomic import atomic_path
from vae_model.images import grid

if TYPE_CHECKING:
    from vae_model.generate import Request

SCHEMA_FIELDS = [
    ("sample_id", pa.int64()),
    ("label", pa.int64()),
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("channels", pa.int32()),
    ("model_name", pa.string()),
    ("model_version", pa.string()),
    ("seed", pa.int64()),
]


def samples_table(images: np.ndarray, labels: np.ndarray | None, ids: np.ndarray, request: Request) -> pa.Table:
    n, c, h, w = images.shape
    flat = pa.py_buffer(np.ascontiguousarray(images).reshape(-1))
    pixels = pa.FixedSizeBinaryArray.from_buffers(pa.binary(c * h * w), n, [None, flat])
    columns = {
        "sample_id": pa.array(ids, pa.int64()),
        "label": pa.array(labels, pa.int64()) if labels is not None else pa.nulls(n, pa.int64()),
        "pixels": pixels,
        "height": pa.repeat(pa.scalar(h, pa.int32()), n),
        "width": pa.repeat(pa.scalar(w, pa.int32()), n),
        "channels": pa.repeat(pa.scalar(c, pa.int32()), n),
        "model_name": pa.repeat(pa.scalar(request.model_name), n).dictionary_encode(),
        "model_version": pa.repeat(pa.scalar(request.model_version), n).dictionary_encode(),
        "seed": pa.repeat(pa.scalar(request.seed, pa.int64()), n),
    }
    return pa.table(columns)


def write_parquet_shard(path: Path, images, labels, ids, request: Request) -> Path:
    table = samples_table(images, labels, ids, request)
    meta = {
        "model_uri": request.model_uri, "model_name": request.model_name,
        "model_version": request.model_version, "seed": str(request.seed),
        "first_sample_id": str(int(ids[0])), "tool_version": request.tool_version,
    }
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="snappy", row_group_size=16384)
    return path


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (C, H, W) -> PNG bytes. Pillow's output is deterministic for a given version."""
    array = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def write_png_shard(root: Path, images: np.ndarray, folders: list[str], ids: np.ndarray) -> Iterator[tuple[Path, str]]:
    """Write images/<label>/<sample_id>.png, each atomically; yield (path, sha256)."""
    for folder in sorted(set(folders)):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for image, folder, sample_id in zip(images, folders, ids, strict=True):
        data = encode_png(image)
        path = root / folder / f"{int(sample_id):09d}.png"
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        yield path, hashlib.sha256(data).hexdigest()


def save_grid(path: Path, images: np.ndarray, nrow: int = 8) -> Path:
    """A PNG grid of uint8 images (n, C, H, W), as a preview."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(encode_png(grid(images, nrow)))
    return path
