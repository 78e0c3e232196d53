"""File formats of generated samples: Parquet shards and ImageFolder-style PNGs.

Parquet schema (`schema`, one row per sample): `sample_id` int64 (0..N-1 across all shards),
`label` int64 (null for an unconditional model), `label_name` dictionary-encoded string (the
label's class name; null where the model's classes have no names), `pixels` fixed_size_binary(C*H*W) uint8 in C, H,
W order, `height` int32, `width` int32, `channels` int32, `model_name` string, `model_version`
string, `seed` int64. One row group per decoded block. The file metadata repeats the model URI,
name and version, the seed, the first sample id and the tool version.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont

from vae_model.atomic import AtomicFolder, atomic_path

if TYPE_CHECKING:
    from vae_model.sampling import Request

# zlib's default level: level 1 measured no faster here and made files 75% larger. The bytes are
# deterministic at any level for a given OpenCV build (it ships its own libpng and zlib).
PNG_COMPRESS_LEVEL = 6


# Dictionary-encoded: each shard stores the class names once, and pandas reads them as a categorical.
LABEL_NAME = pa.dictionary(pa.int32(), pa.string())


def schema(row_bytes: int) -> pa.Schema:
    return pa.schema([
        ("sample_id", pa.int64()),
        ("label", pa.int64()),
        ("label_name", LABEL_NAME),
        ("pixels", pa.binary(row_bytes)),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("channels", pa.int32()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("seed", pa.int64()),
    ])


def label_names(labels: np.ndarray | None, class_names: tuple[str, ...], n: int) -> pa.Array:
    """Each label's class name, or n nulls where there are no labels or the classes have no names."""
    if labels is None or not class_names:
        return pa.nulls(n, LABEL_NAME)
    return pa.DictionaryArray.from_arrays(pa.array(labels, pa.int32()), pa.array(class_names, pa.string()))


def samples_table(images: np.ndarray, labels: np.ndarray | None, ids: np.ndarray, request: Request,
                  class_names: tuple[str, ...] = ()) -> pa.Table:
    n, c, h, w = images.shape
    flat = pa.py_buffer(np.ascontiguousarray(images).reshape(-1))
    columns = [
        pa.array(ids, pa.int64()),
        pa.array(labels, pa.int64()) if labels is not None else pa.nulls(n, pa.int64()),
        label_names(labels, class_names, n),
        pa.FixedSizeBinaryArray.from_buffers(pa.binary(c * h * w), n, [None, flat]),
        pa.repeat(pa.scalar(h, pa.int32()), n),
        pa.repeat(pa.scalar(w, pa.int32()), n),
        pa.repeat(pa.scalar(c, pa.int32()), n),
        pa.repeat(pa.scalar(request.model_name), n),
        pa.repeat(pa.scalar(request.model_version), n),
        pa.repeat(pa.scalar(request.seed, pa.int64()), n),
    ]
    return pa.Table.from_arrays(columns, schema=schema(c * h * w))


@contextlib.contextmanager
def parquet_shard(path: Path, row_bytes: int, request: Request, first_id: int,
                  class_names: tuple[str, ...] = ()) -> Iterator[Callable[..., None]]:
    """Yield `write(images, labels, ids)`, which appends one row group; the file appears whole on exit.
    `class_names`: the model's, which fill the `label_name` column."""
    meta = {
        "model_uri": request.model_uri, "model_name": request.model_name,
        "model_version": request.model_version, "seed": str(request.seed),
        "first_sample_id": str(first_id), "tool_version": request.tool_version,
    }
    columns = schema(row_bytes).with_metadata(meta)
    small = [name for name in columns.names if name != "pixels"]
    # Pixel rows are all distinct: dictionary-encoding them and keeping 784-byte min/max
    # statistics per page is pure cost, so both are limited to the small columns.
    with atomic_path(path) as tmp, pq.ParquetWriter(
        tmp, columns, compression="snappy", use_dictionary=small, write_statistics=small
    ) as writer:
        yield lambda images, labels, ids: writer.write_table(samples_table(images, labels, ids, request, class_names))


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (C, H, W) -> PNG bytes, grey or RGB. OpenCV encodes the same pixels as Pillow's
    per-image path 1.5x faster (benchmarks/png_encoders.py); its output is deterministic for a
    given version."""
    import cv2  # here, so that a request without PNGs does not load it (~20 MB)

    array = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)[..., ::-1]  # OpenCV takes BGR
    ok, data = cv2.imencode(".png", np.ascontiguousarray(array), [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESS_LEVEL])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {image.shape} {image.dtype} image as PNG")
    return data.tobytes()


def write_pngs(out: Path, images: np.ndarray, folders: list[str], ids: np.ndarray) -> list[dict[str, Any]]:
    """Write out/images/<folder>/<sample_id>.png, each atomically; return manifest entries."""
    entries = []
    with contextlib.ExitStack() as stack:
        writers = {}
        for folder in sorted(set(folders)):
            (out / "images" / folder).mkdir(parents=True, exist_ok=True)
            writers[folder] = stack.enter_context(AtomicFolder(out / "images" / folder))
        for image, folder, sample_id in zip(images, folders, ids.tolist(), strict=True):
            data = encode_png(image)
            name = f"{sample_id:09d}.png"
            writers[folder].write(name, data)
            entries.append({"path": f"images/{folder}/{name}", "rows": 1, "sha256": hashlib.sha256(data).hexdigest()})
    return entries


def grid(images: np.ndarray, nrow: int = 8, padding: int = 2, pad_value: int = 128) -> np.ndarray:
    """uint8 (n, C, H, W) -> one RGB (3, H', W') grid laid out like torchvision's `make_grid`.
    Done in numpy because importing torchvision costs a generation process ~160 MB of RSS."""
    n, c, h, w = images.shape
    if c == 1:
        images = np.repeat(images, 3, axis=1)
    cols = min(nrow, n)
    rows = -(-n // cols)
    canvas = np.full((images.shape[1], rows * (h + padding) + padding, cols * (w + padding) + padding), pad_value, np.uint8)
    for i, image in enumerate(images):
        top, left = padding + (i // cols) * (h + padding), padding + (i % cols) * (w + padding)
        canvas[:, top : top + h, left : left + w] = image
    return canvas


# Preview cells are upscaled (nearest neighbour) to at least this many pixels a side, so that
# 8x8 digits can be looked at.
PREVIEW_CELL = 56
PREVIEW_COLUMNS = 8


def preview(images: np.ndarray, labels: np.ndarray | None, class_names: tuple[str, ...] = ()) -> tuple[np.ndarray, int]:
    """uint8 (3, H', W') grid of samples to look at: 8 rows of 8 for an unconditional model; for
    a conditional one, a row per label (the first 8 samples of each, at most 10 labels), each
    row headed by its label's name (`class_names`, else its number). Returns the grid and how
    many samples it shows."""
    if labels is None:
        chosen, heads = images[: PREVIEW_COLUMNS * 8], None
    else:
        classes = sorted(set(labels.tolist()))[:10]
        rows = [np.flatnonzero(labels == c)[:PREVIEW_COLUMNS] for c in classes]
        width = max(len(r) for r in rows)
        blank = np.zeros_like(images[:1])
        chosen = np.concatenate([np.concatenate([images[r]] + [blank] * (width - len(r))) for r in rows])
        heads = [class_names[c] if c < len(class_names) else str(c) for c in classes]
    scale = -(-PREVIEW_CELL // max(images.shape[2:]))
    big = chosen.repeat(scale, axis=2).repeat(scale, axis=3)
    canvas = grid(big, PREVIEW_COLUMNS if heads is None else len(chosen) // len(heads))
    if heads is None:
        return canvas, len(chosen)
    cell = big.shape[2] + 2
    font = ImageFont.load_default(size=16)
    margin = max(28, 12 + int(max(font.getlength(head) for head in heads)))  # 28: the width digits got
    picture = Image.new("RGB", (canvas.shape[2] + margin, canvas.shape[1]), (128, 128, 128))
    picture.paste(Image.fromarray(canvas.transpose(1, 2, 0)), (margin, 0))
    draw = ImageDraw.Draw(picture)
    for i, head in enumerate(heads):
        draw.text((margin // 2, 2 + i * cell + cell // 2), head, fill=(255, 255, 255), font=font, anchor="mm")
    return np.asarray(picture).transpose(2, 0, 1), sum(len(r) for r in rows)


def save_preview(path: Path, images: np.ndarray, labels: np.ndarray | None = None,
                 class_names: tuple[str, ...] = ()) -> int:
    """`preview` of uint8 images (n, C, H, W) and their labels, as a PNG; returns the samples shown."""
    picture, shown = preview(images, labels, class_names)
    with atomic_path(path) as tmp:
        tmp.write_bytes(encode_png(picture))
    return shown
