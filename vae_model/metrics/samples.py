"""Reading a generated sample set (OUT/part-*.parquet, see vae_model.sample_files) back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vae_model.data.dataset import ImageData
from vae_model.errors import UserError


def _shards(folder: Path) -> list[Path]:
    shards = sorted(folder.glob("part-*.parquet"))
    if not folder.is_dir() or not shards:
        raise UserError(f"{folder}: no part-*.parquet sample shards found (expected a `generate` output folder)")
    return shards


def read_samples(folder: str | Path) -> ImageData:
    """All shards' images (uint8 N, C, H, W) and requested labels (None when unlabelled)."""
    folder = Path(folder)
    try:
        table = pq.read_table(_shards(folder), columns=["pixels", "label", "channels", "height", "width"])
    except (OSError, pa.ArrowInvalid, KeyError) as exc:
        raise UserError(f"{folder}: not readable sample shards ({exc})") from None
    if table.num_rows == 0:
        raise UserError(f"{folder}: the sample shards hold no rows")
    shape = tuple(int(table.column(c)[0].as_py()) for c in ("channels", "height", "width"))
    pixels = table.column("pixels").combine_chunks()
    width = int(np.prod(shape))
    if not pa.types.is_fixed_size_binary(pixels.type) or pixels.type.byte_width != width:
        raise UserError(f"{folder}: column 'pixels' is {pixels.type}, expected fixed_size_binary({width})")
    flat = np.frombuffer(pixels.buffers()[1], np.uint8, count=len(pixels) * width, offset=pixels.offset * width)
    label = table.column("label")
    labels = None if label.null_count == len(label) else label.to_numpy().astype(np.int64)
    return ImageData(flat.reshape(-1, *shape).copy(), labels, str(folder)).check()


def samples_model_uri(folder: str | Path) -> str | None:
    """The model URI the samples record (manifest, else the first shard's metadata)."""
    folder = Path(folder)
    manifest = folder / "manifest.json"
    if manifest.exists():
        return json.loads(manifest.read_text()).get("model_uri")
    meta = pq.read_schema(_shards(folder)[0]).metadata or {}
    value = meta.get(b"model_uri")
    return value.decode() if value else None
