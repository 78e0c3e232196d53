"""The canonical Parquet snapshot of an ingested dataset, named by its content hash.

Schema: `split` (string: train or val), `label` (int64, null when unlabelled) and `pixels`
(fixed_size_binary of C*H*W uint8 values in C, H, W order); the file metadata holds `channels`,
`height`, `width`, `source`, `sha256` and, for named classes, `class_names` (a JSON list). The
hash covers the shape, the pixels, the labels and the split of every row, and the class names
where there are any, so it names the data, not the Parquet encoding.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vae_model.atomic import atomic_path
from vae_model.data.dataset import ImageData
from vae_model.errors import UserError


def content_hash(train: ImageData, val: ImageData) -> str:
    digest = hashlib.sha256(repr(train.shape).encode())
    for split in (train, val):
        digest.update(len(split).to_bytes(8, "little"))
        digest.update(np.ascontiguousarray(split.images).tobytes())
        labels = split.labels if split.labels is not None else np.full(len(split), -1, np.int64)
        digest.update(labels.astype("<i8").tobytes())
    if train.class_names:  # unnamed data keeps the hash it had before names were recorded
        digest.update(json.dumps(train.class_names).encode())
    return digest.hexdigest()


def write_snapshot(train: ImageData, val: ImageData, folder: str | Path) -> tuple[Path, str]:
    """Write the snapshot atomically unless an identical one exists; return its path and hash."""
    if train.shape != val.shape:
        raise UserError(f"{train.source}: train images are {train.shape} but held-out are {val.shape}")
    sha = content_hash(train, val)
    path = Path(folder) / f"{sha[:16]}.parquet"
    if path.exists():
        return path, sha
    c, h, w = train.shape
    width = c * h * w
    columns: dict[str, list[pa.Array]] = {"split": [], "label": [], "pixels": []}
    for name, split in (("train", train), ("val", val)):
        n = len(split)
        columns["split"].append(pa.array([name] * n, pa.string()))
        columns["label"].append(pa.array(split.labels, pa.int64()) if split.labels is not None else pa.nulls(n, pa.int64()))
        flat = pa.py_buffer(np.ascontiguousarray(split.images).reshape(-1))
        columns["pixels"].append(pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, flat]))
    table = pa.table({k: pa.concat_arrays(v) for k, v in columns.items()})
    meta = {"channels": c, "height": h, "width": w, "source": train.source, "sha256": sha}
    if train.class_names:
        meta["class_names"] = json.dumps(train.class_names)
    table = table.replace_schema_metadata({k: str(v) for k, v in meta.items()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path, sha


def read_snapshot(path: str | Path) -> tuple[ImageData, ImageData]:
    """Read a snapshot back into (train, held-out) ImageData."""
    table = pq.read_table(path)
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    shape = (int(meta["channels"]), int(meta["height"]), int(meta["width"]))
    split = table.column("split").to_numpy(zero_copy_only=False)
    pixels = table.column("pixels").combine_chunks()
    flat = np.frombuffer(pixels.buffers()[1], np.uint8, count=len(pixels) * int(np.prod(shape)),
                         offset=pixels.offset * int(np.prod(shape)))
    images = flat.reshape(-1, *shape)
    label_col = table.column("label")
    labels = None if label_col.null_count == len(label_col) else label_col.to_numpy().astype(np.int64)
    names = tuple(json.loads(meta.get("class_names", "[]")))
    out = []
    for name in ("train", "val"):
        mask = split == name
        out.append(ImageData(images[mask], None if labels is None else labels[mask], meta["source"], class_names=names))
    return out[0], out[1]
